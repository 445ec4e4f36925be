import { QueryClientProvider } from '@tanstack/react-query'
import { act, renderHook } from '@testing-library/react'
import type { ReactNode } from 'react'
import { describe, expect, it } from 'vitest'
import { SessionProvider } from '@/auth/context'
import { useCreateCluster, type ClusterCreate } from '@/queries/clusters'
import { apiError, fakeApi, json, testQueryClient } from '@/test/fake-api'
import { IdempotencyKeys } from './idempotency'

const BODY: ClusterCreate = { name: 'main', region: 'nyc1', postgres_version: '18', size: 'db-s-1vcpu-2gb', instances: 2, storage_gb: 20 }
const CREATE = 'POST /v1/orgs/org_1/clusters'

function accepted() {
  const cluster = { id: 'cls_1', org_id: 'org_1', name: 'main', region: 'nyc1', postgres_version: '18', size: 'db-s-1vcpu-2gb', instances: 2,
    storage_gb: 20, status: 'pending', generation: 1, observed_generation: 0, ready_instances: 0, ip_allowlist: [], deletion_protection: false,
    created_at: 1, updated_at: 1 }
  return json(202, { cluster, operation: { id: 'op_1', cluster_id: 'cls_1', kind: 'create', status: 'pending', actor: 'user:usr_ada', generation: 1, created_at: 1, updated_at: 1 } }, { ETag: '"1"' })
}

function setup(responses: (() => Response)[]) {
  const api = fakeApi({ [CREATE]: responses })
  const wrapper = ({ children }: { children: ReactNode }) => (
    <SessionProvider session={api.session}><QueryClientProvider client={testQueryClient()}>{children}</QueryClientProvider></SessionProvider>
  )
  const { result } = renderHook(() => useCreateCluster('org_1'), { wrapper })
  const keys = () => api.sent(CREATE).map((r) => r.headers.get('Idempotency-Key'))
  return { result, keys }
}

describe('Idempotency-Key', () => {
  it('is the same on a retry of the same submit, and new after a success', async () => {
    const { result, keys } = setup([() => apiError(500, 'internal_error', 'boom'), accepted, accepted])
    await act(() => result.current.mutateAsync(BODY).catch(() => undefined))
    await act(() => result.current.mutateAsync(BODY))
    await act(() => result.current.mutateAsync(BODY))
    const [first, retry, next] = keys()
    expect(first).toMatch(/^[0-9a-f-]{36}$/)
    expect(retry).toBe(first)
    expect(next).not.toBe(first)
  })

  it('is shared by a double click', async () => {
    const { result, keys } = setup([accepted])
    await act(() => Promise.all([result.current.mutateAsync(BODY), result.current.mutateAsync(BODY)]))
    expect(keys()).toHaveLength(2)
    expect(new Set(keys()).size).toBe(1)
  })

  it('changes with the body: another body is another request', () => {
    const keys = new IdempotencyKeys()
    const first = keys.keyFor(BODY)
    expect(keys.keyFor({ ...BODY })).toBe(first)
    expect(keys.keyFor({ ...BODY, instances: 3 })).not.toBe(first)
  })
})
