import { cn } from './cn'

const TONES: Record<string, string> = {
  running: 'bg-emerald-50 text-emerald-800 ring-emerald-600/30',
  succeeded: 'bg-emerald-50 text-emerald-800 ring-emerald-600/30',
  failed: 'bg-red-50 text-red-800 ring-red-600/30',
  degraded: 'bg-amber-50 text-amber-900 ring-amber-600/30',
  deleted: 'bg-zinc-100 text-zinc-700 ring-zinc-500/30',
}

/** A status as a word (never colour alone); moving states pulse. */
export function StatusBadge({ status, moving = false }: { status: string; moving?: boolean }) {
  return (
    <span data-testid="status" className={cn('inline-flex items-center gap-1.5 rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset',
      TONES[status] ?? 'bg-sky-50 text-sky-800 ring-sky-600/30')}>
      <span aria-hidden className={cn('size-1.5 rounded-full bg-current', moving && 'animate-pulse')} />
      {status}
    </span>
  )
}
