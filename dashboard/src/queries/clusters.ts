import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { call, data } from '@/api/client'
import { useIdempotencyKeys } from '@/api/idempotency'
import type { components } from '@/api/schema.gen'
import { useApi } from '@/auth/context'
import { allPages } from './pages'
import { clusterPollDelay, clustersPollDelay, operationOpen, pollDelay } from './polling'

export type Cluster = components['schemas']['ClusterOut']
export type Operation = components['schemas']['OperationOut']
export type ClusterCreate = components['schemas']['ClusterCreate']
export type ClusterPatch = components['schemas']['ClusterPatch']
export type ScaleRequest = components['schemas']['ScaleRequest']
/** A cluster as read, with the ETag that an edit of this version sends as If-Match. */
export type Versioned = { cluster: Cluster; etag: string }

const LIMIT = 100

const clusterKeys = {
  list: (orgId: string) => ['orgs', orgId, 'clusters'] as const,
  one: (orgId: string, clusterId: string) => ['orgs', orgId, 'clusters', clusterId] as const,
  operations: (orgId: string, clusterId: string) => ['orgs', orgId, 'clusters', clusterId, 'operations'] as const,
}

function path(orgId: string, clusterId: string) {
  return { params: { path: { org_id: orgId, cluster_id: clusterId } } }
}

export function useClusters(orgId: string) {
  const api = useApi()
  return useQuery({
    queryKey: clusterKeys.list(orgId),
    queryFn: () => allPages((cursor) => data(api.GET('/v1/orgs/{org_id}/clusters', {
      params: { path: { org_id: orgId }, query: { limit: LIMIT, cursor } },
    }))),
    refetchInterval: (query) => clustersPollDelay(query.state.data),
  })
}

export function useCluster(orgId: string, clusterId: string) {
  const api = useApi()
  return useQuery({
    queryKey: clusterKeys.one(orgId, clusterId),
    queryFn: async (): Promise<Versioned> => {
      const { data: cluster, response } = await call(api.GET('/v1/orgs/{org_id}/clusters/{cluster_id}', path(orgId, clusterId)))
      return { cluster, etag: response.headers.get('ETag') ?? '' }
    },
    refetchInterval: (query) => clusterPollDelay(query.state.data?.cluster),
  })
}

/** The cluster's operations, newest first; polled while the cluster moves or an operation is open. */
export function useOperations(orgId: string, cluster: Cluster) {
  const api = useApi()
  return useQuery({
    queryKey: clusterKeys.operations(orgId, cluster.id),
    queryFn: () => data(api.GET('/v1/orgs/{org_id}/clusters/{cluster_id}/operations', {
      params: { path: { org_id: orgId, cluster_id: cluster.id }, query: { limit: 20 } },
    })).then((page) => page.items),
    placeholderData: keepPreviousData,
    refetchInterval: (query) => {
      const open = query.state.data?.find(operationOpen)
      return clusterPollDelay(cluster) || (open ? pollDelay(true, open.updated_at) : false)
    },
  })
}

/** After a change: the answer's cluster is the newest known version; the list and the operations follow. */
function useAfterChange(orgId: string) {
  const queryClient = useQueryClient()
  return async ({ cluster }: { cluster: Cluster }, response: Response) => {
    queryClient.setQueryData<Versioned>(clusterKeys.one(orgId, cluster.id), { cluster, etag: response.headers.get('ETag') ?? '' })
    await Promise.all([
      queryClient.invalidateQueries({ queryKey: clusterKeys.list(orgId), exact: true }),
      queryClient.invalidateQueries({ queryKey: clusterKeys.operations(orgId, cluster.id) }),
    ])
  }
}

export function useCreateCluster(orgId: string) {
  const api = useApi()
  const keys = useIdempotencyKeys()
  const afterChange = useAfterChange(orgId)
  return useMutation({
    mutationFn: (body: ClusterCreate) => call(api.POST('/v1/orgs/{org_id}/clusters', {
      params: { path: { org_id: orgId } }, body, headers: { 'Idempotency-Key': keys.keyFor(body) },
    })),
    onSuccess: async ({ data: change, response }) => {
      keys.settle()
      await afterChange(change, response)
    },
  })
}

export function useScaleCluster(orgId: string, clusterId: string) {
  const api = useApi()
  const keys = useIdempotencyKeys()
  const afterChange = useAfterChange(orgId)
  return useMutation({
    mutationFn: ({ body, etag }: { body: ScaleRequest; etag: string }) =>
      call(api.POST('/v1/orgs/{org_id}/clusters/{cluster_id}/scale', {
        ...path(orgId, clusterId), body, headers: { 'Idempotency-Key': keys.keyFor(body), 'If-Match': etag },
      })),
    onSuccess: async ({ data: change, response }) => {
      keys.settle()
      await afterChange(change, response)
    },
  })
}

export function useUpdateCluster(orgId: string, clusterId: string) {
  const api = useApi()
  const afterChange = useAfterChange(orgId)
  return useMutation({
    mutationFn: ({ body, etag }: { body: ClusterPatch; etag: string }) =>
      call(api.PATCH('/v1/orgs/{org_id}/clusters/{cluster_id}', { ...path(orgId, clusterId), body, headers: { 'If-Match': etag } })),
    onSuccess: ({ data: change, response }) => afterChange(change, response),
  })
}

export function useDeleteCluster(orgId: string, clusterId: string) {
  const api = useApi()
  const afterChange = useAfterChange(orgId)
  return useMutation({
    mutationFn: () => call(api.DELETE('/v1/orgs/{org_id}/clusters/{cluster_id}', path(orgId, clusterId))),
    onSuccess: ({ data: change, response }) => afterChange(change, response),
  })
}

/** Read on request only, never cached: the answer holds the database password. */
export function useRevealCredentials(orgId: string, clusterId: string) {
  const api = useApi()
  return useMutation({
    mutationFn: () => data(api.GET('/v1/orgs/{org_id}/clusters/{cluster_id}/credentials', path(orgId, clusterId))),
    gcTime: 0,
  })
}
