import { createApi, data, type Api, type Fetch } from '@/api/client'
import type { components } from '@/api/schema.gen'

type TokenResponse = components['schemas']['TokenResponse']
export type User = components['schemas']['UserOut']
export type RegisterBody = components['schemas']['RegisterRequest']
export type LoginBody = components['schemas']['LoginRequest']

export type SessionState =
  | { status: 'restoring' }
  | { status: 'signed-out'; expired: boolean }
  | { status: 'signed-in'; user: User }

/**
 * Browser sessions: the refresh token is an httpOnly cookie the API sets on /v1/auth (asked for with
 * `X-Orochi-Session: cookie`), out of reach of scripts; the access token lives only in this object's memory.
 * The access token is renewed before it expires; a reload restores the session with one refresh.
 */
const COOKIE_SESSION = { headers: { 'X-Orochi-Session': 'cookie' }, credentials: 'include' } as const
/** Renew this long before the access token expires (at most a fifth of its lifetime). */
const RENEW_AHEAD_SECONDS = 60

export function renewDelayMs(expiresIn: number): number {
  return Math.max(1, expiresIn - Math.min(RENEW_AHEAD_SECONDS, expiresIn / 5)) * 1000
}

export class Session {
  readonly api: Api
  private state: SessionState = { status: 'restoring' }
  private accessToken: string | null = null
  private timer: ReturnType<typeof setTimeout> | undefined
  private renewing: Promise<boolean> | null = null
  private readonly listeners = new Set<() => void>()

  constructor({ baseUrl, fetch }: { baseUrl: string; fetch?: Fetch }) {
    this.api = createApi({ baseUrl, fetch, bearer: { token: () => this.accessToken, renew: () => this.refresh() } })
  }

  getState = (): SessionState => this.state

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  async register(body: RegisterBody): Promise<TokenResponse> {
    return this.accept(await data(this.api.POST('/v1/auth/register', { body, ...COOKIE_SESSION })))
  }

  async login(body: LoginBody): Promise<TokenResponse> {
    return this.accept(await data(this.api.POST('/v1/auth/login', { body, ...COOKIE_SESSION })))
  }

  /** On start: a refresh cookie from an earlier visit signs the user in again; none leaves them signed out. */
  async restore(): Promise<void> {
    if (!(await this.refresh())) this.set({ status: 'signed-out', expired: false })
  }

  /**
   * Rotate the refresh cookie for a new access token; concurrent callers share one request. When it fails, a signed-in
   * user is signed out as `expired` (the app returns to the login page; form drafts stay).
   */
  refresh(): Promise<boolean> {
    this.renewing ??= this.renew().finally(() => {
      this.renewing = null
    })
    return this.renewing
  }

  async logout(): Promise<void> {
    try {
      await data(this.api.POST('/v1/auth/logout', { credentials: 'include' }))
    } finally {
      this.end(false)
    }
  }

  private async renew(): Promise<boolean> {
    try {
      // The cookie carries the refresh token: the body names none.
      this.accept(await data(this.api.POST('/v1/auth/refresh', { body: {} as never, ...COOKIE_SESSION })))
      return true
    } catch {
      if (this.state.status !== 'restoring') this.end(this.state.status === 'signed-in')
      return false
    }
  }

  private accept(tokens: TokenResponse): TokenResponse {
    this.accessToken = tokens.access_token
    clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.refresh(), renewDelayMs(tokens.expires_in))
    this.set({ status: 'signed-in', user: tokens.user })
    return tokens
  }

  private end(expired: boolean): void {
    this.accessToken = null
    clearTimeout(this.timer)
    this.set({ status: 'signed-out', expired })
  }

  private set(state: SessionState): void {
    this.state = state
    for (const listener of this.listeners) listener()
  }
}
