import { useNavigate } from '@tanstack/react-router'
import { useCallback, useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import type { components } from '@/api/schema.gen'
import { useDraft } from '@/auth/drafts'
import { useCreateCluster, type ClusterCreate } from '@/queries/clusters'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { ErrorNotice } from '@/ui/error-notice'
import { Checkbox, Field, Input, NumberInput, Select } from '@/ui/field'
import { allowlist, AUTOSCALING_FIELDS, autoscalingForm, autoscalingPolicy, storageTiers, TIER_FIELDS, tiersForm, type TierSecrets } from './policy'
import { AllowlistField, AutoscalingFields, StorageTierFields } from './policy-fields'

type Catalog = components['schemas']['CatalogOut']

const SHOWN = ['name', 'region', 'postgres_version', 'size', 'instances', 'storage_gb', 'deletion_protection', 'ip_allowlist.*', ...AUTOSCALING_FIELDS, ...TIER_FIELDS]

export function CreateClusterForm({ orgId, catalog }: { orgId: string; catalog: Catalog }) {
  const navigate = useNavigate()
  const initial = useCallback(() => {
    const instances = Math.min(Math.max(2, catalog.instances.min), catalog.instances.max)
    const storage_gb = Math.max(catalog.storage_gb.min, Math.min(20, catalog.storage_gb.max))
    return {
      name: '',
      region: catalog.regions[0]?.slug ?? '',
      postgres_version: catalog.postgres_versions.at(-1)?.version ?? '',
      size: catalog.sizes[0]?.slug ?? '',
      instances,
      storage_gb,
      deletion_protection: false,
      allowlist: '',
      autoscaling: autoscalingForm(null, { instances, storageGb: storage_gb }),
      tiers: tiersForm(null),
    }
  }, [catalog])
  const [form, update, clearDraft] = useDraft(`create-cluster:${orgId}`, initial)
  const [secrets, setSecrets] = useState<TierSecrets>({ cold: '', frozen: '' })
  const create = useCreateCluster(orgId)

  const submit = (event: FormEvent) => {
    event.preventDefault()
    const body = {
      name: form.name.trim(),
      region: form.region,
      postgres_version: form.postgres_version,
      size: form.size,
      instances: form.instances,
      storage_gb: form.storage_gb,
      deletion_protection: form.deletion_protection,
      ip_allowlist: allowlist(form.allowlist),
      autoscaling: autoscalingPolicy(form.autoscaling),
      storage_tiers: storageTiers(form.tiers, secrets),
    } as ClusterCreate
    create.mutate(body, {
      onSuccess: ({ data }) => {
        clearDraft()
        void navigate({ to: '/orgs/$orgId/clusters/$clusterId', params: { orgId, clusterId: data.cluster.id } })
      },
    })
  }
  const error = create.error
  const bounds = { instances: catalog.instances, storage: catalog.storage_gb }
  return (
    <form onSubmit={submit} className="space-y-4" noValidate>
      <Card>
        <CardHeader title="Basics" />
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Cluster name" hint="Starts with a letter; lower-case letters, digits and hyphens; up to 40 characters." error={fieldError(error, 'name')} className="sm:col-span-2">
            {(c) => <Input {...c} required autoComplete="off" value={form.name} onChange={(e) => update({ name: e.target.value })} />}
          </Field>
          <Field label="Region" error={fieldError(error, 'region')}>
            {(c) => (
              <Select {...c} value={form.region} onChange={(e) => update({ region: e.target.value })}>
                {catalog.regions.map((r) => <option key={r.slug} value={r.slug}>{r.name} ({r.slug})</option>)}
              </Select>
            )}
          </Field>
          <Field label="PostgreSQL version" error={fieldError(error, 'postgres_version')}>
            {(c) => (
              <Select {...c} value={form.postgres_version} onChange={(e) => update({ postgres_version: e.target.value })}>
                {catalog.postgres_versions.map((v) => <option key={v.version} value={v.version}>PostgreSQL {v.version}</option>)}
              </Select>
            )}
          </Field>
        </div>
      </Card>
      <Card>
        <CardHeader title="Compute and storage" />
        <div className="grid gap-4 sm:grid-cols-[2fr_1fr_1fr]">
          <Field label="Size" error={fieldError(error, 'size')}>
            {(c) => (
              <Select {...c} value={form.size} onChange={(e) => update({ size: e.target.value })}>
                {catalog.sizes.map((s) => <option key={s.slug} value={s.slug}>{s.vcpu} vCPU · {s.memory_gb} GB ({s.slug})</option>)}
              </Select>
            )}
          </Field>
          <Field label="Instances" hint={`A primary and its replicas: ${catalog.instances.min}–${catalog.instances.max}.`} error={fieldError(error, 'instances')}>
            {(c) => <NumberInput {...c} min={catalog.instances.min} max={catalog.instances.max} value={form.instances}
            onChange={(n) => update({ instances: n })} />}
          </Field>
          <Field label="Storage (GB)" hint={`${catalog.storage_gb.min}–${catalog.storage_gb.max} GB; it can grow later, never shrink.`} error={fieldError(error, 'storage_gb')}>
            {(c) => <NumberInput {...c} min={catalog.storage_gb.min} max={catalog.storage_gb.max} value={form.storage_gb}
            onChange={(n) => update({ storage_gb: n })} />}
          </Field>
        </div>
      </Card>
      <Card>
        <CardHeader title="Network and safety" />
        <div className="space-y-4">
          <AllowlistField value={form.allowlist} onChange={(allowlist) => update({ allowlist })} error={error} />
          <Checkbox label="Deletion protection" hint="The cluster cannot be deleted until an admin turns this off."
            checked={form.deletion_protection} onChange={(e) => update({ deletion_protection: e.target.checked })} />
        </div>
      </Card>
      <Card>
        <CardHeader title="Autoscaling" />
        <AutoscalingFields value={form.autoscaling} onChange={(autoscaling) => update({ autoscaling })} error={error} bounds={bounds} />
      </Card>
      <Card>
        <CardHeader title="Storage tiers" description="Move cold and frozen data to S3-compatible buckets of your own." />
        <StorageTierFields value={form.tiers} secrets={secrets} onChange={(tiers) => update({ tiers })} onSecretsChange={setSecrets} error={error} />
      </Card>
      <ErrorNotice error={error} shownFields={SHOWN} />
      <div className="flex justify-end gap-2">
        <Button variant="ghost" onClick={() => { clearDraft(); create.reset() }}>Reset form</Button>
        <Button type="submit" disabled={create.isPending}>{create.isPending ? 'Creating…' : 'Create cluster'}</Button>
      </div>
    </form>
  )
}
