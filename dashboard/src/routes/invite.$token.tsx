import { createFileRoute, Link, useNavigate } from '@tanstack/react-router'
import { useSessionState } from '@/auth/context'
import { AuthLayout } from '@/features/auth/auth-layout'
import { RegisterForm } from '@/features/auth/forms'
import { useAcceptInvitation } from '@/queries/orgs'
import { Button } from '@/ui/button'
import { ErrorNotice } from '@/ui/error-notice'

export const Route = createFileRoute('/invite/$token')({ component: InvitePage })

/** An invitation link: a new user registers into the organization; a signed-in one accepts it. */
function InvitePage() {
  const { token } = Route.useParams()
  const state = useSessionState()
  const navigate = useNavigate()
  const accept = useAcceptInvitation()
  const here = `/invite/${encodeURIComponent(token)}`
  if (state.status === 'restoring') return null
  if (state.status === 'signed-in') {
    return (
      <AuthLayout title="Join an organization">
        <p className="mb-4 text-sm text-zinc-700">You were invited to an organization on Orochi DB. Join it as <strong>{state.user.email}</strong>?</p>
        <ErrorNotice error={accept.error} />
        <Button className="mt-4 w-full" disabled={accept.isPending} onClick={() => accept.mutate(token, {
          onSuccess: (org) => void navigate({ to: '/orgs/$orgId/clusters', params: { orgId: org.id } }),
        })}>Join organization</Button>
      </AuthLayout>
    )
  }
  return (
    <AuthLayout title="Join your team on Orochi DB"
      footer={<>Already have an account? <Link to="/login" search={{ redirect: here }} className="font-medium text-brand-700 underline">Sign in to accept</Link></>}>
      <RegisterForm invitationToken={token} onDone={() => void navigate({ to: '/' })} />
    </AuthLayout>
  )
}
