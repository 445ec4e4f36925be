import { fieldError } from '@/api/errors'
import { Checkbox, Field, Input, NumberInput, Textarea } from '@/ui/field'
import { TIERS, type AutoscalingForm, type TierSecrets, type TiersForm } from './policy'

export function AutoscalingFields({ value, onChange, error, bounds }: {
  value: AutoscalingForm
  onChange: (value: AutoscalingForm) => void
  error: unknown
  bounds: { instances: { min: number; max: number }; storage: { min: number; max: number } }
}) {
  const set = (patch: Partial<AutoscalingForm>) => onChange({ ...value, ...patch })
  const number = (label: string, field: string, current: number, update: (n: number) => void, range?: { min: number; max: number }, hint?: string) => (
    <Field label={label} hint={hint} error={fieldError(error, `autoscaling.${field}`)}>
      {(c) => <NumberInput {...c} {...range} value={current} onChange={update} />}
    </Field>
  )
  return (
    <fieldset className="space-y-4">
      <legend className="sr-only">Autoscaling</legend>
      <Checkbox label="Autoscale instances" hint="Add or remove replicas from CPU and connection use, within the range you set."
        checked={value.on} onChange={(e) => set({ on: e.target.checked })} />
      {fieldError(error, 'autoscaling') && <p className="text-xs font-medium text-red-700">{fieldError(error, 'autoscaling')}</p>}
      {value.on && (
        <div className="space-y-4 border-l-2 border-zinc-200 pl-4">
          <div className="grid gap-4 sm:grid-cols-3">
            {number('Minimum instances', 'min_instances', value.min_instances, (n) => set({ min_instances: n }), bounds.instances)}
            {number('Maximum instances', 'max_instances', value.max_instances, (n) => set({ max_instances: n }), bounds.instances)}
            {number('Cooldown (s)', 'cooldown_seconds', value.cooldown_seconds, (n) => set({ cooldown_seconds: n }), { min: 60, max: 86400 })}
          </div>
          {(['scale_up', 'scale_down'] as const).map((rule) => (
            <div key={rule} className="grid gap-4 sm:grid-cols-3">
              {number(`${rule === 'scale_up' ? 'Scale up' : 'Scale down'} at CPU %`, `${rule}.cpu_percent`, value[rule].cpu_percent,
                (n) => set({ [rule]: { ...value[rule], cpu_percent: n } }), { min: 1, max: 100 })}
              {number(`${rule === 'scale_up' ? 'Scale up' : 'Scale down'} at connections %`, `${rule}.connections_percent`, value[rule].connections_percent,
                (n) => set({ [rule]: { ...value[rule], connections_percent: n } }), { min: 1, max: 100 })}
              {number(`${rule === 'scale_up' ? 'Scale up' : 'Scale down'} after (s)`, `${rule}.for_seconds`, value[rule].for_seconds,
                (n) => set({ [rule]: { ...value[rule], for_seconds: n } }), { min: 60, max: rule === 'scale_up' ? 3600 : 86400 })}
            </div>
          ))}
          <Checkbox label="Grow storage automatically" hint="Storage only ever grows: this cannot be undone."
            checked={value.storage.enabled} onChange={(e) => set({ storage: { ...value.storage, enabled: e.target.checked } })} />
          {value.storage.enabled && (
            <div className="grid gap-4 sm:grid-cols-3">
              {number('Grow at used %', 'storage.threshold_percent', value.storage.threshold_percent,
                (n) => set({ storage: { ...value.storage, threshold_percent: n } }), { min: 50, max: 99 })}
              {number('Grow by %', 'storage.increment_percent', value.storage.increment_percent,
                (n) => set({ storage: { ...value.storage, increment_percent: n } }), { min: 5, max: 100 })}
              {number('Up to (GB)', 'storage.max_gb', value.storage.max_gb, (n) => set({ storage: { ...value.storage, max_gb: n } }), bounds.storage)}
            </div>
          )}
        </div>
      )}
    </fieldset>
  )
}

export function StorageTierFields({ value, secrets, onChange, onSecretsChange, error }: {
  value: TiersForm
  secrets: TierSecrets
  onChange: (value: TiersForm) => void
  onSecretsChange: (secrets: TierSecrets) => void
  error: unknown
}) {
  return (
    <fieldset className="space-y-4">
      <legend className="sr-only">Storage tiers</legend>
      {TIERS.map((tier) => {
        const target = value[tier]
        const set = (patch: Partial<typeof target>) => onChange({ ...value, [tier]: { ...target, ...patch } })
        const text = (label: string, field: 'endpoint' | 'bucket' | 'region' | 'prefix' | 'access_key_id', placeholder?: string) => (
          <Field label={label} error={fieldError(error, `storage_tiers.${tier}.${field}`)}>
            {(c) => <Input {...c} placeholder={placeholder} value={target[field]} onChange={(e) => set({ [field]: e.target.value })} />}
          </Field>
        )
        return (
          <div key={tier} className="space-y-3">
            <Checkbox label={`${tier === 'cold' ? 'Cold' : 'Frozen'} tier in your own S3 bucket`}
              checked={target.on} onChange={(e) => set({ on: e.target.checked })} />
            {target.on && (
              <div className="grid gap-4 border-l-2 border-zinc-200 pl-4 sm:grid-cols-2">
                {text('Endpoint', 'endpoint', 'https://s3.example.com')}
                {text('Bucket', 'bucket')}
                {text('Bucket region', 'region', 'us-east-1')}
                {text('Prefix (optional)', 'prefix')}
                {text('Access key id', 'access_key_id')}
                <Field label="Secret access key" error={fieldError(error, `storage_tiers.${tier}.secret_access_key`)}>
                  {(c) => <Input {...c} type="password" autoComplete="off" value={secrets[tier]}
                    onChange={(e) => onSecretsChange({ ...secrets, [tier]: e.target.value })} />}
                </Field>
              </div>
            )}
          </div>
        )
      })}
    </fieldset>
  )
}

export function AllowlistField({ value, onChange, error }: { value: string; onChange: (value: string) => void; error: unknown }) {
  return (
    <Field label="IP allow list" hint="One address or CIDR range per line (e.g. 203.0.113.0/24). Leave empty for no restriction."
      error={fieldError(error, 'ip_allowlist', { nested: true })}>
      {(c) => <Textarea {...c} rows={3} value={value} onChange={(e) => onChange(e.target.value)} spellCheck={false} />}
    </Field>
  )
}
