import type { Series } from '@/queries/metrics'

type Point = Series['points'][number]
type Line = { label: string; value: (p: Point) => number | null | undefined; color: string }
export type Chart = { title: string; unit: string; lines: Line[]; limit?: (s: Series) => number | null | undefined }

export const CHARTS: Chart[] = [
  { title: 'CPU and memory', unit: '%', lines: [
    { label: 'CPU avg', value: (p) => p.cpu_percent.avg, color: '#0f766e' },
    { label: 'CPU max', value: (p) => p.cpu_percent.max, color: '#5eead4' },
    { label: 'Memory avg', value: (p) => p.memory_percent.avg, color: '#7c3aed' },
  ] },
  { title: 'Connections', unit: '', limit: (s) => s.max_connections, lines: [
    { label: 'avg', value: (p) => p.connections.avg, color: '#0369a1' },
    { label: 'max', value: (p) => p.connections.max, color: '#7dd3fc' },
  ] },
  { title: 'Transactions per second', unit: '/s', lines: [
    { label: 'avg', value: (p) => p.transactions_per_second.avg, color: '#b45309' },
    { label: 'max', value: (p) => p.transactions_per_second.max, color: '#fcd34d' },
  ] },
  { title: 'Storage used', unit: ' GB', limit: (s) => s.storage_gb, lines: [
    { label: 'used', value: (p) => p.storage_used_gb.last, color: '#be123c' },
  ] },
  { title: 'Replication lag', unit: ' s', lines: [
    { label: 'max', value: (p) => p.replication_lag_seconds.max, color: '#4d7c0f' },
  ] },
]

/**
 * One row per bucket of the window, oldest first, for recharts: a bucket without samples of a series holds null, which
 * the chart draws as a gap (connectNulls off), never as zero.
 */
export function chartRows(chart: Chart, series: Series): Record<string, number | null>[] {
  return series.points.map((point) => ({
    at: point.start * 1000,
    ...Object.fromEntries(chart.lines.map((line) => [line.label, line.value(point) ?? null])),
  }))
}
