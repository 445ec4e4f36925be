import { QueryClient } from '@tanstack/react-query'
import { screen, waitFor } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import { useCluster } from '@/queries/clusters'
import { apiError, fakeApi, json, renderWithSession, testQueryClient } from '@/test/fake-api'
import { ScaleDialog } from './scale-dialog'

const CATALOG = { regions: [{ slug: 'nyc1', name: 'New York 1' }], postgres_versions: [{ version: '18', image: 'pg:18' }],
  sizes: [{ slug: 'db-s-1vcpu-2gb', vcpu: 1, memory_gb: 2 }], storage_gb: { min: 10, max: 100 }, instances: { min: 1, max: 9 } }
const CLUSTER = { id: 'cls_1', org_id: 'org_1', name: 'main', region: 'nyc1', postgres_version: '18', size: 'db-s-1vcpu-2gb', instances: 2,
  storage_gb: 20, status: 'running', generation: 1, observed_generation: 1, ready_instances: 2, ip_allowlist: [], deletion_protection: false,
  created_at: 1, updated_at: 1 }
const GET = 'GET /v1/orgs/org_1/clusters/cls_1'
const SCALE = 'POST /v1/orgs/org_1/clusters/cls_1/scale'

function Page() {
  const query = useCluster('org_1', 'cls_1')
  return query.data ? <ScaleDialog orgId="org_1" query={query} current={query.data} catalog={CATALOG} /> : null
}

describe('scaling with If-Match', () => {
  it('sends the ETag it opened on; a 412 says the cluster changed, and loading the latest lets the user apply again', async () => {
    const api = fakeApi({
      [GET]: [() => json(200, CLUSTER, { ETag: '"7"' }), () => json(200, { ...CLUSTER, status_message: 'someone renamed it' }, { ETag: '"8"' })],
      [SCALE]: [() => apiError(412, 'precondition_failed', 'the cluster changed since you read it (ETag mismatch)'),
        () => json(202, { cluster: { ...CLUSTER, instances: 3, generation: 2, status: 'updating' },
          operation: { id: 'op_2', cluster_id: 'cls_1', kind: 'scale', status: 'pending', actor: 'user:usr_ada', generation: 2, created_at: 2, updated_at: 2 } },
        { ETag: '"9"' })],
    })
    const queryClient: QueryClient = testQueryClient()
    renderWithSession(<Page />, api.session, queryClient)
    await userEvent.click(await screen.findByRole('button', { name: 'Scale' }))
    const instances = screen.getByLabelText('Instances')
    await userEvent.clear(instances)
    await userEvent.type(instances, '3')
    await userEvent.click(screen.getByRole('button', { name: 'Apply' }))

    expect(await screen.findByRole('alert')).toHaveTextContent('This cluster changed since you loaded it')
    expect(screen.getByTestId('request-id')).toHaveTextContent('req-precondition_failed')
    expect(api.sent(SCALE)[0]!.headers.get('If-Match')).toBe('"7"')
    expect(await api.sent(SCALE)[0]!.json()).toEqual({ instances: 3 })

    await userEvent.click(screen.getByRole('button', { name: 'Load latest version' }))
    await waitFor(() => expect(screen.queryByRole('alert')).not.toBeInTheDocument())
    expect(screen.getByLabelText('Instances')).toHaveValue(3)
    await userEvent.click(screen.getByRole('button', { name: 'Apply' }))
    await waitFor(() => expect(api.sent(SCALE)).toHaveLength(2))
    expect(api.sent(SCALE)[1]!.headers.get('If-Match')).toBe('"8"')
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument())
    expect(queryClient.getQueryData(['orgs', 'org_1', 'clusters', 'cls_1'])).toMatchObject({ etag: '"9"', cluster: { instances: 3 } })
  })
})
