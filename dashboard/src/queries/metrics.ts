import { keepPreviousData, useQuery } from '@tanstack/react-query'
import { data } from '@/api/client'
import type { components } from '@/api/schema.gen'
import { useApi } from '@/auth/context'

export type Series = components['schemas']['SeriesOut']
export type MetricWindow = Series['window']
export const WINDOWS: MetricWindow[] = ['1h', '24h', '7d']
/** About twice per bucket of the window (1 min, 15 min, 1 h buckets): fresher would show nothing new. */
const REFRESH_MS: Record<MetricWindow, number> = { '1h': 30_000, '24h': 300_000, '7d': 600_000 }

export function useMetrics(orgId: string, clusterId: string, window: MetricWindow) {
  const api = useApi()
  return useQuery({
    queryKey: ['orgs', orgId, 'clusters', clusterId, 'metrics', window],
    queryFn: () => data(api.GET('/v1/orgs/{org_id}/clusters/{cluster_id}/metrics', {
      params: { path: { org_id: orgId, cluster_id: clusterId }, query: { window } },
    })),
    placeholderData: keepPreviousData,
    refetchInterval: REFRESH_MS[window],
  })
}
