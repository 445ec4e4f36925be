"""A cluster's metrics from its real servers: what the primary answers, its processes, its files.

Each instance stands for a pod of the size (its vCPUs, its memory, its own volume of `storage_gb`), so the
resource figures are those of the busiest instance, as the cnpg driver reports them: adding replicas neither
inflates them nor makes the autoscaler chase its own replicas. Rates (CPU, transactions per second) are measured
between two samples of the same cluster, so the first sample has none. Units:
- `cpu_percent`: CPU time of the busiest instance's server processes (its postmaster and children) over the wall
  time since the previous sample, as a percent of the size's `vcpu` cores.
- `memory_percent`: the largest instance's summed RSS as a percent of `memory_gb` GiB (RSS counts shared buffers
  once per process, so it overstates; it is what the size's memory limit would count).
- `storage_used_gb`: bytes on disk of the fullest instance's data directory, divided by the driver's
  `storage_bytes_per_gb`; `storage_used_percent` of `storage_gb`.
- `database_size_gb`: pg_database_size of the app database in GiB (2**30 bytes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from orochi_agent.drivers.local.sql import Activity
from orochi_agent.models import MetricValues

GIB = 2**30


@dataclass(frozen=True)
class _Sample:
    at: float
    transactions: int | None
    cpu_seconds: dict[str, dict[tuple[int, float], float]]  # by instance: each process's CPU seconds


@dataclass(frozen=True)
class Measured:
    """One server of the cluster, to measure: its processes and its data directory."""

    name: str
    processes: list[psutil.Process]
    data_dir: Path


@dataclass(frozen=True)
class Size:
    vcpu: int
    memory_gb: int
    storage_gb: int


class Sampler:
    """Keeps each cluster's previous sample (in memory) to turn counters into rates."""

    def __init__(self, *, storage_bytes_per_gb: int) -> None:
        self.storage_bytes_per_gb = storage_bytes_per_gb
        self._previous: dict[str, _Sample] = {}
        self._lock = threading.Lock()

    def forget(self, cluster_id: str) -> None:
        with self._lock:
            self._previous.pop(cluster_id, None)

    def sample(self, cluster_id: str, *, activity: Activity | None, lag_seconds: float | None,
               servers: Iterable[Measured], size: Size) -> MetricValues:
        at = time.monotonic()
        servers = list(servers)
        usage = {server.name: _usage(server.processes) for server in servers}
        cpu_seconds = {name: seconds for name, (seconds, _) in usage.items()}
        storage_bytes = max((_bytes_on_disk(server.data_dir) for server in servers), default=0)
        transactions = activity.transactions if activity is not None else None
        with self._lock:
            previous = self._previous.get(cluster_id)
            self._previous[cluster_id] = _Sample(at=at, transactions=transactions, cpu_seconds=cpu_seconds)
        elapsed = at - previous.at if previous is not None else 0.0
        cpu_percent = tps = None
        if previous is not None and elapsed > 0.001:
            busiest = max((_used(seconds, previous.cpu_seconds.get(name, {})) for name, seconds in cpu_seconds.items()),
                          default=0.0)
            cpu_percent = _percent(busiest / elapsed, max(size.vcpu, 1))
            if transactions is not None and previous.transactions is not None:
                delta = transactions - previous.transactions
                tps = delta / elapsed if delta >= 0 else None
        rss = max((resident for _, resident in usage.values()), default=0)
        storage_quota = size.storage_gb * self.storage_bytes_per_gb
        return MetricValues(
            cpu_percent=cpu_percent,
            memory_percent=_percent(rss, max(size.memory_gb, 1) * GIB),
            storage_used_gb=storage_bytes / self.storage_bytes_per_gb,
            storage_used_percent=_percent(storage_bytes, storage_quota) if storage_quota > 0 else None,
            database_size_gb=(activity.database_size_bytes / GIB
                              if activity is not None and activity.database_size_bytes is not None else None),
            connections=activity.connections if activity is not None else None,
            max_connections=activity.max_connections if activity is not None else None,
            replication_lag_seconds=lag_seconds,
            transactions_per_second=tps,
        )


def _used(now: dict[tuple[int, float], float], before: dict[tuple[int, float], float]) -> float:
    """CPU seconds the processes used since `before` (a process started since counts from zero)."""
    return sum(max(0.0, seconds - before.get(key, 0.0)) for key, seconds in now.items())


def _usage(processes: Iterable[psutil.Process]) -> tuple[dict[tuple[int, float], float], int]:
    cpu_seconds: dict[tuple[int, float], float] = {}
    rss = 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu_seconds[(process.pid, process.create_time())] = times.user + times.system
                rss += process.memory_info().rss
        except psutil.Error:
            continue
    return cpu_seconds, rss


def _bytes_on_disk(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _percent(part: float, whole: float) -> float:
    return min(100.0, max(0.0, 100.0 * part / whole))
