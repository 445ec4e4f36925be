import { createFileRoute, Navigate, Outlet, useLocation } from '@tanstack/react-router'
import { useSessionState } from '../auth/context'
import { Shell } from '../features/shell/shell'

export const Route = createFileRoute('/_app')({ component: SignedIn })

/** Every page behind sign-in. A session that ends sends the user to the login page and back here afterwards. */
function SignedIn() {
  const state = useSessionState()
  const location = useLocation()
  if (state.status === 'restoring') return <p className="p-8 text-sm text-zinc-600" role="status">Loading…</p>
  if (state.status === 'signed-out') return <Navigate to="/login" search={{ redirect: location.href }} replace />
  return (
    <Shell user={state.user}>
      <Outlet />
    </Shell>
  )
}
