import { describe, expect, it } from 'vitest'
import type { Series } from '@/queries/metrics'
import { CHARTS, chartRows } from './metric-charts'

const empty = { avg: null, max: null }
const point = (start: number, cpu: number | null) => ({
  start, cpu_percent: { avg: cpu, max: cpu === null ? null : cpu + 5 }, memory_percent: empty, connections: empty,
  connections_percent: empty, transactions_per_second: empty, storage_used_gb: { last: null }, storage_used_percent: { last: null },
  database_size_gb: { last: null }, replication_lag_seconds: { max: null },
})

describe('chart rows', () => {
  it('keep a bucket without samples as null (a gap), one row per bucket, oldest first', () => {
    const series = { window: '1h', bucket_seconds: 60, start: 0, end: 180, units: {}, storage_gb: 20,
      points: [point(0, 10), point(60, null), point(120, 0)] } as Series
    const cpu = CHARTS.find((c) => c.title === 'CPU and memory')!
    expect(chartRows(cpu, series)).toEqual([
      { at: 0, 'CPU avg': 10, 'CPU max': 15, 'Memory avg': null },
      { at: 60_000, 'CPU avg': null, 'CPU max': null, 'Memory avg': null },
      { at: 120_000, 'CPU avg': 0, 'CPU max': 5, 'Memory avg': null },
    ])
  })
})
