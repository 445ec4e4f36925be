import { useSessionState } from '@/auth/context'
import type { Operation } from '@/queries/clusters'
import { operationOpen } from '@/queries/polling'
import { StatusBadge } from '@/ui/status-badge'
import { formatTime } from './format'

const KIND: Record<string, string> = { create: 'Created', update: 'Settings changed', scale: 'Scaled', delete: 'Deleted' }

function actor(value: string, me: string | null): string {
  if (value === 'autoscaler') return 'the autoscaler'
  if (value.startsWith('user:')) return value === `user:${me}` ? 'you' : 'a member'
  return value
}

/** The cluster's operations, newest first, as a vertical timeline. */
export function OperationsTimeline({ operations }: { operations: Operation[] }) {
  const state = useSessionState()
  const me = state.status === 'signed-in' ? state.user.id : null
  if (!operations.length) return <p className="text-sm text-zinc-600">No operations yet.</p>
  return (
    <ol className="relative space-y-4 border-l border-zinc-200 pl-5" aria-label="Operations">
      {operations.map((op) => (
        <li key={op.id} className="relative" data-testid="operation">
          <span aria-hidden className={`absolute top-1.5 -left-[25px] size-2.5 rounded-full ring-4 ring-white ${
            op.status === 'failed' ? 'bg-red-500' : op.status === 'succeeded' ? 'bg-emerald-500' : 'bg-sky-500'}`} />
          <div className="flex flex-wrap items-center gap-2">
            <span className="text-sm font-medium">{KIND[op.kind] ?? op.kind}</span>
            <StatusBadge status={op.status} moving={operationOpen(op)} />
            <span className="text-xs text-zinc-500">by {actor(op.actor, me)} · {formatTime(op.created_at)} · generation {op.generation}</span>
          </div>
          {op.reason && <p className="mt-1 text-sm text-zinc-700">{op.reason}</p>}
          {op.error && <p className="mt-1 text-sm text-red-700">{op.error}</p>}
        </li>
      ))}
    </ol>
  )
}
