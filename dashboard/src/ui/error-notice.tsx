import { AlertTriangle } from 'lucide-react'
import type { ReactNode } from 'react'
import { ApiError } from '@/api/errors'

/**
 * An error as the API documented it: its message, code and request id (to quote to support), and the field details
 * that no input of the form shows next to itself (`shownFields` are those it does; `ip_allowlist.*` covers the items).
 */
export function ErrorNotice({ error, shownFields = [], children }: { error: unknown; shownFields?: string[]; children?: ReactNode }) {
  if (!error) return null
  const apiError = error instanceof ApiError ? error : null
  const shown = (field: string) => shownFields.some((f) => field === f || (f.endsWith('.*') && field.startsWith(f.slice(0, -1))))
  const others = apiError?.details.filter((d) => !shown(d.field)) ?? []
  return (
    <div role="alert" className="rounded-md border border-red-200 bg-red-50 p-3 text-sm text-red-900">
      <div className="flex gap-2">
        <AlertTriangle className="mt-0.5 size-4 shrink-0" aria-hidden />
        <div className="min-w-0 space-y-1">
          <p className="font-medium">{headline(error)}</p>
          {others.length > 0 && (
            <ul className="list-disc pl-5">
              {others.map((d) => <li key={`${d.field}:${d.message}`}><code>{d.field}</code>: {d.message}</li>)}
            </ul>
          )}
          {apiError && (
            <p className="text-xs break-all text-red-800">
              {apiError.status > 0 && <>HTTP {apiError.status} · </>}<code>{apiError.code}</code>
              {apiError.requestId && <> · request id <code data-testid="request-id">{apiError.requestId}</code></>}
            </p>
          )}
          {children}
        </div>
      </div>
    </div>
  )
}

function headline(error: unknown): string {
  if (!(error instanceof ApiError)) return error instanceof Error ? error.message : 'Something went wrong.'
  if (error.status === 412) return 'This cluster changed since you loaded it. Load the latest version, check your changes and apply them again.'
  if ((error.status === 429 || error.status === 503) && error.retryAfter) return `${error.message} Try again in ${error.retryAfter} s.`
  return error.message
}
