import * as LabelPrimitive from '@radix-ui/react-label'
import { useId, type ComponentProps, type ReactNode } from 'react'
import { cn } from './cn'

const control =
  'block w-full rounded-md border border-zinc-300 bg-white px-3 py-2 text-sm shadow-xs placeholder:text-zinc-400 ' +
  'aria-invalid:border-red-500 disabled:bg-zinc-100 disabled:text-zinc-500'

export function Input({ className, ...props }: ComponentProps<'input'>) {
  return <input className={cn(control, 'h-9', className)} {...props} />
}

/** A number input whose value is a number: empty (or not a number) is NaN, which the API's validation names. */
export function NumberInput({ value, onChange, ...props }: Omit<ComponentProps<'input'>, 'value' | 'onChange' | 'type'> & {
  value: number; onChange: (value: number) => void
}) {
  return <Input type="number" inputMode="numeric" {...props} value={Number.isNaN(value) ? '' : value} onChange={(e) => onChange(e.target.valueAsNumber)} />
}

export function Select({ className, ...props }: ComponentProps<'select'>) {
  return <select className={cn(control, 'h-9 pr-8', className)} {...props} />
}

export function Textarea({ className, ...props }: ComponentProps<'textarea'>) {
  return <textarea className={cn(control, 'min-h-20 font-mono', className)} {...props} />
}

type ControlProps = { id: string; 'aria-invalid': boolean; 'aria-describedby'?: string }

/** A labelled control with its hint and its error (an API field detail or a local check), wired for screen readers. */
export function Field({ label, hint, error, className, children }: {
  label: ReactNode
  hint?: ReactNode
  error?: string
  className?: string
  children: (control: ControlProps) => ReactNode
}) {
  const id = useId()
  const hintId = `${id}-hint`
  const errorId = `${id}-error`
  const describedBy = [hint ? hintId : null, error ? errorId : null].filter(Boolean).join(' ') || undefined
  return (
    <div className={cn('space-y-1.5', className)}>
      <LabelPrimitive.Root htmlFor={id} className="block text-sm font-medium text-zinc-800">{label}</LabelPrimitive.Root>
      {children({ id, 'aria-invalid': Boolean(error), 'aria-describedby': describedBy })}
      {hint && <p id={hintId} className="text-xs text-zinc-500">{hint}</p>}
      {error && <p id={errorId} className="text-xs font-medium text-red-700">{error}</p>}
    </div>
  )
}

export function Checkbox({ label, hint, className, ...props }: ComponentProps<'input'> & { label: ReactNode; hint?: ReactNode }) {
  const id = useId()
  return (
    <div className={cn('flex items-start gap-2', className)}>
      <input id={id} type="checkbox" className="mt-0.5 size-4 rounded border-zinc-300 accent-brand-600" {...props} />
      <div>
        <label htmlFor={id} className="text-sm font-medium text-zinc-800">{label}</label>
        {hint && <p className="text-xs text-zinc-500">{hint}</p>}
      </div>
    </div>
  )
}
