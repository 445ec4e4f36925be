import { useNavigate } from '@tanstack/react-router'
import { useState, type FormEvent } from 'react'
import { useDeleteCluster, type Cluster } from '@/queries/clusters'
import { Button } from '@/ui/button'
import { Dialog, DialogContent, DialogTrigger } from '@/ui/dialog'
import { ErrorNotice } from '@/ui/error-notice'
import { Field, Input } from '@/ui/field'

/** Deleting asks for the cluster's name, typed; a protected cluster says what to do first. */
export function DeleteDialog({ orgId, cluster }: { orgId: string; cluster: Cluster }) {
  const [typed, setTyped] = useState('')
  const remove = useDeleteCluster(orgId, cluster.id)
  const navigate = useNavigate()
  const submit = (event: FormEvent) => {
    event.preventDefault()
    // Not mutate's own onSuccess: the dialog unmounts as the cluster turns `deleting`, and that callback would not run.
    remove.mutateAsync().then(() => navigate({ to: '/orgs/$orgId/clusters', params: { orgId } }), () => undefined)
  }
  return (
    <Dialog onOpenChange={() => { setTyped(''); remove.reset() }}>
      <DialogTrigger asChild><Button variant="danger">Delete cluster</Button></DialogTrigger>
      <DialogContent title={`Delete ${cluster.name}?`} description="Its servers stop and its data is removed. This cannot be undone.">
        {cluster.deletion_protection ? (
          <p className="text-sm text-zinc-700">Deletion protection is on. Turn it off in the cluster's settings first.</p>
        ) : (
          <form onSubmit={submit} className="space-y-4" noValidate>
            <Field label={<>Type <strong className="font-mono">{cluster.name}</strong> to confirm</>}>
              {(c) => <Input {...c} autoComplete="off" spellCheck={false} value={typed} onChange={(e) => setTyped(e.target.value)} />}
            </Field>
            <ErrorNotice error={remove.error} />
            <div className="flex justify-end">
              <Button type="submit" variant="danger" disabled={typed !== cluster.name || remove.isPending}>
                {remove.isPending ? 'Deleting…' : 'Delete this cluster'}
              </Button>
            </div>
          </form>
        )}
      </DialogContent>
    </Dialog>
  )
}
