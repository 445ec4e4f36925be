import type { components } from '@/api/schema.gen'

type Schemas = components['schemas']
// The document states cross-field rules as `anyOf` branches beside the properties (min_instances ≤ max_instances;
// storage autoscaling on needs max_gb), which openapi-typescript renders as a union with those branches: these are
// the objects themselves.
type AutoscalingPolicy = Extract<Schemas['AutoscalingPolicy'], { min_instances: number }>
type StorageAutoscaling = Exclude<Schemas['StorageAutoscaling'], { enabled: false } | { max_gb: unknown }>

/** A cluster's policy, as the object it is. */
export function policyOf(value: Schemas['AutoscalingPolicy'] | null | undefined): AutoscalingPolicy | null {
  return value && typeof value.min_instances === 'number' ? (value as AutoscalingPolicy) : null
}
type StorageTiers = Schemas['StorageTiers']
type S3Target = Schemas['S3Target']
/** The fields the API's errors name under `autoscaling` and `storage_tiers`, which their inputs show (ErrorNotice's `shownFields`). */
export const AUTOSCALING_FIELDS = ['autoscaling', 'autoscaling.*']
export const TIER_FIELDS = ['storage_tiers', 'storage_tiers.*']

type Tier = 'cold' | 'frozen'
export const TIERS: Tier[] = ['cold', 'frozen']

/** What the autoscaling inputs hold: the policy with every part present (the API's defaults, README "Autoscaling"). */
export type AutoscalingForm = {
  on: boolean
  min_instances: number
  max_instances: number
  scale_up: { cpu_percent: number; connections_percent: number; for_seconds: number }
  scale_down: { cpu_percent: number; connections_percent: number; for_seconds: number }
  cooldown_seconds: number
  storage: { enabled: boolean; threshold_percent: number; increment_percent: number; max_gb: number }
}

export function autoscalingForm(value: Schemas['AutoscalingPolicy'] | null | undefined, { instances, storageGb }: { instances: number; storageGb: number }): AutoscalingForm {
  const policy = policyOf(value)
  const storage = policy?.storage as StorageAutoscaling | undefined
  return {
    on: Boolean(policy),
    min_instances: policy?.min_instances ?? 1,
    max_instances: policy?.max_instances ?? Math.max(instances, 3),
    scale_up: { cpu_percent: 75, connections_percent: 80, for_seconds: 120, ...policy?.scale_up },
    scale_down: { cpu_percent: 25, connections_percent: 30, for_seconds: 600, ...policy?.scale_down },
    cooldown_seconds: policy?.cooldown_seconds ?? 300,
    storage: {
      threshold_percent: storage?.threshold_percent ?? 80,
      increment_percent: storage?.increment_percent ?? 25,
      enabled: storage?.enabled ?? false,
      max_gb: storage?.max_gb ?? storageGb * 2,
    },
  }
}

/** The policy to send: null when autoscaling is off; storage autoscaling only when asked for (it cannot be undone). */
export function autoscalingPolicy(form: AutoscalingForm): AutoscalingPolicy | null {
  if (!form.on) return null
  const { on: _on, storage, ...instances } = form
  return { ...instances, enabled: true, ...(storage.enabled ? { storage } : {}) }
}

/** A storage tier's inputs; the secret access key is kept apart (never in a draft). */
type TierForm = Omit<S3Target, 'secret_access_key' | 'prefix'> & { on: boolean; prefix: string }
export type TiersForm = Record<Tier, TierForm>
export type TierSecrets = Record<Tier, string>

export function tiersForm(tiers: Partial<Record<Tier, Omit<S3Target, 'secret_access_key'> | null>> | null | undefined): TiersForm {
  const one = (tier: Tier): TierForm => {
    const target = tiers?.[tier]
    return { on: Boolean(target), endpoint: target?.endpoint ?? '', bucket: target?.bucket ?? '', region: target?.region ?? '',
      prefix: target?.prefix ?? '', access_key_id: target?.access_key_id ?? '' }
  }
  return { cold: one('cold'), frozen: one('frozen') }
}

export function storageTiers(form: TiersForm, secrets: TierSecrets): StorageTiers | null {
  const tiers: StorageTiers = {}
  for (const tier of TIERS) {
    const { on: _on, prefix, ...target } = form[tier]
    if (form[tier].on) tiers[tier] = { ...target, ...(prefix ? { prefix } : {}), secret_access_key: secrets[tier] }
  }
  return Object.keys(tiers).length ? tiers : null
}

export function allowlist(text: string): string[] {
  return text.split(/[\s,]+/).map((line) => line.trim()).filter(Boolean)
}
