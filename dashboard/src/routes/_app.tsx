import { createFileRoute, Outlet, useRouter } from '@tanstack/react-router'
import { useEffect } from 'react'
import { useSessionState } from '@/auth/context'
import { Shell } from '@/features/shell/shell'

export const Route = createFileRoute('/_app')({ component: SignedIn })

/** Every page behind sign-in. A session that ends sends the user to the login page, and back here afterwards. */
function SignedIn() {
  const state = useSessionState()
  const router = useRouter()
  useEffect(() => {
    if (state.status === 'signed-out') {
      void router.navigate({ to: '/login', search: { redirect: router.state.location.href }, replace: true })
    }
  }, [state.status, router])
  if (state.status !== 'signed-in') return <p className="p-8 text-sm text-zinc-600" role="status">Loading…</p>
  return (
    <Shell user={state.user}>
      <Outlet />
    </Shell>
  )
}
