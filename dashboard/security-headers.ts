/**
 * The console's security headers: the one source for the Vite preview server (vite.config.ts) and for the
 * CloudFront response-headers policy generated for production.
 *
 * Scripts only from the console's own origin (no inline script, no eval); the browser talks only to the
 * console's origin and the API's; nothing may frame the console. Styles allow 'unsafe-inline' for one reason: Radix's
 * modal scroll lock (react-remove-scroll) injects a <style> element sized to the measured scrollbar, which no hash can
 * name; inline styles cannot run code.
 */
export function securityHeaders(apiUrl: string): Record<string, string> {
  const apiOrigin = new URL(apiUrl).origin
  const csp = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self'",
    `connect-src 'self' ${apiOrigin}`,
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
  ].join('; ')
  return {
    'Content-Security-Policy': csp,
    'Strict-Transport-Security': 'max-age=63072000; includeSubDomains',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
  }
}
