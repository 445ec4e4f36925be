import { createFileRoute, redirect } from '@tanstack/react-router'

export const Route = createFileRoute('/_app/orgs/$orgId/')({
  beforeLoad: ({ params }) => {
    throw redirect({ to: '/orgs/$orgId/clusters', params })
  },
})
