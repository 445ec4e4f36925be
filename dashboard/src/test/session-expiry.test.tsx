import { QueryClientProvider } from '@tanstack/react-query'
import { createMemoryHistory, createRouter, RouterProvider } from '@tanstack/react-router'
import { act, render, screen, waitFor } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import { SessionProvider } from '@/auth/context'
import { routeTree } from '@/routeTree.gen'
import { apiError, fakeApi, json, testQueryClient, tokens } from '@/test/fake-api'

const CATALOG = { regions: [{ slug: 'nyc1', name: 'New York 1' }], postgres_versions: [{ version: '18', image: 'pg:18' }],
  sizes: [{ slug: 'db-s-1vcpu-2gb', vcpu: 1, memory_gb: 2 }], storage_gb: { min: 10, max: 100 }, instances: { min: 1, max: 9 } }

describe('a session that ends mid-form', () => {
  it('returns to the login page, and after signing in the form is as it was', async () => {
    const api = fakeApi({
      // Restored on load; the next renewal (its timer is session.test.ts's business) is refused.
      'POST /v1/auth/refresh': [() => json(200, tokens(900)), () => apiError(401, 'unauthorized', 'refresh token expired')],
      'POST /v1/auth/login': () => json(200, tokens(900)),
      'GET /v1/orgs': () => json(200, { items: [{ id: 'org_1', name: 'Analytical', role: 'owner' }] }),
      'GET /v1/catalog': () => json(200, CATALOG),
    })
    const queryClient = testQueryClient()
    const router = createRouter({ routeTree, history: createMemoryHistory({ initialEntries: ['/orgs/org_1/clusters/new'] }), context: { queryClient } })
    void api.session.restore()
    render(
      <SessionProvider session={api.session}>
        <QueryClientProvider client={queryClient}><RouterProvider router={router} /></QueryClientProvider>
      </SessionProvider>,
    )
    await userEvent.click(await screen.findByLabelText('Cluster name'))
    await userEvent.paste('analytics')
    await userEvent.click(screen.getByLabelText('IP allow list'))
    await userEvent.paste('203.0.113.0/24')

    await act(() => api.session.refresh())
    expect(await screen.findByText(/Your session ended/)).toBeInTheDocument()
    expect(router.state.location.pathname).toBe('/login')
    await userEvent.type(screen.getByLabelText('E-mail'), 'ada@example.com')
    await userEvent.type(screen.getByLabelText('Password'), 'correct horse battery')
    await userEvent.click(screen.getByRole('button', { name: 'Sign in' }))

    await waitFor(() => expect(router.state.location.pathname).toBe('/orgs/org_1/clusters/new'))
    expect(await screen.findByLabelText('Cluster name')).toHaveValue('analytics')
    expect(screen.getByLabelText('IP allow list')).toHaveValue('203.0.113.0/24')
  })
})
