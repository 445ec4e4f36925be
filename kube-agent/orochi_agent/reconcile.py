"""One cluster's reconcile — current desired state → driver → report — and what happens when it fails.

- The API or the queue is out (or busy): retry with backoff while the job stays leased; never the cluster's
  fault, so never reported as a failure.
- The driver refuses the desired state: report the cluster `failed` with the reason at once, and hand the job
  back with backoff; after the queue's maxReceiveCount receives SQS moves it to the dead-letter queue.
- The driver fails in a way that may pass: hand the job back with backoff; on its last receive, report
  `failed` with the reason first, so the user sees why.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from orochi_agent.clients.api import Api, ApiError
from orochi_agent.clients.queue import Message, Queue, QueueError
from orochi_agent.dispatch import Dispatcher
from orochi_agent.drivers.base import Driver, DriverError
from orochi_agent.leases import Leases
from orochi_agent.models import DesiredState, Job, StatusReport
from orochi_agent.observe import Probes, Reporter
from orochi_agent.retry import backoff
from orochi_agent.telemetry import Telemetry

log = logging.getLogger("orochi_agent.reconcile")


class Stopping(Exception):
    """The agent is shutting down: hand the job back untouched."""


class ClusterFailed(Exception):
    def __init__(self, desired: DesiredState | None, error: DriverError) -> None:
        super().__init__(error.message)
        self.desired, self.error = desired, error


@dataclass(frozen=True)
class Retry:
    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        return backoff(attempt, base=self.base, cap=self.cap)


class Reconciler:
    def __init__(self, *, api: Api, queue: Queue, driver: Driver, leases: Leases, reporter: Reporter,
                 telemetry: Telemetry, probes: Probes, stop: threading.Event, abandoned: threading.Event,
                 retry: Retry, max_receive_count: int | None) -> None:
        """`stop`: take no new work. `abandoned`: the drain is over and handed back what was in flight; from
        then on a reconcile still running touches nothing (not the driver, the API or its jobs)."""
        self._api, self._queue, self._driver, self._leases = api, queue, driver, leases
        self._reporter, self._telemetry, self._probes, self._stop = reporter, telemetry, probes, stop
        self._abandoned, self._retry, self._max_receive_count = abandoned, retry, max_receive_count

    def handle(self, cluster_id: str, messages: list[Message]) -> None:
        """Reconcile the cluster once for all of `messages` (none: a resync's), then delete or hand them back."""
        outages = 0
        while True:
            started = time.monotonic()
            try:
                outcome = self._reconcile(cluster_id)
                break
            except Stopping:
                self._leases.release(messages, after=0)
                return
            except ApiError as e:
                if not e.retryable:
                    log.warning("the API refused the reconcile of %s: %s", cluster_id, e)
                    self._fail_attempt(messages, "api_refused")
                    return
                self._probes.fail("api", str(e))
                outages += 1
                log.warning("API unavailable while reconciling %s (retry %d): %s", cluster_id, outages, e)
                if self._stop.wait(self._retry.delay(outages)):
                    self._leases.release(messages, after=0)
                    return
            except ClusterFailed as failure:
                self._cluster_failed(cluster_id, messages, failure)
                return
            except Exception:
                log.exception("reconcile of %s failed unexpectedly; its job is handed back", cluster_id)
                self._fail_attempt(messages, "unexpected")
                return
        self._probes.ok("api")
        self._telemetry.reconcile_duration.observe(time.monotonic() - started)
        self._done(messages, outcome)

    def _reconcile(self, cluster_id: str) -> str:
        with self._reporter.holding(cluster_id):
            desired = self._api.desired_state(cluster_id)
            if desired is None:
                self._remove(cluster_id, desired)
                return "gone"
            if desired.deleting:
                self._remove(cluster_id, desired)
                self._reporter.send(cluster_id, StatusReport(
                    observed_generation=desired.generation, phase="deleted", ready_instances=0))
                self._reporter.forget(cluster_id)
                return "deleted"
            try:
                self._driver.apply(desired)
                self._still_ours()
                observation = self._driver.observe(cluster_id)
            except DriverError as e:
                raise ClusterFailed(desired, e) from e
            self._still_ours()
            if observation is not None:
                self._reporter.observed(cluster_id, observation)
            return "applied"

    def _still_ours(self) -> None:
        if self._abandoned.is_set():
            raise Stopping()

    def _remove(self, cluster_id: str, desired: DesiredState | None) -> None:
        """Delete everything the driver holds of the cluster, waiting (job leased) while it goes: a deletion in
        progress is progress, never a failure, however long the driver takes (a namespace's finalizers)."""
        attempt = 0
        while True:
            self._still_ours()
            try:
                if self._driver.delete(cluster_id):
                    return
            except DriverError as e:
                raise ClusterFailed(desired, e) from e
            attempt += 1
            if self._stop.wait(self._retry.delay(attempt)):
                raise Stopping()

    def _cluster_failed(self, cluster_id: str, messages: list[Message], failure: ClusterFailed) -> None:
        if self._abandoned.is_set():
            return
        error = failure.error
        receives = max((m.receive_count for m in messages), default=0)
        last = self._max_receive_count is not None and receives >= self._max_receive_count
        log.warning("reconcile of %s failed (%s, receive %d): %s", cluster_id,
                    "transient" if error.transient else "refused", receives, error.message)
        if failure.desired is not None and (not error.transient or (last and messages)):
            self._report_failed(cluster_id, failure.desired, error.message)
        self._fail_attempt(messages, "transient" if error.transient else "refused")

    def _report_failed(self, cluster_id: str, desired: DesiredState, reason: str) -> None:
        with self._reporter.holding(cluster_id):
            try:
                observation = self._driver.observe(cluster_id)
            except DriverError:
                observation = None
            try:
                self._reporter.send(cluster_id, StatusReport(
                    observed_generation=desired.generation, phase="failed", message=reason[:1000],
                    ready_instances=observation.ready_instances if observation else 0,
                    endpoint=observation.endpoint if observation else None,
                ))
            except ApiError as e:
                log.warning("could not report %s failed: %s", cluster_id, e)

    def _fail_attempt(self, messages: list[Message], reason: str) -> None:
        if not messages:
            return
        self._telemetry.jobs_failed.labels(reason).inc(len(messages))
        receives = max(m.receive_count for m in messages)
        self._leases.release(messages, after=self._retry.delay(receives))

    def _done(self, messages: list[Message], outcome: str) -> None:
        messages = self._leases.drop(messages)  # a job the drain handed back is no longer ours to delete
        if not messages:
            return
        for attempt in range(1, 4):
            try:
                self._queue.delete(messages)
                break
            except QueueError as e:
                self._probes.fail("queue", str(e))
                if attempt == 3 or self._stop.wait(self._retry.delay(attempt)):
                    log.warning("job messages not deleted; they come back and change nothing: %s", e)
                    return
        now, at = time.monotonic(), time.time()
        for message in messages:
            self._telemetry.job_latency.observe(now - message.received_at)
            self._telemetry.enqueue_latency.observe(max(0.0, at - Job.model_validate_json(message.body).enqueued_at))
        self._telemetry.jobs_processed.labels(outcome).inc(len(messages))


def resync(*, api: Api, driver: Driver, dispatcher: Dispatcher) -> int:
    """Reconcile every cluster of the region and every cluster the driver holds (level-triggered: whatever a
    lost job, a crash or a stopped server left behind is put right; an apply of what is already there changes
    nothing). A cluster the driver holds that the region no longer lists is removed only once its reconcile has
    confirmed with the API that it is gone, as the listing may lag."""
    due = {cluster.id for cluster in api.clusters()} | set(driver.clusters())
    for cluster_id in sorted(due):
        dispatcher.submit(cluster_id, [])
    return len(due)
