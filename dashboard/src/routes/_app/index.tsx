import { createFileRoute, Navigate } from '@tanstack/react-router'
import { useOrganizations } from '@/queries/orgs'
import { ErrorNotice } from '@/ui/error-notice'

export const Route = createFileRoute('/_app/')({ component: Home })

/** The first organization's clusters. */
function Home() {
  const orgs = useOrganizations()
  if (orgs.error) return <ErrorNotice error={orgs.error} />
  if (!orgs.data) return <p role="status" className="text-sm text-zinc-600">Loading…</p>
  const [first] = orgs.data
  if (!first) return <p className="text-sm text-zinc-700">You are not a member of any organization. Ask for an invitation link.</p>
  return <Navigate to="/orgs/$orgId/clusters" params={{ orgId: first.id }} replace />
}
