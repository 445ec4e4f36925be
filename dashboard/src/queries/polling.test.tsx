import { focusManager, QueryClientProvider } from '@tanstack/react-query'
import { renderHook } from '@testing-library/react'
import type { ReactNode } from 'react'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { SessionProvider } from '@/auth/context'
import { fakeApi, json, testQueryClient } from '@/test/fake-api'
import { useCluster, type Cluster } from './clusters'
import { clustersPollDelay, inProgress, pollDelay } from './polling'

const NOW = 1_800_000_000
const cluster = (patch: Partial<Cluster> = {}): Cluster => ({
  id: 'cls_1', org_id: 'org_1', name: 'main', region: 'nyc1', postgres_version: '18', size: 'db-s-1vcpu-2gb', instances: 2, storage_gb: 20,
  status: 'running', generation: 1, observed_generation: 1, ready_instances: 2, ip_allowlist: [], deletion_protection: false,
  created_at: NOW, updated_at: NOW, ...patch,
} as Cluster)

describe('how often a change is polled', () => {
  it('stops once the cluster is settled', () => {
    expect(inProgress(cluster())).toBe(false)
    expect(inProgress(cluster({ status: 'failed' }))).toBe(false)
    expect(pollDelay(false, NOW, NOW * 1000)).toBe(false)
    expect(clustersPollDelay([cluster(), cluster({ status: 'failed' })], NOW * 1000)).toBe(false)
  })

  it('goes on while a status moves or a generation is not yet observed', () => {
    for (const status of ['pending', 'provisioning', 'updating', 'degraded', 'deleting'] as const) {
      expect(inProgress(cluster({ status }))).toBe(true)
    }
    expect(inProgress(cluster({ generation: 2 }))).toBe(true)
  })

  it('backs off from every second to every 15 s as the change takes longer', () => {
    expect(pollDelay(true, NOW, NOW * 1000)).toBe(1000)
    expect(pollDelay(true, NOW, (NOW + 2) * 1000)).toBe(1000)
    expect(pollDelay(true, NOW, (NOW + 20) * 1000)).toBe(5000)
    expect(pollDelay(true, NOW, (NOW + 3600) * 1000)).toBe(15000)
    expect(pollDelay(true, NOW + 30, NOW * 1000)).toBe(1000)
  })

  it('follows the soonest of a list', () => {
    const moving = [cluster({ status: 'provisioning', updated_at: NOW - 40 }), cluster({ status: 'updating', updated_at: NOW - 8 }), cluster()]
    expect(clustersPollDelay(moving, NOW * 1000)).toBe(2000)
  })
})

describe('useCluster polling', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: NOW * 1000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  })
  afterEach(() => {
    vi.useRealTimers()
    focusManager.setFocused(undefined)
  })

  function watch(answers: Partial<Cluster>[]) {
    const api = fakeApi({ 'GET /v1/orgs/org_1/clusters/cls_1': answers.map((patch) => () => json(200, cluster({ updated_at: NOW, ...patch }), { ETag: '"1"' })) })
    const wrapper = ({ children }: { children: ReactNode }) => (
      <SessionProvider session={api.session}><QueryClientProvider client={testQueryClient()}>{children}</QueryClientProvider></SessionProvider>
    )
    const { result } = renderHook(() => useCluster('org_1', 'cls_1'), { wrapper })
    return { result, reads: () => api.sent('GET /v1/orgs/org_1/clusters/cls_1').length }
  }

  it('polls while provisioning and stops when running', async () => {
    const { result, reads } = watch([{ status: 'pending' }, { status: 'provisioning' }, { status: 'running' }])
    await vi.waitFor(() => expect(result.current.data?.cluster.status).toBe('pending'))
    await vi.advanceTimersByTimeAsync(1000)
    await vi.waitFor(() => expect(result.current.data?.cluster.status).toBe('provisioning'))
    await vi.advanceTimersByTimeAsync(1000)
    await vi.waitFor(() => expect(result.current.data?.cluster.status).toBe('running'))
    await vi.advanceTimersByTimeAsync(120_000)
    expect(reads()).toBe(3)
  })

  it('does not poll while the tab is hidden', async () => {
    const { result, reads } = watch([{ status: 'provisioning' }, { status: 'running' }])
    await vi.waitFor(() => expect(result.current.data?.cluster.status).toBe('provisioning'))
    focusManager.setFocused(false)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(reads()).toBe(1)
    focusManager.setFocused(true)
    await vi.advanceTimersByTimeAsync(1000)
    await vi.waitFor(() => expect(result.current.data?.cluster.status).toBe('running'))
  })
})
