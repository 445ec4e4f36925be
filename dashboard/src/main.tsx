import { QueryClient, QueryClientProvider } from '@tanstack/react-query'
import { createRouter, RouterProvider } from '@tanstack/react-router'
import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { ApiError } from './api/errors'
import { SessionProvider } from './auth/context'
import { Session } from './auth/session'
import './index.css'
import { routeTree } from './routeTree.gen'

const session = new Session({ baseUrl: import.meta.env.VITE_API_URL })
const queryClient = new QueryClient({
  defaultOptions: {
    queries: {
      // A 4xx will answer the same again; other failures (network, 5xx) are retried twice with backoff.
      retry: (failures, error) => !(error instanceof ApiError && error.status >= 400 && error.status < 500) && failures < 2,
      staleTime: 5_000,
    },
  },
})
// Another user may sign in next: nothing of this one's stays cached.
session.subscribe(() => {
  if (session.getState().status === 'signed-out') queryClient.clear()
})
const router = createRouter({ routeTree, context: { queryClient }, defaultPreload: 'intent', scrollRestoration: true })

declare module '@tanstack/react-router' {
  interface Register {
    router: typeof router
  }
}

void session.restore()

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SessionProvider session={session}>
      <QueryClientProvider client={queryClient}>
        <RouterProvider router={router} />
      </QueryClientProvider>
    </SessionProvider>
  </StrictMode>,
)
