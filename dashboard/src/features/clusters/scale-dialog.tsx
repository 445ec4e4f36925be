import type { UseQueryResult } from '@tanstack/react-query'
import { useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import type { components } from '@/api/schema.gen'
import { useScaleCluster, type ScaleRequest, type Versioned } from '@/queries/clusters'
import { Button } from '@/ui/button'
import { Dialog, DialogContent, DialogTrigger } from '@/ui/dialog'
import { Field, NumberInput, Select } from '@/ui/field'
import { EditError } from './stale-notice'

type Catalog = components['schemas']['CatalogOut']

export function ScaleDialog({ orgId, query, current, catalog }: {
  orgId: string; query: UseQueryResult<Versioned>; current: Versioned; catalog: Catalog
}) {
  const [open, setOpen] = useState(false)
  return (
    <Dialog open={open} onOpenChange={setOpen}>
      <DialogTrigger asChild><Button variant="secondary">Scale</Button></DialogTrigger>
      {open && <ScaleForm orgId={orgId} query={query} current={current} catalog={catalog} onDone={() => setOpen(false)} />}
    </Dialog>
  )
}

function ScaleForm({ orgId, query, current, catalog, onDone }: {
  orgId: string; query: UseQueryResult<Versioned>; current: Versioned; catalog: Catalog; onDone: () => void
}) {
  // The version the dialog opened on: its ETag goes out as If-Match, so a change made meanwhile answers 412.
  const [etag, setEtag] = useState(current.etag)
  const cluster = current.cluster
  const [form, setForm] = useState({ instances: cluster.instances, size: cluster.size, storage_gb: cluster.storage_gb })
  const scale = useScaleCluster(orgId, cluster.id)
  const reload = async () => {
    const latest = await query.refetch()
    if (latest.data) setEtag(latest.data.etag)
    scale.reset()
  }
  const changes = {
    ...(form.instances !== cluster.instances ? { instances: form.instances } : {}),
    ...(form.size !== cluster.size ? { size: form.size } : {}),
    ...(form.storage_gb !== cluster.storage_gb ? { storage_gb: form.storage_gb } : {}),
  } as ScaleRequest
  const submit = (event: FormEvent) => {
    event.preventDefault()
    scale.mutate({ body: changes, etag }, { onSuccess: onDone })
  }
  return (
    <DialogContent title={`Scale ${cluster.name}`} description="Instances and size change in place; storage only grows.">
      <form onSubmit={submit} className="space-y-4" noValidate>
        <Field label="Instances" hint={`${catalog.instances.min}–${catalog.instances.max}`} error={fieldError(scale.error, 'instances')}>
          {(c) => <NumberInput {...c} min={catalog.instances.min} max={catalog.instances.max} value={form.instances}
            onChange={(n) => setForm({ ...form, instances: n })} />}
        </Field>
        <Field label="Size" error={fieldError(scale.error, 'size')}>
          {(c) => (
            <Select {...c} value={form.size} onChange={(e) => setForm({ ...form, size: e.target.value })}>
              {catalog.sizes.map((s) => <option key={s.slug} value={s.slug}>{s.vcpu} vCPU · {s.memory_gb} GB ({s.slug})</option>)}
            </Select>
          )}
        </Field>
        <Field label="Storage (GB)" hint={`From ${cluster.storage_gb} up to ${catalog.storage_gb.max} GB`} error={fieldError(scale.error, 'storage_gb')}>
          {(c) => <NumberInput {...c} min={cluster.storage_gb} max={catalog.storage_gb.max} value={form.storage_gb}
            onChange={(n) => setForm({ ...form, storage_gb: n })} />}
        </Field>
        <EditError error={scale.error} shownFields={['instances', 'size', 'storage_gb']} onReload={reload} />
        <div className="flex justify-end gap-2">
          <Button type="submit" disabled={scale.isPending || Object.keys(changes).length === 0}>{scale.isPending ? 'Scaling…' : 'Apply'}</Button>
        </div>
      </form>
    </DialogContent>
  )
}
