import type { components } from './schema.gen'

type ErrorBody = components['schemas']['ErrorBody']

type FieldDetail = { field: string; message: string }

/** An answer of the API that is not a success, as its documented error shape tells it (or as close as the answer allows). */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly requestId: string | null
  readonly details: FieldDetail[]
  readonly retryAfter: number | null

  constructor({ status, code, message, requestId = null, details = [], retryAfter = null }: {
    status: number; code: string; message: string; requestId?: string | null; details?: FieldDetail[]; retryAfter?: number | null
  }) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.requestId = requestId
    this.details = details
    this.retryAfter = retryAfter
  }

  static fromResponse(response: Response, body: unknown): ApiError {
    const error = isErrorEnvelope(body) ? body.error : null
    const retryAfter = Number(response.headers.get('Retry-After'))
    return new ApiError({
      status: response.status,
      code: error?.code ?? `http_${response.status}`,
      message: error?.message ?? (response.statusText || `The API answered ${response.status}`),
      requestId: error?.request_id || response.headers.get('X-Request-ID'),
      details: (error?.details ?? []).flatMap(toFieldDetail),
      retryAfter: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
    })
  }

  static network(cause: unknown): ApiError {
    const error = new ApiError({ status: 0, code: 'network_error', message: 'Could not reach the Orochi API. Check your connection and retry.' })
    error.cause = cause
    return error
  }

  /**
   * The messages of a field's details: `field` is the API's dotted path (`autoscaling.max_instances`); with `nested`,
   * those of its items and parts too (`ip_allowlist.2`).
   */
  forField(field: string, { nested = false } = {}): string | undefined {
    const found = this.details.filter((d) => d.field === field || (nested && d.field.startsWith(`${field}.`)))
    return found.length ? found.map((d) => (d.field === field ? d.message : `${d.field.slice(field.length + 1)}: ${d.message}`)).join('; ') : undefined
  }
}

export function fieldError(error: unknown, field: string, options?: { nested?: boolean }): string | undefined {
  return error instanceof ApiError ? error.forField(field, options) : undefined
}

/** A 412: the If-Match of an edit named a version that is no longer the latest. */
export function isStale(error: unknown): boolean {
  return error instanceof ApiError && error.status === 412
}

function isErrorEnvelope(body: unknown): body is { error: ErrorBody } {
  if (typeof body !== 'object' || body === null || !('error' in body)) return false
  const error = (body as { error: unknown }).error
  return typeof error === 'object' && error !== null && typeof (error as ErrorBody).code === 'string'
}

function toFieldDetail(detail: Record<string, unknown>): FieldDetail[] {
  return typeof detail.field === 'string' ? [{ field: detail.field, message: String(detail.message ?? 'is invalid') }] : []
}
