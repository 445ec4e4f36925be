import { createFileRoute, Link } from '@tanstack/react-router'
import { CreateClusterForm } from '@/features/clusters/create-cluster-form'
import { useCatalog } from '@/queries/catalog'
import { ErrorNotice } from '@/ui/error-notice'

export const Route = createFileRoute('/_app/orgs/$orgId/clusters/new')({ component: NewClusterPage })

function NewClusterPage() {
  const { orgId } = Route.useParams()
  const catalog = useCatalog()
  return (
    <div className="mx-auto max-w-3xl space-y-4">
      <Link to="/orgs/$orgId/clusters" params={{ orgId }} className="text-sm text-zinc-600 hover:underline">← Clusters</Link>
      <h1 className="text-2xl font-semibold">Create a cluster</h1>
      <ErrorNotice error={catalog.error} />
      {catalog.data && <CreateClusterForm orgId={orgId} catalog={catalog.data} />}
    </div>
  )
}
