import { createFileRoute, Link } from '@tanstack/react-router'
import { can } from '@/auth/permissions'
import { CredentialsCard } from '@/features/clusters/credentials-card'
import { DeleteDialog } from '@/features/clusters/delete-dialog'
import { MetricsCard } from '@/features/clusters/metrics-card'
import { OperationsTimeline } from '@/features/clusters/operations-timeline'
import { OverviewCard } from '@/features/clusters/overview-card'
import { ScaleDialog } from '@/features/clusters/scale-dialog'
import { SettingsForm } from '@/features/clusters/settings-form'
import { useCatalog } from '@/queries/catalog'
import { useCluster, useOperations, type Cluster } from '@/queries/clusters'
import { useOrganization } from '@/queries/orgs'
import { inProgress } from '@/queries/polling'
import { Card, CardHeader } from '@/ui/card'
import { ErrorNotice } from '@/ui/error-notice'
import { StatusBadge } from '@/ui/status-badge'

export const Route = createFileRoute('/_app/orgs/$orgId/clusters/$clusterId')({ component: ClusterPage })

function ClusterPage() {
  const { orgId, clusterId } = Route.useParams()
  const role = useOrganization(orgId)?.role
  const query = useCluster(orgId, clusterId)
  const catalog = useCatalog()
  if (query.error) return <ErrorNotice error={query.error} />
  if (!query.data) return <p role="status" className="text-sm text-zinc-600">Loading…</p>
  const { cluster } = query.data
  const live = cluster.status !== 'deleting' && cluster.status !== 'deleted'
  return (
    <div className="space-y-4">
      <Link to="/orgs/$orgId/clusters" params={{ orgId }} className="text-sm text-zinc-600 hover:underline">← Clusters</Link>
      <div className="flex flex-wrap items-center justify-between gap-3">
        <div className="min-w-0">
          <div className="flex flex-wrap items-center gap-3">
            <h1 className="truncate text-2xl font-semibold">{cluster.name}</h1>
            <StatusBadge status={cluster.status} moving={inProgress(cluster)} />
          </div>
          {cluster.status_message && <p className="mt-1 text-sm text-zinc-600">{cluster.status_message}</p>}
        </div>
        {live && (
          <div className="flex flex-wrap gap-2">
            {can(role, 'clusters:write') && catalog.data && <ScaleDialog orgId={orgId} query={query} current={query.data} catalog={catalog.data} />}
            {can(role, 'clusters:delete') && <DeleteDialog orgId={orgId} cluster={cluster} />}
          </div>
        )}
      </div>
      <div className="grid gap-4 lg:grid-cols-[2fr_1fr]">
        <div className="min-w-0 space-y-4">
          <OverviewCard cluster={cluster} />
          {live && <MetricsCard orgId={orgId} clusterId={cluster.id} />}
          {live && can(role, 'clusters:credentials') && <CredentialsCard orgId={orgId} clusterId={cluster.id} />}
          {live && role && can(role, 'clusters:write') && catalog.data && (
            <SettingsForm key={cluster.id} orgId={orgId} query={query} current={query.data} catalog={catalog.data} role={role} />
          )}
        </div>
        <Operations orgId={orgId} cluster={cluster} />
      </div>
    </div>
  )
}

function Operations({ orgId, cluster }: { orgId: string; cluster: Cluster }) {
  const operations = useOperations(orgId, cluster)
  return (
    <Card className="h-fit">
      <CardHeader title="Operations" />
      <ErrorNotice error={operations.error} />
      {operations.data && <OperationsTimeline operations={operations.data} />}
    </Card>
  )
}
