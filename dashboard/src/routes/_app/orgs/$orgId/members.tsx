import { createFileRoute } from '@tanstack/react-router'
import { can } from '@/auth/permissions'
import { InvitationsCard } from '@/features/members/invitations-card'
import { MembersCard } from '@/features/members/members-card'
import { OrganizationCard } from '@/features/members/organization-card'
import { useOrganization } from '@/queries/orgs'

export const Route = createFileRoute('/_app/orgs/$orgId/members')({ component: MembersPage })

function MembersPage() {
  const { orgId } = Route.useParams()
  const org = useOrganization(orgId)
  if (!org?.role) return <p role="status" className="text-sm text-zinc-600">Loading…</p>
  return (
    <div className="mx-auto max-w-3xl space-y-4">
      <h1 className="text-2xl font-semibold">Members</h1>
      <p className="text-sm text-zinc-600">Your role in {org.name}: <strong data-testid="my-role">{org.role}</strong></p>
      {can(org.role, 'org:rename') && <OrganizationCard org={org} />}
      <MembersCard orgId={orgId} role={org.role} />
      {can(org.role, 'invitations:manage') && <InvitationsCard orgId={orgId} role={org.role} />}
    </div>
  )
}
