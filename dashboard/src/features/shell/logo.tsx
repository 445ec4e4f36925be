import { Database } from 'lucide-react'

export function Logo() {
  return (
    <span className="inline-flex items-center gap-2 text-base font-semibold tracking-tight">
      <span className="grid size-7 place-items-center rounded-md bg-brand-600 text-white"><Database className="size-4" aria-hidden /></span>
      Orochi DB
    </span>
  )
}
