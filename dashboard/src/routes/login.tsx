import { createFileRoute, Link, Navigate, useNavigate } from '@tanstack/react-router'
import { useSessionState } from '@/auth/context'
import { AuthLayout } from '@/features/auth/auth-layout'
import { LoginForm } from '@/features/auth/forms'
import { safeRedirect, validateRedirect } from '@/features/auth/redirect'

export const Route = createFileRoute('/login')({
  validateSearch: validateRedirect,
  component: LoginPage,
})

function LoginPage() {
  const state = useSessionState()
  const { redirect } = Route.useSearch()
  const navigate = useNavigate()
  const target = safeRedirect(redirect)
  if (state.status === 'signed-in') return <Navigate to={target} />
  return (
    <AuthLayout title="Sign in to Orochi DB" footer={<>No account yet? <Link to="/register" className="font-medium text-brand-700 underline">Create one</Link></>}>
      {state.status === 'signed-out' && state.expired && (
        <p role="status" className="mb-4 rounded-md bg-amber-50 p-3 text-sm text-amber-900">
          Your session ended. Sign in again to continue where you were; what you were typing is kept.
        </p>
      )}
      <LoginForm onDone={() => void navigate({ to: target })} />
    </AuthLayout>
  )
}
