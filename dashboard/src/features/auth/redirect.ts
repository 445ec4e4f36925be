/** Where to go after signing in: a path of this console only (never another origin). */
export function safeRedirect(target: unknown): string {
  return typeof target === 'string' && target.startsWith('/') && !target.startsWith('//') ? target : '/'
}

export function validateRedirect(search: Record<string, unknown>): { redirect?: string } {
  return typeof search.redirect === 'string' ? { redirect: safeRedirect(search.redirect) } : {}
}
