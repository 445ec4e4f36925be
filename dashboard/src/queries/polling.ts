import type { components } from '@/api/schema.gen'

type Cluster = components['schemas']['ClusterOut']
type Operation = components['schemas']['OperationOut']

const MOVING: ReadonlySet<Cluster['status']> = new Set(['pending', 'provisioning', 'updating', 'degraded', 'deleting'])
const FASTEST_MS = 1_000
const SLOWEST_MS = 15_000

/** A change is still being applied: the status is not a resting one, or the agent has not yet reached the generation. */
export function inProgress(cluster: Cluster): boolean {
  return MOVING.has(cluster.status) || cluster.observed_generation < cluster.generation
}

export function operationOpen(operation: Operation): boolean {
  return operation.status === 'pending' || operation.status === 'running'
}

/**
 * How long to wait before asking again about a change that started at `since` (epoch seconds): every second at
 * first, then slower the longer it takes (a quarter of the time elapsed), at most every 15 s; false when nothing moves,
 * which stops polling. TanStack Query also stops an interval while the tab is hidden (refetchIntervalInBackground off).
 */
export function pollDelay(moving: boolean, since: number, now = Date.now()): number | false {
  if (!moving) return false
  const elapsed = Math.max(0, now - since * 1000)
  return Math.round(Math.min(SLOWEST_MS, Math.max(FASTEST_MS, elapsed / 4)))
}

export function clusterPollDelay(cluster: Cluster | undefined, now = Date.now()): number | false {
  return cluster ? pollDelay(inProgress(cluster), cluster.updated_at, now) : false
}

/** The soonest poll any of the clusters needs. */
export function clustersPollDelay(clusters: Cluster[] | undefined, now = Date.now()): number | false {
  const delays = (clusters ?? []).map((c) => clusterPollDelay(c, now)).filter((d): d is number => d !== false)
  return delays.length ? Math.min(...delays) : false
}
