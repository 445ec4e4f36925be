import { useId, useRef, type KeyboardEvent, type ReactNode } from 'react'
import { cn } from './cn'

/** WAI-ARIA tabs: one tab stop, arrow keys move between tabs, the panel is labelled by its tab. */
export function Tabs<T extends string>({ label, tabs, value, onChange, children }: {
  label: string; tabs: T[]; value: T; onChange: (value: T) => void; children: ReactNode
}) {
  const id = useId()
  const list = useRef<HTMLDivElement>(null)
  const move = (event: KeyboardEvent) => {
    const step = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0
    if (!step) return
    const next = tabs[(tabs.indexOf(value) + step + tabs.length) % tabs.length]!
    onChange(next)
    list.current?.querySelector<HTMLButtonElement>(`[data-tab="${next}"]`)?.focus()
  }
  return (
    <div>
      <div ref={list} role="tablist" aria-label={label} onKeyDown={move} className="inline-flex rounded-md border border-zinc-200 bg-zinc-50 p-0.5">
        {tabs.map((tab) => (
          <button key={tab} type="button" role="tab" id={`${id}-${tab}`} data-tab={tab} aria-selected={tab === value}
            aria-controls={`${id}-panel`} tabIndex={tab === value ? 0 : -1} onClick={() => onChange(tab)}
            className={cn('rounded px-3 py-1 text-sm font-medium text-zinc-600', tab === value && 'bg-white text-zinc-900 shadow-xs')}>
            {tab}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`${id}-panel`} aria-labelledby={`${id}-${value}`} className="mt-4">{children}</div>
    </div>
  )
}
