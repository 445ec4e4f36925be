"""The running agent: receive jobs, reconcile, observe, resync, heartbeat, serve health; drain on stop."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from orochi_agent.clients.api import Api, ApiError
from orochi_agent.clients.queue import Message, Queue, QueueError
from orochi_agent.dispatch import Dispatcher
from orochi_agent.drivers.base import Driver, DriverError
from orochi_agent.health import HealthServer
from orochi_agent.leases import Leases
from orochi_agent.models import Job
from orochi_agent.observe import Observer, Probes, Reporter
from orochi_agent.reconcile import Reconciler, Retry, resync
from orochi_agent.settings import Settings
from orochi_agent.telemetry import Telemetry

if TYPE_CHECKING:  # the Kubernetes client is imported only when the cnpg driver runs
    from orochi_agent.leadership import Leadership

log = logging.getLogger("orochi_agent")


class Agent:
    def __init__(self, *, settings: Settings, queue: Queue, api: Api, driver: Driver, telemetry: Telemetry,
                 leadership: Leadership | None = None) -> None:
        """`leadership`: with several replicas, only its holder runs resync, status and metrics (every replica
        takes jobs); None for a single agent, which always leads."""
        self._settings, self._queue, self._api, self._driver, self._telemetry = settings, queue, api, driver, telemetry
        self._leadership = leadership
        self.stop = threading.Event()          # no new work
        self._abandoned = threading.Event()    # the drain is over: work still running touches nothing
        self._halt = threading.Event()         # background loops end (after the drain)
        self._retry = Retry(base=settings.retry_base_seconds, cap=settings.retry_max_seconds)
        self._probes = Probes()
        self._leases = Leases(queue=queue, telemetry=telemetry, stop=self._halt)
        self._reporter = Reporter(api=api, telemetry=telemetry, probes=self._probes)
        self._observer = Observer(api=api, driver=driver, reporter=self._reporter, telemetry=telemetry,
                                  probes=self._probes, stop=self.stop)
        self._dispatcher: Dispatcher | None = None
        self._receiver: threading.Thread | None = None
        self._health = HealthServer(port=settings.health_port, live=self.live, problems=self.problems,
                                    registry=telemetry.registry)

    def run(self) -> int:
        """Work until `stop` is set, then drain: finish or hand back what is in flight. Returns the exit code."""
        self._health.start()
        log.info("agent starting", extra={"region": self._settings.region, "driver": self._driver.name,
                                          "health_port": self._health.port})
        max_receive_count = self._until_stopped("read the queue's redrive policy", self._queue.max_receive_count)
        if not self.stop.is_set():
            reconciler = Reconciler(api=self._api, queue=self._queue, driver=self._driver, leases=self._leases,
                                    reporter=self._reporter, telemetry=self._telemetry, probes=self._probes,
                                    stop=self.stop, abandoned=self._abandoned, retry=self._retry,
                                    max_receive_count=max_receive_count)
            self._dispatcher = Dispatcher(workers=self._settings.concurrency, handle=reconciler.handle)
            self._start_loops(self._dispatcher)
            self.stop.wait()
            self._drain(self._dispatcher)
        self._halt.set()
        self._health.close()
        self._driver.close()
        log.info("agent stopped")
        return 0

    def live(self) -> bool:
        """The receive loop runs and has come round recently."""
        stalled_after = self._settings.poll_wait_seconds * 2 + self._settings.api_timeout_seconds + 30
        receiving = self._receiver is None or self._receiver.is_alive() or self.stop.is_set()
        return receiving and time.monotonic() - self._probes.beat < stalled_after

    def problems(self) -> dict[str, str]:
        """What keeps the agent from working: empty when the queue, the API and the driver are all reachable."""
        found = self._probes.problems(("queue", "api"))
        try:
            self._driver.ping()
        except DriverError as e:
            found["driver"] = e.message
        return found

    def _start_loops(self, dispatcher: Dispatcher) -> None:
        self._receiver = threading.Thread(target=self._receive, args=(dispatcher,), name="receive", daemon=True)
        self._receiver.start()
        threading.Thread(target=self._leases.run, name="leases", daemon=True).start()
        if self._leadership is not None:
            threading.Thread(target=self._leadership.run, args=(self._halt,), name="leadership", daemon=True).start()
        settings = self._settings
        threading.Thread(target=self._resync_loop, args=(dispatcher,), name="resync", daemon=True).start()
        for name, interval, work, leader_only in (
            ("heartbeat", settings.heartbeat_interval, self._observer.heartbeat, False),
            ("status", settings.observe_interval, self._observer.report_status, True),
            ("metrics", settings.metrics_interval, self._observer.send_metrics, True),
        ):
            threading.Thread(target=self._every, args=(interval, work, leader_only), name=name, daemon=True).start()

    def _leads(self) -> bool:
        return self._leadership is None or self._leadership.leading()

    def _every(self, interval: float, work: Callable[[], None], leader_only: bool) -> None:
        while not self.stop.is_set():
            if not leader_only or self._leads():
                try:
                    work()
                except Exception:
                    log.exception("%s failed", threading.current_thread().name)
            self.stop.wait(interval)

    def _resync_loop(self, dispatcher: Dispatcher) -> None:
        """Resync at start, every resync interval, and at once when this replica becomes the leader; after a
        failed one, again with backoff."""
        led, due, failures = False, 0.0, 0
        while not self.stop.is_set():
            leads = self._leads()
            if leads and (not led or time.monotonic() >= due):
                if self._resync(dispatcher):
                    failures, due = 0, time.monotonic() + self._settings.resync_interval
                else:
                    failures += 1
                    due = time.monotonic() + self._retry.delay(failures)
            led = leads
            self.stop.wait(max(0.05, min(1.0, due - time.monotonic())))

    def _resync(self, dispatcher: Dispatcher) -> bool:
        try:
            due = resync(api=self._api, driver=self._driver, dispatcher=dispatcher)
        except ApiError as e:
            self._probes.fail("api", str(e))
            log.warning("resync failed: %s", e)
            return False
        self._probes.ok("api")
        self._telemetry.resynced()
        log.info("resync", extra={"reconciling": due})
        return True

    def _receive(self, dispatcher: Dispatcher) -> None:
        failures = 0
        while not self.stop.is_set():
            self._probes.beat = time.monotonic()
            if not dispatcher.wait_for_room(self._settings.concurrency * 2, timeout=1):
                continue
            try:
                messages = self._queue.receive(10)
            except QueueError as e:
                self._probes.fail("queue", str(e))
                failures += 1
                log.warning("receive failed (retry %d): %s", failures, e)
                self.stop.wait(self._retry.delay(failures))
                continue
            failures = 0
            self._probes.ok("queue")
            if self.stop.is_set():
                self._leases.hold(messages)
                self._leases.release(messages, after=0)
                return
            self._telemetry.jobs_received.inc(len(messages))
            self._dispatch(dispatcher, messages)

    def _dispatch(self, dispatcher: Dispatcher, messages: list[Message]) -> None:
        self._leases.hold(messages)
        by_cluster: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            cluster_id = self._cluster_of(message)
            if cluster_id is None:
                self._telemetry.jobs_failed.labels("malformed").inc()
                self._leases.release([message], after=self._retry.delay(message.receive_count))
            else:
                by_cluster[cluster_id].append(message)
        for cluster_id, mine in by_cluster.items():
            if not dispatcher.submit(cluster_id, mine):
                self._leases.release(mine, after=0)

    def _cluster_of(self, message: Message) -> str | None:
        """The cluster a job is about; None for a message that is not a job of this region (it ends in the DLQ)."""
        try:
            job = Job.model_validate_json(message.body)
        except ValidationError as e:
            log.error("not a job message (%s); it goes to the dead-letter queue after its receives", e.title,
                      extra={"message_id": message.id, "receive_count": message.receive_count})
            return None
        if job.region != self._settings.region:
            log.error("a job of region %s on this region's queue", job.region, extra={"message_id": message.id})
            return None
        return job.cluster_id

    def _drain(self, dispatcher: Dispatcher) -> None:
        if self._receiver is not None:
            self._receiver.join(self._settings.poll_wait_seconds + self._settings.api_timeout_seconds)
        left = dispatcher.close(self._settings.drain_seconds)
        self._abandoned.set()
        self._leases.release(left, after=0)
        log.info("drained", extra={"handed_back": len(left)})

    def _until_stopped(self, what: str, call: Callable[[], int | None]) -> int | None:
        attempt = 0
        while not self.stop.is_set():
            try:
                return call()
            except QueueError as e:
                attempt += 1
                self._probes.fail("queue", str(e))
                log.warning("could not %s (retry %d): %s", what, attempt, e)
                self.stop.wait(self._retry.delay(attempt))
        return None
