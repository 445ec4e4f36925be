import type { Cluster } from '@/queries/clusters'
import { Card, CardHeader } from '@/ui/card'
import { formatTime, instancesLabel } from './format'
import { policyOf } from './policy'

export function OverviewCard({ cluster }: { cluster: Cluster }) {
  const autoscaling = policyOf(cluster.autoscaling)
  const rows: [string, string][] = [
    ['Region', cluster.region],
    ['PostgreSQL', cluster.postgres_version],
    ['Size', cluster.size],
    ['Instances', instancesLabel(cluster.ready_instances, cluster.instances)],
    ['Storage', `${cluster.storage_gb} GB`],
    ['Endpoint', cluster.endpoint ? `${cluster.endpoint.host}:${cluster.endpoint.port}` : 'not yet assigned'],
    ['IP allow list', cluster.ip_allowlist.length ? cluster.ip_allowlist.join(', ') : 'any address'],
    ['Deletion protection', cluster.deletion_protection ? 'on' : 'off'],
    ['Autoscaling', autoscaling
      ? `${autoscaling.enabled === false ? 'paused' : 'on'}, ${autoscaling.min_instances}–${autoscaling.max_instances} instances`
      : 'off'],
    ['Generation', `${cluster.observed_generation} of ${cluster.generation} applied`],
    ['Created', formatTime(cluster.created_at)],
  ]
  return (
    <Card>
      <CardHeader title="Overview" />
      <dl className="grid grid-cols-1 gap-x-6 gap-y-2 text-sm sm:grid-cols-2">
        {rows.map(([label, value]) => (
          <div key={label} className="flex justify-between gap-4 border-b border-zinc-100 pb-2 sm:block sm:border-0 sm:pb-0">
            <dt className="text-zinc-500">{label}</dt>
            <dd className="text-right font-medium break-all sm:text-left" data-testid={`overview-${label.toLowerCase().replaceAll(' ', '-')}`}>{value}</dd>
          </div>
        ))}
      </dl>
    </Card>
  )
}
