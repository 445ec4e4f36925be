"""The agent's own metrics, served in Prometheus format on the health port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 600)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_received = Counter("orochi_agent_jobs_received", "Job messages received from the queue",
                                     registry=self.registry)
        self.jobs_processed = Counter("orochi_agent_jobs_processed", "Job messages done and deleted, by outcome",
                                      ["outcome"], registry=self.registry)
        self.jobs_failed = Counter("orochi_agent_jobs_failed", "Attempts handed back to the queue, by reason",
                                   ["reason"], registry=self.registry)
        self.job_latency = Histogram("orochi_agent_job_latency_seconds", "From a job's receipt to its deletion",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.enqueue_latency = Histogram("orochi_agent_enqueue_to_applied_seconds",
                                         "From the API's enqueue of a job to its apply here", buckets=LATENCY_BUCKETS,
                                         registry=self.registry)
        self.reconcile_duration = Histogram("orochi_agent_reconcile_duration_seconds",
                                            "One reconcile of one cluster: fetch, apply, observe, report",
                                            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.lease_extensions = Counter("orochi_agent_lease_extensions", "Visibility extensions of leased job messages",
                                        registry=self.registry)
        self.reports = Counter("orochi_agent_status_reports", "Status reports sent", registry=self.registry)
        self.samples = Counter("orochi_agent_metrics_samples", "Metrics samples accepted by the API",
                               registry=self.registry)
        self._last_resync = 0.0
        Gauge("orochi_agent_last_resync_age_seconds", "Seconds since the last completed resync (-1: none yet)",
              registry=self.registry).set_function(self.resync_age)

    def count_kube_calls(self, calls: Callable[[], Mapping[Any, int]]) -> None:
        """Expose the Kubernetes calls made, `(verb, group, resource, namespace)` → count, by verb and resource."""
        self.registry.register(_KubeCalls(calls))

    def resynced(self) -> None:
        self._last_resync = time.monotonic()

    def resync_age(self) -> float:
        return time.monotonic() - self._last_resync if self._last_resync else -1.0


class _KubeCalls(Collector):
    def __init__(self, calls: Callable[[], Mapping[Any, int]]) -> None:
        self._calls = calls

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("orochi_agent_kube_requests", "Kubernetes API requests, by verb and resource",
                                     labels=["verb", "group", "resource", "scope"])
        totals: dict[tuple[str, str, str, str], int] = {}
        for (verb, group, resource, namespace), count in self._calls().items():
            key = (verb, group, resource, "namespace" if namespace else "cluster")
            totals[key] = totals.get(key, 0) + count
        for labels, count in sorted(totals.items()):
            family.add_metric(list(labels), count)
        yield family
