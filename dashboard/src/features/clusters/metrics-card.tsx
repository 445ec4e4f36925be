import { useState } from 'react'
import { CartesianGrid, Line, LineChart, ReferenceLine, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts'
import { useMetrics, WINDOWS, type MetricWindow, type Series } from '@/queries/metrics'
import { Card, CardHeader } from '@/ui/card'
import { ErrorNotice } from '@/ui/error-notice'
import { Tabs } from '@/ui/tabs'
import { CHARTS, chartRows, type Chart } from './metric-charts'

const LATEST: Record<string, [string, string]> = {
  cpu_percent: ['CPU', ' %'], memory_percent: ['memory', ' %'], connections: ['connections', ''], storage_used_gb: ['storage used', ' GB'],
}
const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 })

function tick(window: MetricWindow) {
  return (at: number) => new Date(at).toLocaleString(undefined, window === '7d'
    ? { weekday: 'short', hour: '2-digit' } : { hour: '2-digit', minute: '2-digit' })
}

/** The cluster's metric series (1h, 24h, 7d): a bucket without samples is a gap in its line, never a zero. */
export function MetricsCard({ orgId, clusterId }: { orgId: string; clusterId: string }) {
  const [window, setWindow] = useState<MetricWindow>('1h')
  const metrics = useMetrics(orgId, clusterId, window)
  const series = metrics.data
  return (
    <Card aria-labelledby="metrics-title">
      <CardHeader title={<span id="metrics-title">Metrics</span>} />
      <Tabs label="Metrics window" tabs={WINDOWS} value={window} onChange={setWindow}>
        <ErrorNotice error={metrics.error} />
        {series && (
          <>
            <Latest series={series} />
            <div className="mt-4 grid gap-6 md:grid-cols-2">
              {CHARTS.map((chart) => <MetricChart key={chart.title} chart={chart} series={series} />)}
            </div>
          </>
        )}
      </Tabs>
    </Card>
  )
}

function Latest({ series }: { series: Series }) {
  if (!series.latest) return <p className="text-sm text-zinc-600">No samples in this window yet: the agent reports every 30 seconds.</p>
  const values = series.latest.values
  const shown = Object.entries(LATEST).filter(([name]) => values[name] !== undefined)
  return (
    <p data-testid="metrics-latest" className="text-sm text-zinc-600">
      Latest sample {new Date(series.latest.at * 1000).toLocaleTimeString()}:{' '}
      {shown.map(([name, [label, unit]]) => `${label} ${number.format(values[name]!)}${unit}`).join(' · ')}
    </p>
  )
}

function MetricChart({ chart, series }: { chart: Chart; series: Series }) {
  const rows = chartRows(chart, series)
  const limit = chart.limit?.(series)
  return (
    <figure>
      <figcaption className="mb-2 flex flex-wrap items-baseline gap-x-3 text-sm">
        <span className="font-medium text-zinc-700">{chart.title}</span>
        {chart.lines.map((line) => (
          <span key={line.label} className="inline-flex items-center gap-1 text-xs text-zinc-500">
            <span aria-hidden className="inline-block h-0.5 w-3" style={{ backgroundColor: line.color }} />{line.label}
          </span>
        ))}
      </figcaption>
      <div className="h-40" role="img" aria-label={`${chart.title} over the last ${series.window}`}>
        <ResponsiveContainer width="100%" height="100%">
          <LineChart data={rows} margin={{ top: 4, right: 8, bottom: 0, left: -16 }}>
            <CartesianGrid stroke="#e4e4e7" vertical={false} />
            <XAxis dataKey="at" type="number" scale="time" domain={[series.start * 1000, series.end * 1000]}
              tickFormatter={tick(series.window)} tick={{ fontSize: 11, fill: '#71717a' }} minTickGap={24} />
            <YAxis tick={{ fontSize: 11, fill: '#71717a' }} tickFormatter={(v: number) => number.format(v)} width={48} />
            <Tooltip labelFormatter={(at) => new Date(Number(at)).toLocaleString()}
              formatter={(value) => (value == null ? 'no data' : `${number.format(Number(value))}${chart.unit}`)} />
            {limit != null && <ReferenceLine y={limit} stroke="#a1a1aa" strokeDasharray="4 4" />}
            {chart.lines.map((line) => (
              <Line key={line.label} dataKey={line.label} name={line.label} stroke={line.color} dot={{ r: 1.5, strokeWidth: 0, fill: line.color }}
                strokeWidth={1.5} isAnimationActive={false} connectNulls={false} />
            ))}
          </LineChart>
        </ResponsiveContainer>
      </div>
    </figure>
  )
}
