import type { UseQueryResult } from '@tanstack/react-query'
import { useCallback, useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import type { components } from '@/api/schema.gen'
import { useDraft } from '@/auth/drafts'
import { can, type Role } from '@/auth/permissions'
import { useUpdateCluster, type ClusterPatch, type Versioned } from '@/queries/clusters'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { Checkbox, Field, Input } from '@/ui/field'
import { allowlist, AUTOSCALING_FIELDS, autoscalingForm, autoscalingPolicy, storageTiers, TIER_FIELDS, tiersForm, type TierSecrets } from './policy'
import { AllowlistField, AutoscalingFields, StorageTierFields } from './policy-fields'
import { EditError } from './stale-notice'

type Catalog = components['schemas']['CatalogOut']
const SHOWN = ['name', 'ip_allowlist.*', 'deletion_protection', ...AUTOSCALING_FIELDS, ...TIER_FIELDS]
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

/**
 * The cluster's settings (PATCH). Only what differs from the cluster as it is now is sent, with the ETag of the
 * version the edit started from: a change made meanwhile answers 412, and loading the latest keeps the edit.
 */
export function SettingsForm({ orgId, query, current, catalog, role }: {
  orgId: string; query: UseQueryResult<Versioned>; current: Versioned; catalog: Catalog; role: Role
}) {
  const cluster = current.cluster
  const sizing = { instances: cluster.instances, storageGb: cluster.storage_gb }
  const initial = useCallback(() => ({
    etag: current.etag,
    name: current.cluster.name,
    allowlist: current.cluster.ip_allowlist.join('\n'),
    deletion_protection: current.cluster.deletion_protection,
    autoscaling: autoscalingForm(current.cluster.autoscaling, { instances: current.cluster.instances, storageGb: current.cluster.storage_gb }),
    replaceTiers: false,
    tiers: tiersForm(current.cluster.storage_tiers),
  }), [current])
  const [form, update, clearDraft] = useDraft(`cluster-settings:${cluster.id}`, initial)
  const [secrets, setSecrets] = useState<TierSecrets>({ cold: '', frozen: '' })
  const patch = useUpdateCluster(orgId, cluster.id)

  const body: ClusterPatch = {
    ...(form.name.trim() !== cluster.name ? { name: form.name.trim() } : {}),
    ...(!same(allowlist(form.allowlist), cluster.ip_allowlist) ? { ip_allowlist: allowlist(form.allowlist) } : {}),
    ...(form.deletion_protection !== cluster.deletion_protection ? { deletion_protection: form.deletion_protection } : {}),
    ...(!same(autoscalingPolicy(form.autoscaling), autoscalingPolicy(autoscalingForm(cluster.autoscaling, sizing)))
      ? { autoscaling: autoscalingPolicy(form.autoscaling) } : {}),
    ...(form.replaceTiers ? { storage_tiers: storageTiers(form.tiers, secrets) } : {}),
  }
  const changed = Object.keys(body).length > 0
  const submit = (event: FormEvent) => {
    event.preventDefault()
    patch.mutate({ body, etag: form.etag }, {
      onSuccess: () => {
        clearDraft()
        setSecrets({ cold: '', frozen: '' })
      },
    })
  }
  const reload = async () => {
    const latest = await query.refetch()
    if (latest.data) update({ etag: latest.data.etag })
    patch.reset()
  }
  const protectionLocked = cluster.deletion_protection && !can(role, 'deletion-protection:off')
  const error = patch.error
  return (
    <Card>
      <CardHeader title="Settings" />
      <form onSubmit={submit} className="space-y-5" noValidate>
        <Field label="Cluster name" error={fieldError(error, 'name')}>
          {(c) => <Input {...c} autoComplete="off" value={form.name} onChange={(e) => update({ name: e.target.value })} />}
        </Field>
        <AllowlistField value={form.allowlist} onChange={(value) => update({ allowlist: value })} error={error} />
        <Checkbox label="Deletion protection" checked={form.deletion_protection} disabled={protectionLocked}
          hint={protectionLocked ? 'Only an admin or owner can turn deletion protection off.' : 'While on, the cluster cannot be deleted.'}
          onChange={(e) => update({ deletion_protection: e.target.checked })} />
        <div>
          <h3 className="mb-3 text-sm font-semibold">Autoscaling</h3>
          <AutoscalingFields value={form.autoscaling} onChange={(autoscaling) => update({ autoscaling })} error={error}
            bounds={{ instances: catalog.instances, storage: catalog.storage_gb }} />
        </div>
        <div className="space-y-3">
          <h3 className="text-sm font-semibold">Storage tiers</h3>
          <Checkbox label="Replace the storage tiers" hint="The secret keys are never shown again: give them anew to keep a tier."
            checked={form.replaceTiers} onChange={(e) => update({ replaceTiers: e.target.checked })} />
          {form.replaceTiers && (
            <StorageTierFields value={form.tiers} secrets={secrets} onChange={(tiers) => update({ tiers })} onSecretsChange={setSecrets} error={error} />
          )}
        </div>
        <EditError error={error} shownFields={SHOWN} onReload={reload} />
        <div className="flex flex-wrap justify-end gap-2">
          <Button variant="ghost" disabled={!changed} onClick={clearDraft}>Discard changes</Button>
          <Button type="submit" disabled={!changed || patch.isPending}>{patch.isPending ? 'Saving…' : 'Save settings'}</Button>
        </div>
      </form>
    </Card>
  )
}
