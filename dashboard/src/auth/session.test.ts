import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { data } from '@/api/client'
import { apiError, fakeApi, json, tokens } from '@/test/fake-api'
import { renewDelayMs } from './session'

const REFRESH = 'POST /v1/auth/refresh'
const LOGIN = 'POST /v1/auth/login'

describe('access token renewal', () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('is scheduled a minute before expiry, or a fifth of a short lifetime before', () => {
    expect(renewDelayMs(900)).toBe(840_000)
    expect(renewDelayMs(100)).toBe(80_000)
    expect(renewDelayMs(1)).toBe(1_000)
  })

  it('rotates the refresh cookie before the access token expires, and uses the new token', async () => {
    const api = fakeApi({
      [LOGIN]: () => json(200, tokens(900, 'access-1')),
      [REFRESH]: () => json(200, tokens(900, 'access-2')),
      'GET /v1/auth/me': () => json(200, tokens().user),
    })
    await api.session.login({ email: 'ada@example.com', password: 'correct horse' })
    const [login] = api.sent(LOGIN)
    expect(login!.headers.get('X-Orochi-Session')).toBe('cookie')
    expect(login!.credentials).toBe('include')

    await vi.advanceTimersByTimeAsync(839_000)
    expect(api.sent(REFRESH)).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(1_000)
    expect(api.sent(REFRESH)).toHaveLength(1)
    const [refresh] = api.sent(REFRESH)
    expect(refresh!.headers.get('X-Orochi-Session')).toBe('cookie')
    expect(refresh!.credentials).toBe('include')
    expect(refresh!.headers.get('Authorization')).toBeNull()

    await data(api.session.api.GET('/v1/auth/me'))
    expect(api.sent('GET /v1/auth/me')[0]!.headers.get('Authorization')).toBe('Bearer access-2')
    await vi.advanceTimersByTimeAsync(840_000)
    expect(api.sent(REFRESH)).toHaveLength(2)
  })

  it('keeps the access token out of storage', async () => {
    const api = fakeApi({ [LOGIN]: () => json(200, tokens(900, 'access-secret')) })
    await api.session.login({ email: 'ada@example.com', password: 'correct horse' })
    expect(JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })).not.toContain('access-secret')
  })

  it('signs the user out as expired when the refresh is refused', async () => {
    const api = fakeApi({ [LOGIN]: () => json(200, tokens(100)), [REFRESH]: () => apiError(401, 'unauthorized', 'refresh token expired') })
    await api.session.login({ email: 'ada@example.com', password: 'correct horse' })
    await vi.advanceTimersByTimeAsync(80_000)
    expect(api.session.getState()).toEqual({ status: 'signed-out', expired: true })
  })

  it('renews once on a 401 and sends the request again; concurrent callers share the refresh', async () => {
    const api = fakeApi({
      [LOGIN]: () => json(200, tokens(900, 'access-1')),
      [REFRESH]: () => json(200, tokens(900, 'access-2')),
      'GET /v1/auth/me': (request) => request.headers.get('Authorization') === 'Bearer access-2'
        ? json(200, tokens().user) : apiError(401, 'unauthorized', 'token expired'),
    })
    await api.session.login({ email: 'ada@example.com', password: 'correct horse' })
    const [a, b] = await Promise.all([data(api.session.api.GET('/v1/auth/me')), data(api.session.api.GET('/v1/auth/me'))])
    expect(a.email).toBe('ada@example.com')
    expect(b.email).toBe('ada@example.com')
    expect(api.sent(REFRESH)).toHaveLength(1)
  })

  it('logs out with the bearer and the cookie, so the API can clear it', async () => {
    const api = fakeApi({ [LOGIN]: () => json(200, tokens(900, 'access-1')), 'POST /v1/auth/logout': () => json(204, null) })
    await api.session.login({ email: 'ada@example.com', password: 'correct horse' })
    await api.session.logout()
    const [logout] = api.sent('POST /v1/auth/logout')
    expect(logout!.headers.get('Authorization')).toBe('Bearer access-1')
    expect(logout!.credentials).toBe('include')
    expect(api.session.getState()).toEqual({ status: 'signed-out', expired: false })
    await vi.advanceTimersByTimeAsync(900_000)
    expect(api.sent(REFRESH)).toHaveLength(0)
  })

  it('restores a session on reload from the refresh cookie alone, or starts signed out', async () => {
    const restored = fakeApi({ [REFRESH]: () => json(200, tokens()) })
    await restored.session.restore()
    expect(restored.session.getState()).toMatchObject({ status: 'signed-in', user: { email: 'ada@example.com' } })
    const fresh = fakeApi({ [REFRESH]: () => apiError(401, 'unauthorized', 'no refresh token') })
    await fresh.session.restore()
    expect(fresh.session.getState()).toEqual({ status: 'signed-out', expired: false })
  })
})
