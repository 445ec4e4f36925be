import { createFileRoute, Link } from '@tanstack/react-router'
import { Plus } from 'lucide-react'
import { can } from '@/auth/permissions'
import { formatTime, instancesLabel } from '@/features/clusters/format'
import { useClusters } from '@/queries/clusters'
import { useOrganization } from '@/queries/orgs'
import { inProgress } from '@/queries/polling'
import { Button } from '@/ui/button'
import { ErrorNotice } from '@/ui/error-notice'
import { StatusBadge } from '@/ui/status-badge'

export const Route = createFileRoute('/_app/orgs/$orgId/clusters/')({ component: ClustersPage })

function ClustersPage() {
  const { orgId } = Route.useParams()
  const org = useOrganization(orgId)
  const clusters = useClusters(orgId)
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-3">
        <h1 className="text-2xl font-semibold">Clusters</h1>
        {can(org?.role, 'clusters:write') && (
          <Button asChild><Link to="/orgs/$orgId/clusters/new" params={{ orgId }}><Plus className="size-4" aria-hidden />Create cluster</Link></Button>
        )}
      </div>
      <ErrorNotice error={clusters.error} />
      {clusters.data?.length === 0 && (
        <div className="rounded-lg border border-dashed border-zinc-300 bg-white p-10 text-center text-sm text-zinc-600">
          No clusters yet.{can(org?.role, 'clusters:write') ? ' Create one to get a PostgreSQL database in about a minute.' : ''}
        </div>
      )}
      {clusters.data && clusters.data.length > 0 && (
        <ul className="divide-y divide-zinc-200 overflow-hidden rounded-lg border border-zinc-200 bg-white" aria-label="Clusters">
          {clusters.data.map((cluster) => (
            <li key={cluster.id}>
              <Link to="/orgs/$orgId/clusters/$clusterId" params={{ orgId, clusterId: cluster.id }}
                className="grid grid-cols-[1fr_auto] gap-x-4 gap-y-1 px-4 py-3 hover:bg-zinc-50 sm:grid-cols-[2fr_1fr_1fr_1fr]">
                <span className="min-w-0">
                  <span className="block truncate font-medium">{cluster.name}</span>
                  <span className="block text-xs text-zinc-500">Created {formatTime(cluster.created_at)}</span>
                </span>
                <span className="justify-self-end sm:justify-self-start"><StatusBadge status={cluster.status} moving={inProgress(cluster)} /></span>
                <span className="text-sm text-zinc-600">PostgreSQL {cluster.postgres_version} · {cluster.region}</span>
                <span className="justify-self-end text-sm text-zinc-600 sm:justify-self-start">{cluster.size} · {instancesLabel(cluster.ready_instances, cluster.instances)}</span>
              </Link>
            </li>
          ))}
        </ul>
      )}
    </div>
  )
}
