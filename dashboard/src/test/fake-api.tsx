import { QueryClient, QueryClientProvider } from '@tanstack/react-query'
import { render } from '@testing-library/react'
import type { ReactNode } from 'react'
import { vi } from 'vitest'
import { SessionProvider } from '@/auth/context'
import { Session } from '@/auth/session'

export const API = 'http://api.test'

type Handler = (request: Request) => Response | Promise<Response>

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } })
}

export function apiError(status: number, code: string, message: string, details?: { field: string; message: string }[]): Response {
  return json(status, { error: { code, message, request_id: `req-${code}`, ...(details ? { details } : {}) } })
}

export function tokens(expiresIn = 900, accessToken = 'access-1') {
  return { access_token: accessToken, refresh_token: '', token_type: 'Bearer', expires_in: expiresIn,
    user: { id: 'usr_ada', email: 'ada@example.com', name: 'Ada' } }
}

/** A fake API: handlers by "METHOD /path"; every request is recorded (a clone, body readable). */
export function fakeApi(routes: Record<string, Handler | Handler[]>) {
  const requests: Request[] = []
  const fetch = vi.fn(async (request: Request) => {
    requests.push(request.clone())
    const key = `${request.method} ${new URL(request.url).pathname}`
    const handler = routes[key]
    const next = Array.isArray(handler) ? (handler.length > 1 ? handler.shift() : handler[0]) : handler
    return next ? next(request) : apiError(404, 'not_found', `no fake for ${key}`)
  })
  const session = new Session({ baseUrl: API, fetch })
  const sent = (key: string) => requests.filter((r) => `${r.method} ${new URL(r.url).pathname}` === key)
  return { fetch, session, requests, sent }
}

export function testQueryClient(): QueryClient {
  return new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })
}

export function renderWithSession(ui: ReactNode, session: Session, queryClient = testQueryClient()) {
  return render(
    <SessionProvider session={session}>
      <QueryClientProvider client={queryClient}>{ui}</QueryClientProvider>
    </SessionProvider>,
  )
}
