"""A cluster's metrics from its instances' exporters (port 9187) and `metrics.k8s.io` PodMetrics. Pure but for the
per-cluster memory that turns counters into rates.

From the exporters (names from CNPG's default monitoring queries and its own collector), on the primary:
- `connections`: `cnpg_backends_total` summed, without CNPG's own sessions (the instance manager, the metrics
  exporter, the streaming replicas);
- `max_connections`: `cnpg_pg_settings_setting{name="max_connections"}`;
- `database_size_gb`: `cnpg_pg_database_size_bytes` of the app database, in GiB;
- `storage_used_gb`: every database's size plus the WAL (`cnpg_collector_pg_wal{value="size"}`): what PostgreSQL
  keeps on the instance's volume; `storage_used_percent` of the Cluster's `spec.storage.size`;
- `transactions_per_second`: the change of `cnpg_pg_stat_database_xact_commit` + `_xact_rollback` (every
  database) since the previous sample of the same primary (none on the first sample or after a failover);
and `replication_lag_seconds`: the largest `cnpg_pg_replication_lag` of the replicas (None without replicas).

From PodMetrics (container `postgres`): `cpu_percent` and `memory_percent` of the busiest instance, as a percent
of its limits (the size's vCPUs and GiB, from the Cluster's `spec.resources.limits`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from orochi_agent.models import MetricValues

GIB = 2**30
CONTAINER = "postgres"
_OWN_SESSIONS = frozenset({"cnpg-instance-manager", "cnpg_metrics_exporter"})
_OWN_USERS = frozenset({"cnpg_metrics_exporter", "streaming_replica"})
_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


@dataclass(frozen=True)
class Instance:
    """What one exporter answered."""

    connections: int | None = None
    max_connections: int | None = None
    database_bytes: dict[str, float] = field(default_factory=dict)
    wal_bytes: float | None = None
    lag_seconds: float | None = None
    transactions: float | None = None


@dataclass(frozen=True)
class Usage:
    """One pod's container usage: CPU in cores, memory in bytes."""

    cpu: float | None
    memory: float | None


@dataclass(frozen=True)
class Limits:
    cpu: float | None
    memory: float | None
    storage: float | None


def parse(text: str) -> Instance:
    """An exporter's answer (Prometheus text format); metrics it lacks are None."""
    connections = None
    max_connections = None
    sizes: dict[str, float] = {}
    wal = lag = None
    commits = rollbacks = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name, labels, value = family.name, sample.labels, float(sample.value)
            if name == "cnpg_backends_total":
                if labels.get("usename") in _OWN_USERS or labels.get("application_name") in _OWN_SESSIONS:
                    continue
                connections = (connections or 0) + int(value)
            elif name == "cnpg_pg_settings_setting" and labels.get("name") == "max_connections":
                max_connections = int(value)
            elif name == "cnpg_pg_database_size_bytes" and "datname" in labels:
                sizes[labels["datname"]] = value
            elif name == "cnpg_collector_pg_wal" and labels.get("value") == "size":
                wal = value
            elif name == "cnpg_pg_replication_lag":
                lag = value
            elif name == "cnpg_pg_stat_database_xact_commit":
                commits = (commits or 0.0) + value
            elif name == "cnpg_pg_stat_database_xact_rollback":
                rollbacks = (rollbacks or 0.0) + value
    transactions = None if commits is None and rollbacks is None else (commits or 0.0) + (rollbacks or 0.0)
    return Instance(connections=connections, max_connections=max_connections, database_bytes=sizes, wal_bytes=wal,
                    lag_seconds=lag, transactions=transactions)


def pod_usage(items: Iterable[dict[str, Any]]) -> dict[str, Usage]:
    """PodMetrics items (metrics.k8s.io/v1beta1) → each pod's `postgres` container usage."""
    usage = {}
    for item in items:
        name = (item.get("metadata") or {}).get("name")
        for container in item.get("containers") or []:
            if name and container.get("name") == CONTAINER:
                values = container.get("usage") or {}
                usage[name] = Usage(cpu=quantity(values.get("cpu")), memory=quantity(values.get("memory")))
    return usage


def limits(cluster: dict[str, Any]) -> Limits:
    spec = cluster.get("spec") or {}
    resources = (spec.get("resources") or {}).get("limits") or {}
    return Limits(cpu=quantity(resources.get("cpu")), memory=quantity(resources.get("memory")),
                  storage=quantity((spec.get("storage") or {}).get("size")))


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity ("250m", "1Gi", "123456789n") as a number; None when absent or unreadable."""
    if value is None:
        return None
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


@dataclass(frozen=True)
class _Previous:
    primary: str
    at: float
    transactions: float


class Sampler:
    """Combines one sample of a cluster; keeps each cluster's previous transaction count to make a rate."""

    def __init__(self) -> None:
        self._previous: dict[str, _Previous] = {}
        self._lock = threading.Lock()

    def forget(self, cluster_id: str) -> None:
        with self._lock:
            self._previous.pop(cluster_id, None)

    def sample(self, cluster_id: str, *, primary: str | None, instances: dict[str, Instance],
               usage: dict[str, Usage], limits: Limits, database: str, at: float | None = None) -> MetricValues | None:
        """`instances`: the exporters that answered, by pod; None when neither they nor PodMetrics said anything."""
        if not instances and not usage:
            return None
        at = time.monotonic() if at is None else at
        main = instances.get(primary or "")
        replicas = [i for pod, i in instances.items() if pod != primary and i.lag_seconds is not None]
        tps = None
        if main is not None and main.transactions is not None and primary is not None:
            with self._lock:
                previous = self._previous.get(cluster_id)
                self._previous[cluster_id] = _Previous(primary=primary, at=at, transactions=main.transactions)
            if previous is not None and previous.primary == primary and at - previous.at > 0.001:
                delta = main.transactions - previous.transactions
                tps = delta / (at - previous.at) if delta >= 0 else None
        used = None
        if main is not None and main.database_bytes:
            used = sum(main.database_bytes.values()) + (main.wal_bytes or 0.0)
        size = main.database_bytes.get(database) if main is not None else None
        return MetricValues(
            cpu_percent=_busiest((u.cpu for u in usage.values()), limits.cpu),
            memory_percent=_busiest((u.memory for u in usage.values()), limits.memory),
            storage_used_gb=used / GIB if used is not None else None,
            storage_used_percent=_percent(used, limits.storage) if used is not None and limits.storage else None,
            database_size_gb=size / GIB if size is not None else None,
            connections=main.connections if main is not None else None,
            max_connections=main.max_connections if main is not None and main.max_connections else None,
            replication_lag_seconds=max(r.lag_seconds or 0.0 for r in replicas) if replicas else None,
            transactions_per_second=tps,
        )


def _busiest(values: Iterable[float | None], limit: float | None) -> float | None:
    known = [v for v in values if v is not None]
    if not known or not limit:
        return None
    return _percent(max(known), limit)


def _percent(part: float, whole: float) -> float:
    return min(100.0, max(0.0, 100.0 * part / whole))
