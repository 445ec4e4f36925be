"""Reporting what the driver really sees: status on change, metrics in batches, heartbeats.

A report carries the generation the driver last applied, so the API never lets it overwrite a newer one;
within the agent, one lock per cluster keeps a report from overtaking the one a reconcile sends.
Samples are stamped on the API's clock: each heartbeat's `server_time` tells how far the API's clock is from
this host's, and an offset of CLOCK_TOLERANCE seconds or more is applied to the samples' `at` (the API refuses
samples from its future and the autoscaler times its windows by them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from orochi_agent import __version__
from orochi_agent.clients.api import Api, ApiError
from orochi_agent.drivers.base import Driver, DriverError, Observation
from orochi_agent.models import Heartbeat, MetricsBatch, MetricsSample, StatusReport
from orochi_agent.telemetry import Telemetry

log = logging.getLogger("orochi_agent.observe")
MAX_BATCH = 500
MAX_UNSENT = 5000
CLOCK_TOLERANCE = 2.0


class Probes:
    """The last outcome of each dependency, for /readyz: unknown until it first answers."""

    def __init__(self) -> None:
        self._outcomes: dict[str, str | None] = {}
        self.beat = time.monotonic()

    def ok(self, name: str) -> None:
        self._outcomes[name] = None

    def fail(self, name: str, reason: str) -> None:
        self._outcomes[name] = reason

    def problems(self, names: tuple[str, ...]) -> dict[str, str]:
        return {name: reason for name in names if (reason := self._outcomes.get(name, "not reached yet")) is not None}


class Reporter:
    """Sends status reports, each only once: an unchanged observation costs nothing."""

    def __init__(self, *, api: Api, telemetry: Telemetry, probes: Probes) -> None:
        self._api, self._telemetry, self._probes = api, telemetry, probes
        self._sent: dict[str, StatusReport] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def holding(self, cluster_id: str, *, wait: bool = True) -> Iterator[bool]:
        """The cluster's report lock; yields False (without it) when `wait` is False and it is busy."""
        with self._guard:
            lock = self._locks.setdefault(cluster_id, threading.Lock())
        got = lock.acquire(blocking=wait)
        try:
            yield got
        finally:
            if got:
                lock.release()

    def observed(self, cluster_id: str, observation: Observation) -> None:
        self.send(cluster_id, StatusReport(
            observed_generation=observation.generation, phase=observation.phase,
            ready_instances=observation.ready_instances, primary=observation.primary,
            endpoint=observation.endpoint, message=observation.message[:1000] if observation.message else None,
        ))

    def send(self, cluster_id: str, report: StatusReport) -> None:
        """Raises ApiError when the API did not take it (it is sent again next time)."""
        if self._sent.get(cluster_id) == report:
            return
        try:
            self._api.report(cluster_id, report)
        except ApiError as e:
            if e.status == 404:  # the cluster is gone: nothing to tell
                self.forget(cluster_id)
                return
            if e.retryable:
                self._probes.fail("api", str(e))
            raise
        self._probes.ok("api")
        self._telemetry.reports.inc()
        self._sent[cluster_id] = report

    def forget(self, cluster_id: str) -> None:
        self._sent.pop(cluster_id, None)
        with self._guard:
            self._locks.pop(cluster_id, None)


class Observer:
    """The periodic loops: status of every cluster the driver holds, metrics samples, heartbeats."""

    def __init__(self, *, api: Api, driver: Driver, reporter: Reporter, telemetry: Telemetry, probes: Probes,
                 stop: threading.Event) -> None:
        self._api, self._driver, self._reporter = api, driver, reporter
        self._telemetry, self._probes, self._stop = telemetry, probes, stop
        self._unsent: list[MetricsSample] = []
        self._clock_offset = 0.0  # the API's clock minus this host's, as the last heartbeat measured it

    def report_status(self) -> None:
        """Observe each applied cluster not being reconciled right now, and report what changed."""
        for cluster_id, generation in self._driver.clusters().items():
            if generation == 0 or self._stop.is_set():
                continue
            with self._reporter.holding(cluster_id, wait=False) as free:
                if not free:
                    continue
                try:
                    observation = self._driver.observe(cluster_id)
                    if observation is not None:
                        self._reporter.observed(cluster_id, observation)
                except (DriverError, ApiError) as e:
                    log.warning("status of %s not reported: %s", cluster_id, e)

    def send_metrics(self) -> None:
        """A sample of every applied cluster, sent in batches; what the API could not take is sent next time."""
        at = int(time.time() + self._clock_offset)
        for cluster_id, generation in self._driver.clusters().items():
            if generation == 0:
                continue
            try:
                values = self._driver.metrics(cluster_id)
            except DriverError as e:
                log.warning("no metrics for %s: %s", cluster_id, e)
                continue
            if values is not None:
                self._unsent.append(MetricsSample(cluster_id=cluster_id, at=at, values=values))
        self._unsent = self._unsent[-MAX_UNSENT:]
        while self._unsent and not self._stop.is_set():
            batch = self._unsent[:MAX_BATCH]
            try:
                accepted = self._api.metrics(MetricsBatch(samples=batch))
            except ApiError as e:
                if e.status == 404 and (gone := _refused_clusters(e, batch)):
                    self._unsent = [s for s in self._unsent if s.cluster_id not in gone]
                    continue
                if e.retryable:
                    self._probes.fail("api", str(e))
                else:
                    log.warning("metrics batch refused, dropped: %s", e)
                    self._unsent = self._unsent[len(batch):]
                return
            self._probes.ok("api")
            self._telemetry.samples.inc(accepted.accepted)
            self._unsent = self._unsent[len(batch):]

    def heartbeat(self) -> None:
        try:
            sent = time.time()
            answer = self._api.heartbeat(Heartbeat(agent_version=__version__, driver=self._driver.name,
                                                   clusters=len(self._driver.clusters())))
            offset = answer.server_time + 0.5 - (sent + time.time()) / 2  # server_time is truncated to the second
            if abs(offset - self._clock_offset) >= CLOCK_TOLERANCE:
                self._clock_offset = offset if abs(offset) >= CLOCK_TOLERANCE else 0.0
            self._probes.ok("api")
        except ApiError as e:
            self._probes.fail("api", str(e))
            log.warning("heartbeat failed: %s", e)


def _refused_clusters(error: ApiError, batch: list[MetricsSample]) -> set[str]:
    """The clusters whose samples the API refused as not (or no longer) of this region."""
    gone = set()
    for detail in error.details:
        field = str(detail.get("field", ""))
        parts = field.split(".")
        if len(parts) == 3 and parts[0] == "samples" and parts[1].isdigit() and int(parts[1]) < len(batch):
            gone.add(batch[int(parts[1])].cluster_id)
    return gone
