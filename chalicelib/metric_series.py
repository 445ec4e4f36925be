"""Metric series for users' charts: samples fold into rollups as they arrive (`record`), and a window is read
back as a fixed number of buckets (`series`), so one read costs one Query of at most the window's buckets
however many samples the cluster ever sent.

Each window has its own bucket size and rollups of that size: 1h is 60 buckets of 1 min, 24h 96 of 15 min,
7d 168 of 1 h. Buckets are aligned to multiples of their size on the API's clock; the newest is the one now
is in (still filling). A rollup expires one bucket after its window stops showing it. A sample at or before
the newest one already folded into its bucket is not folded again, so a batch sent twice counts once (and a
sample arriving after a newer one of its bucket is dropped from that bucket).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from chalicelib import retrying
from chalicelib.shapes import Out
from chalicelib.store import metric_records
from chalicelib.store.cluster_records import Cluster, Sample
from chalicelib.store.metric_records import Rollup, RollupKey

WindowName = Literal["1h", "24h", "7d"]
LAST = 3  # a rollup's aggregate of a metric is [sum, count, max, last]


@dataclass(frozen=True)
class Window:
    name: WindowName
    bucket_seconds: int
    points: int

    @property
    def seconds(self) -> int:
        return self.bucket_seconds * self.points


WINDOWS: dict[str, Window] = {w.name: w for w in (Window("1h", 60, 60), Window("24h", 900, 96), Window("7d", 3600, 168))}
# Seconds after a bucket's start at which its rollup expires: its window, and one bucket more.
EXPIRES = {w.bucket_seconds: w.seconds + w.bucket_seconds for w in WINDOWS.values()}

UNITS = {
    "connections": "connections",
    "connections_percent": "percent",
    "cpu_percent": "percent",
    "memory_percent": "percent",
    "storage_used_gb": "GB",
    "storage_used_percent": "percent",
    "database_size_gb": "GB",
    "transactions_per_second": "transactions/s",
    "replication_lag_seconds": "seconds",
}


def _values(sample: Sample) -> dict[str, int | float]:
    """The sample's values and those derived from it (connections as a percent of max_connections)."""
    values = dict(sample.values)
    if "connections" in values and values.get("max_connections"):
        values["connections_percent"] = 100 * values["connections"] / values["max_connections"]
    return values


def fold(rollup: Rollup, samples: Iterable[Sample]) -> bool:
    """Fold the samples newer than the rollup's newest into it; False if none was."""
    folded = False
    for sample in sorted(samples, key=lambda s: s.at):
        if rollup.last_at is not None and sample.at <= rollup.last_at:
            continue
        values = _values(sample)
        for name, given in values.items():
            value = float(given)
            total, count, largest, _ = rollup.aggregates.get(name) or (0.0, 0, value, given)
            rollup.aggregates[name] = [total + value, count + 1, max(largest, value), given]
        rollup.last_at, folded = sample.at, True
    return folded


def record(samples: list[Sample], *, at: int) -> None:
    """Fold the samples into the rollups of every bucket size: one BatchGetItem per 100 rollups touched, one
    TransactWriteItems per 100 changed (a batch of one sample per cluster touches 3 rollups per cluster).
    A sample skips the bucket sizes whose window no longer shows its bucket at `at` (an old backlog).

    Read and folded again when another writer changed a rollup meanwhile (`retrying.until_won`).
    """
    grouped: dict[RollupKey, list[Sample]] = {}
    for sample in samples:
        for bucket, expires in EXPIRES.items():
            if sample.at - sample.at % bucket + expires <= at:
                continue
            grouped.setdefault((sample.cluster_id, bucket, sample.at - sample.at % bucket), []).append(sample)
    def attempt() -> None:
        stored = metric_records.rollups(list(grouped))
        changed = [stored[key] for key, taken in grouped.items() if fold(stored[key], taken)]
        metric_records.put_rollups(changed, expires=EXPIRES)

    retrying.until_won(attempt, what="the metrics of these clusters")


# --- what a chart reads ---------------------------------------------------------------------------------------


# A bucket's aggregates of one series: null when the bucket has no sample of it (the API leaves out absent optional
# fields, but a gap in a chart is a value: these are dicts, whose nulls are kept).
AvgMax = dict[Literal["avg", "max"], float | None]
Last = dict[Literal["last"], float | None]
Max = dict[Literal["max"], float | None]


