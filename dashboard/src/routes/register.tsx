import { createFileRoute, Link, Navigate, useNavigate } from '@tanstack/react-router'
import { useSessionState } from '@/auth/context'
import { AuthLayout } from '@/features/auth/auth-layout'
import { RegisterForm } from '@/features/auth/forms'

export const Route = createFileRoute('/register')({ component: RegisterPage })

function RegisterPage() {
  const state = useSessionState()
  const navigate = useNavigate()
  if (state.status === 'signed-in') return <Navigate to="/" />
  return (
    <AuthLayout title="Create your account" footer={<>Already have an account? <Link to="/login" className="font-medium text-brand-700 underline">Sign in</Link></>}>
      <RegisterForm onDone={() => void navigate({ to: '/' })} />
    </AuthLayout>
  )
}