class PointOut(Out):
    """One bucket. Its aggregates: avg (mean of its samples), max (largest), last (newest); null when the bucket has
    no sample of that series, so charts show a gap."""

    start: int = Field(description="the bucket's start, epoch seconds; it covers [start, start + bucket_seconds)")
    connections: AvgMax = Field(description="open connections: average and maximum")
    connections_percent: AvgMax = Field(
        description="connections as a percent of max_connections, per sample: average and maximum")
    cpu_percent: AvgMax = Field(description="CPU use, percent of the cluster's vCPUs: average and maximum")
    memory_percent: AvgMax = Field(description="memory use, percent: average and maximum")
    storage_used_gb: Last = Field(description="storage used, GB: the last sample")
    storage_used_percent: Last = Field(description="storage used, percent of storage_gb: the last sample")
    database_size_gb: Last = Field(description="database size, GB: the last sample")
    transactions_per_second: AvgMax = Field(description="transactions per second: average and maximum")
    replication_lag_seconds: Max = Field(description="replication lag of the furthest replica, seconds: maximum")


class LatestOut(Out):
    at: int = Field(description="when the newest sample of the window was taken")
    values: dict[str, int | float] = Field(
        description="the newest value of each metric in the newest bucket (as the agent sent them, and connections_percent)")


class SeriesOut(Out):
    window: WindowName
    bucket_seconds: int = Field(description="the size of every bucket: 60 for 1h, 900 for 24h, 3600 for 7d")
    start: int = Field(description="the oldest bucket's start")
    end: int = Field(description="the newest bucket's end (the newest bucket is the one the API's clock is in)")
    units: dict[str, str] = Field(description="the unit of each series")
    max_connections: int | None = Field(
        default=None, description="the newest max_connections reported in the window (what connections_percent divides by); "
                    "absent when none was")
    storage_gb: int = Field(description="the cluster's storage size now (what storage_used_percent is of)")
    latest: LatestOut | None = Field(default=None, description="the newest sample of the window; absent when it has none")
    points: list[PointOut] = Field(description="exactly the window's number of buckets, oldest first")


def _point(start: int, rollup: Rollup | None) -> PointOut:
    def aggregate(name: str, kind: str) -> float | None:
        found = rollup.aggregates.get(name) if rollup is not None else None
        if found is None:
            return None
        total, count, largest, last = found
        return float({"avg": total / count, "max": largest, "last": last}[kind])

    def avg_max(name: str) -> AvgMax:
        return {"avg": aggregate(name, "avg"), "max": aggregate(name, "max")}

    return PointOut(
        start=start, connections=avg_max("connections"), connections_percent=avg_max("connections_percent"),
        cpu_percent=avg_max("cpu_percent"), memory_percent=avg_max("memory_percent"),
        storage_used_gb={"last": aggregate("storage_used_gb", "last")},
        storage_used_percent={"last": aggregate("storage_used_percent", "last")},
        database_size_gb={"last": aggregate("database_size_gb", "last")},
        transactions_per_second=avg_max("transactions_per_second"),
        replication_lag_seconds={"max": aggregate("replication_lag_seconds", "max")},
    )


def series(cluster: Cluster, window: Window, *, at: int) -> SeriesOut:
    """The window ending with the bucket `at` is in: one Query of at most `window.points` rollups."""
    bucket = window.bucket_seconds
    last = at - at % bucket
    first = last - (window.points - 1) * bucket
    found = {r.start: r for r in metric_records.rollups_of(cluster.id, bucket, first=first, last=last)}
    newest = max(found.values(), key=lambda r: r.last_at or 0, default=None)
    max_connections = next((int(r.aggregates["max_connections"][LAST]) for r in sorted(
        found.values(), key=lambda r: r.start, reverse=True) if "max_connections" in r.aggregates), None)
    return SeriesOut(
        window=window.name, bucket_seconds=bucket, start=first, end=last + bucket, units=UNITS,
        max_connections=max_connections, storage_gb=cluster.storage_gb,
        latest=(LatestOut(at=newest.last_at, values={name: a[LAST] for name, a in newest.aggregates.items()})
                if newest is not None and newest.last_at else None),
        points=[_point(start, found.get(start)) for start in range(first, last + bucket, bucket)],
    )
