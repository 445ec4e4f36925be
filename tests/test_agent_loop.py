"""The agent's loop, in-process, against the real API, moto's real SQS and the real Api and Queue clients.

Only the driver is scripted (it stands in for PostgreSQL/Kubernetes): the tests block its applies, make them
fail, and read what it was asked to do. Every test works in a region of its own, so it has its own queue and
dead-letter queue and no job of one test ever reaches the agent of another.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from chalicelib.store import keys
from conftest import Account, Stack, cluster_path, new_stack, until
from orochi_agent.agent import Agent
from orochi_agent.clients.api import Api
from orochi_agent.clients.queue import Queue
from orochi_agent.drivers.base import DriverError, Observation, Refused
from orochi_agent.models import DesiredState, Endpoint, MetricValues
from orochi_agent.settings import Settings
from orochi_agent.telemetry import Telemetry

T = TypeVar("T")
DEADLINE = 60.0
REGIONS = [f"loop{n:02d}" for n in range(1, 25)]
MAX_RECEIVE_COUNT = 5  # chalicelib/jobs.py:create_queues
RETRY_BASE, RETRY_CAP = 0.2, 1.0
FAST = {
    "OROCHI_POLL_WAIT_SECONDS": "1",
    "OROCHI_HEALTH_PORT": "0",
    "OROCHI_RETRY_BASE_SECONDS": str(RETRY_BASE),
    "OROCHI_RETRY_MAX_SECONDS": str(RETRY_CAP),
    "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
    "OROCHI_HEARTBEAT_INTERVAL_SECONDS": "5",
    "OROCHI_METRICS_INTERVAL_SECONDS": "5",
    "OROCHI_RESYNC_INTERVAL_SECONDS": "3600",
    "OROCHI_VISIBILITY_TIMEOUT_SECONDS": "30",
    "OROCHI_DRAIN_SECONDS": "5",
    "OROCHI_API_TIMEOUT_SECONDS": "30",
}


# --- the scripted driver -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Held:
    generation: int
    instances: int
    desired: DesiredState | None = None


class ScriptedDriver:
    """The Driver interface in memory, steered by the test.

    `pause()` holds every apply (once it has been recorded) until `resume()`; `fail(desired)` returns the error an
    apply raises, if any. Every call is recorded, as are the applies under way per cluster at any one time.
    """

    name = "scripted"

    def __init__(self, held: dict[str, int] | None = None) -> None:
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self.held: dict[str, Held] = {cid: Held(generation, 1) for cid, generation in (held or {}).items()}
        self.applies: list[DesiredState] = []
        self.applied: list[DesiredState] = []
        self.deletes: list[str] = []
        self.fail: Callable[[DesiredState], DriverError | BaseException | None] | None = None
        self._active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.max_parallel = 0
        self.closed = False
        self.after_close: list[str] = []

    # steering and reading, from the test

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def applies_of(self, cluster_id: str) -> list[DesiredState]:
        with self._changed:
            return [d for d in self.applies if d.id == cluster_id]

    def active(self, cluster_id: str | None = None) -> int:
        with self._changed:
            return sum(self._active.values()) if cluster_id is None else self._active[cluster_id]

    def holding(self, cluster_id: str) -> Held | None:
        with self._changed:
            return self.held.get(cluster_id)

    def _touch(self, call: str) -> None:
        if self.closed:
            self.after_close.append(call)

    # the Driver interface

    def versions(self) -> tuple[str, ...]:
        return ("16", "17", "18")

    def apply(self, desired: DesiredState) -> None:
        self._touch("apply")
        with self._changed:
            self.applies.append(desired)
            self._active[desired.id] += 1
            self.max_active[desired.id] = max(self.max_active[desired.id], self._active[desired.id])
            self.max_parallel = max(self.max_parallel, sum(self._active.values()))
            self._changed.notify_all()
        try:
            assert self._open.wait(2 * DEADLINE), "an apply stayed paused"
            error = self.fail(desired) if self.fail is not None else None
            if error is not None:
                raise error
            with self._changed:
                self.held[desired.id] = Held(desired.generation, desired.instances, desired)
                self.applied.append(desired)
        finally:
            with self._changed:
                self._active[desired.id] -= 1
                self._changed.notify_all()

    def delete(self, cluster_id: str) -> bool:
        self._touch("delete")
        with self._changed:
            self.deletes.append(cluster_id)
            self.held.pop(cluster_id, None)
        return True

    def observe(self, cluster_id: str) -> Observation | None:
        self._touch("observe")
        held = self.holding(cluster_id)
        if held is None:
            return None
        return Observation(generation=held.generation, phase="ready", ready_instances=held.instances,
                           primary=f"{cluster_id}-1", endpoint=Endpoint(host="db.loop.test", port=5432))

    def clusters(self) -> dict[str, int]:
        with self._changed:
            return {cid: held.generation for cid, held in self.held.items()}

    def metrics(self, cluster_id: str) -> MetricValues | None:
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


# --- an HTTP proxy between the agent and the API ------------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]
Intercept = Callable[[str, str], Answer | None]
Rewrite = Callable[[str, str, bytes], bytes]


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    status: int
    body: bytes


class Proxy:
    """Forwards every request to `target`; `intercept(method, path)` may answer instead, `rewrite(method, path,
    body)` may edit the API's answer. Records every request it saw."""

    def __init__(self, target: str, *, intercept: Intercept | None = None, rewrite: Rewrite | None = None) -> None:
        self.seen: list[Seen] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = intercept(self.command, self.path) if intercept is not None else None
                if answer is None:
                    forwarded = requests.request(self.command, target + self.path, data=body or None, timeout=60,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    data = forwarded.content
                    if rewrite is not None and forwarded.status_code == 200:
                        data = rewrite(self.command, self.path, data)
                    answer = (forwarded.status_code, {"Content-Type": forwarded.headers.get("Content-Type", "")}, data)
                status, headers, data = answer
                with lock:
                    proxy.seen.append(Seen(at, self.command, self.path, status, body))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 (http.server's names)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="proxy", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def api_error(status: int, code: str, **headers: str) -> Answer:
    body = {"error": {"code": code, "message": f"{status} from the test proxy", "request_id": uuid.uuid4().hex}}
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


# --- the agent, running -----------------------------------------------------------------------------------------

class Running:
    """One agent's `run()` on a thread, with its driver and telemetry."""

    def __init__(self, agent: Agent, driver: ScriptedDriver, telemetry: Telemetry) -> None:
        self.agent, self.driver, self.telemetry = agent, driver, telemetry
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="agent-run", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.exit_code = self.agent.run()

    def value(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(name, labels) or 0.0

    def received(self) -> float:
        return self.value("orochi_agent_jobs_received_total")

    def processed(self, outcome: str = "applied") -> float:
        return self.value("orochi_agent_jobs_processed_total", outcome=outcome)

    def failed_attempts(self) -> float:
        return sum(self.value("orochi_agent_jobs_failed_total", reason=reason)
                   for reason in ("transient", "refused", "malformed", "api_refused"))

    def stop(self, *, timeout: float = DEADLINE) -> float:
        """Stop the agent and wait for `run()` to return 0; the seconds that took."""
        started = time.monotonic()
        self.agent.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"timed out after {timeout:.0f}s waiting for run() to return after stop"
        assert self.exit_code == 0
        return time.monotonic() - started


StartAgent = Callable[..., Running]


@dataclass
class Region:
    """The test's own region: its agent token, its queue and its dead-letter queue."""

    slug: str
    token: str
    queue_url: str
    dlq_url: str


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """This module's API, with a region (and so a queue) per test."""
    stack = new_stack(stack_env, REGIONS=",".join(f"{slug}:Loop {slug[4:]}" for slug in REGIONS))
    yield stack
    stack.close()


_free_regions = iter(REGIONS)


@pytest.fixture
def region(stack: Stack) -> Region:
    slug = next(_free_regions)
    queue_url = stack.queue_url(slug)
    return Region(slug=slug, token=stack.agent(slug), queue_url=queue_url,
                  dlq_url=queue_url.replace(".fifo", "-dlq.fifo"))


@pytest.fixture
def sqs(stack: Stack) -> Any:
    return stack.sqs()


@pytest.fixture
def start_agent(stack: Stack, region: Region, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StartAgent]:
    """`start_agent(driver, api_url=..., **OROCHI_settings)` runs an agent of the test's region and waits for its
    start-up resync; every agent started is stopped at the end, its driver resumed first."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    started: list[Running] = []

    def start(driver: ScriptedDriver, *, api_url: str | None = None, **settings: str) -> Running:
        env = {
            **FAST, "OROCHI_API_URL": api_url or stack.url, "OROCHI_AGENT_TOKEN": region.token,
            "OROCHI_REGION": region.slug, "OROCHI_QUEUE_URL": region.queue_url, "OROCHI_DRIVER": "local",
            "OROCHI_LOCAL_DATA_DIR": str(tmp_path / "agent"), **settings,
        }
        config = Settings.from_env(env)
        telemetry = Telemetry()
        agent = Agent(
            settings=config,
            queue=Queue(url=config.queue_url, wait_seconds=config.poll_wait_seconds,
                        visibility_timeout=config.visibility_timeout),
            api=Api(url=config.api_url, token=config.agent_token, timeout=config.api_timeout_seconds,
                    user_agent="orochi-agent/test"),
            driver=driver, telemetry=telemetry,
        )
        running = Running(agent, driver, telemetry)
        started.append(running)
        until(lambda: running.value("orochi_agent_last_resync_age_seconds") >= 0, what="the start-up resync")
        return running

    yield start
    for running in started:
        running.driver.resume()
        if running.thread.is_alive():
            running.stop()


# --- reading the API and the queues -----------------------------------------------------------------------------

def public(stack: Stack, owner: Account, path: str) -> requests.Response:
    """A GET as `owner`, on a connection of its own (safe from any thread)."""
    return requests.get(stack.url + path, headers={"Authorization": f"Bearer {owner.access_token}"}, timeout=60)


def cluster_of(stack: Stack, owner: Account, cluster_id: str) -> dict[str, Any]:
    response = public(stack, owner, cluster_path(owner.org_id, cluster_id))
    assert response.status_code == 200, response.text
    return dict(response.json())


def operation_of(stack: Stack, owner: Account, cluster_id: str, operation_id: str) -> dict[str, Any]:
    response = public(stack, owner, f"{cluster_path(owner.org_id, cluster_id)}/operations/{operation_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for_status(stack: Stack, owner: Account, cluster_id: str, status: str, **fields: Any) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        seen = cluster_of(stack, owner, cluster_id)
        ok = seen["status"] == status and all(seen.get(k) == v for k, v in fields.items())
        return seen if ok else None

    return until(reached, what=f"cluster {cluster_id} to be {status} {fields or ''}".strip(), every=0.2)


def create(stack: Stack, owner: Account, region: Region, **fields: Any) -> dict[str, Any]:
    """A new cluster of the test's region: the 202 body `{cluster, operation}`."""
    return stack.create_cluster(owner, region=region.slug, **fields)


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_for_empty_queue(sqs: Any, url: str) -> None:
    until(lambda: queue_counts(sqs, url) == (0, 0), what=f"no message left on {url.rsplit('/', 1)[1]}", every=0.2)


def receive_one(sqs: Any, url: str, *, visibility: int = 60) -> dict[str, Any]:
    """The next message of the queue (hidden for `visibility` seconds), with its ApproximateReceiveCount."""
    def got() -> dict[str, Any] | None:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                                       VisibilityTimeout=visibility,
                                       MessageSystemAttributeNames=["ApproximateReceiveCount"]).get("Messages")
        return messages[0] if messages else None

    return until(got, what=f"a message on {url.rsplit('/', 1)[1]}", every=0)


def job_body(cluster: dict[str, Any], generation: int) -> str:
    """A job as the API enqueues it (chalicelib/jobs.py:ReconcileJob.body)."""
    return json.dumps({"v": 1, "kind": "reconcile", "cluster_id": cluster["id"], "org_id": cluster["org_id"],
                       "region": cluster["region"], "generation": generation, "enqueued_at": int(time.time())},
                      separators=(",", ":"))


def backoff_floor(attempt: int) -> float:
    """The least the agent waits before retry `attempt`: half of min(cap, base·2^(attempt-1))."""
    return min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1)) / 2


# --- 1. leases ------------------------------------------------------------------------------------------------------

def test_a_job_that_outlasts_the_visibility_timeout_is_leased_and_never_redelivered(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    driver.pause()
    # Extended every third of the timeout (4/3 s) by a whole timeout: 2.7 s of slack for a late extension.
    agent = start_agent(driver, OROCHI_VISIBILITY_TIMEOUT_SECONDS="4")
    cluster_id = create(stack, owner, region)["cluster"]["id"]

    until(lambda: driver.active(cluster_id) == 1, what="the apply to start")
    until(lambda: agent.value("orochi_agent_lease_extensions_total") >= 4, what="four lease extensions (5.3 s)",
          every=0.1)
    assert queue_counts(sqs, region.queue_url) == (0, 1)
    driver.resume()

    wait_for_status(stack, owner, cluster_id, "running")
    wait_for_empty_queue(sqs, region.queue_url)
    until(lambda: agent.processed() == 1, what="the job to be done")
    assert agent.received() == 1
    assert len(driver.applies_of(cluster_id)) == 1


# --- 2. an API outage ---------------------------------------------------------------------------------------------

def test_an_api_outage_is_retried_inline_with_backoff_and_never_blamed_on_the_cluster(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    outages = 5
    desired_state = re.compile(r"^/v1/agent/clusters/[^/?]+$")
    asked = itertools.count(1)

    def flaky(method: str, path: str) -> Answer | None:
        if method != "GET" or not desired_state.match(path):
            return None
        n = next(asked)
        if n == 3:
            return api_error(429, "rate_limited", **{"Retry-After": "1"})
        return api_error(503, "unavailable") if n <= outages else None

    proxy = Proxy(stack.url, intercept=flaky)
    try:
        driver = ScriptedDriver()
        agent = start_agent(driver, api_url=proxy.url)
        created = create(stack, owner, region)
        cluster_id = created["cluster"]["id"]

        wait_for_status(stack, owner, cluster_id, "running", observed_generation=1)
        wait_for_empty_queue(sqs, region.queue_url)
        gets = [seen for seen in proxy.seen if seen.method == "GET" and desired_state.match(seen.path)]
        reports = [json.loads(seen.body) for seen in proxy.seen if seen.path.endswith("/status")]
    finally:
        proxy.close()

    assert [seen.status for seen in gets[:outages + 1]] == [503, 503, 429, 503, 503, 200]
    for attempt, (before, after) in enumerate(itertools.pairwise(gets[:outages + 1]), start=1):
        assert after.at - before.at >= backoff_floor(attempt) - 0.01, f"retry {attempt} came too soon"
    assert agent.received() == 1
    assert agent.processed() == 1
    assert agent.failed_attempts() == 0
    assert len(driver.applies_of(cluster_id)) == 1
    assert reports and all(report["phase"] != "failed" for report in reports)
    operation = operation_of(stack, owner, cluster_id, created["operation"]["id"])
    assert operation["status"] == "succeeded" and "error" not in operation


# --- 3. and 4. the driver fails -----------------------------------------------------------------------------------

def test_a_driver_failure_that_keeps_happening_fails_the_cluster_on_the_last_receive_and_dead_letters_the_job(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    reason = "the node pool has no room for the volume"
    status_before_apply: list[str] = []

    def always_failing(desired: DesiredState) -> DriverError:
        status_before_apply.append(cluster_of(stack, owner, desired.id)["status"])
        return DriverError(reason, transient=True)

    driver = ScriptedDriver()
    driver.fail = always_failing
    agent = start_agent(driver)
    created = create(stack, owner, region)
    cluster_id = created["cluster"]["id"]

    seen = wait_for_status(stack, owner, cluster_id, "failed")
    assert seen["status_message"] == reason
    dead = receive_one(sqs, region.dlq_url)
    assert json.loads(dead["Body"])["cluster_id"] == cluster_id
    wait_for_empty_queue(sqs, region.queue_url)

    assert len(driver.applies_of(cluster_id)) == MAX_RECEIVE_COUNT
    assert "failed" not in status_before_apply, status_before_apply  # not reported failed before the last receive
    assert agent.value("orochi_agent_jobs_failed_total", reason="transient") == MAX_RECEIVE_COUNT
    assert agent.processed() == 0
    operation = operation_of(stack, owner, cluster_id, created["operation"]["id"])
    assert (operation["status"], operation["error"]) == ("failed", reason)


def test_a_refused_desired_state_fails_the_cluster_at_once_and_dead_letters_the_job(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    reason = "PostgreSQL 17 is not served in this region"
    status_before_apply: list[str] = []

    def refusing(desired: DesiredState) -> DriverError:
        status_before_apply.append(cluster_of(stack, owner, desired.id)["status"])
        return Refused(reason)

    driver = ScriptedDriver()
    driver.fail = refusing
    agent = start_agent(driver)
    created = create(stack, owner, region)
    cluster_id = created["cluster"]["id"]

    until(lambda: len(status_before_apply) >= 2, what="the job's second receive")
    assert status_before_apply[:2] == ["pending", "failed"]  # failed right after the first apply
    assert cluster_of(stack, owner, cluster_id)["status_message"] == reason
    dead = receive_one(sqs, region.dlq_url)
    assert json.loads(dead["Body"])["cluster_id"] == cluster_id
    wait_for_empty_queue(sqs, region.queue_url)

    seen = cluster_of(stack, owner, cluster_id)
    assert (seen["status"], seen["status_message"]) == ("failed", reason)
    assert agent.value("orochi_agent_jobs_failed_total", reason="refused") == MAX_RECEIVE_COUNT
    operation = operation_of(stack, owner, cluster_id, created["operation"]["id"])
    assert (operation["status"], operation["error"]) == ("failed", reason)


def test_an_unexpected_driver_exception_hands_the_job_back_instead_of_leasing_it_forever(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    """A driver bug (an exception outside DriverError) must not strand the cluster: its job goes back to the queue
    (to be retried, then dead-lettered) instead of staying leased, and so hiding its FIFO group, until the agent
    restarts."""
    driver = ScriptedDriver()
    driver.fail = lambda desired: KeyError("status")
    agent = start_agent(driver, OROCHI_VISIBILITY_TIMEOUT_SECONDS="2")
    cluster_id = create(stack, owner, region)["cluster"]["id"]

    until(lambda: len(driver.applies_of(cluster_id)) >= 1, what="the first apply")
    until(lambda: len(driver.applies_of(cluster_id)) >= 2 or agent.value("orochi_agent_lease_extensions_total") >= 5,
          what="a second apply (or five extensions)")
    assert len(driver.applies_of(cluster_id)) >= 2, "the job stays leased after the unexpected exception"


# --- 5. a malformed message -----------------------------------------------------------------------------------------

def test_a_malformed_message_ends_in_the_dead_letter_queue_without_stopping_other_work(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    agent = start_agent(driver)
    junk = "this is not a job"
    sqs.send_message(QueueUrl=region.queue_url, MessageBody=junk, MessageGroupId="junk",
                     MessageDeduplicationId=uuid.uuid4().hex)
    cluster_id = create(stack, owner, region)["cluster"]["id"]

    wait_for_status(stack, owner, cluster_id, "running")
    dead = receive_one(sqs, region.dlq_url)
    assert dead["Body"] == junk
    wait_for_empty_queue(sqs, region.queue_url)
    assert agent.value("orochi_agent_jobs_failed_total", reason="malformed") == MAX_RECEIVE_COUNT
    assert agent.processed() == 1


# --- 6. drain -------------------------------------------------------------------------------------------------------

def test_stopping_hands_an_unfinished_job_back_within_the_drain(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    drain = 2.0
    driver = ScriptedDriver()
    driver.pause()
    agent = start_agent(driver, OROCHI_DRAIN_SECONDS=str(drain))
    cluster_id = create(stack, owner, region)["cluster"]["id"]
    until(lambda: driver.active(cluster_id) == 1, what="the apply to start")

    took = agent.stop(timeout=drain + 30)  # the apply stays blocked: run() must not wait for it
    assert took >= drain

    handed_back = receive_one(sqs, region.queue_url)
    assert json.loads(handed_back["Body"])["cluster_id"] == cluster_id
    assert handed_back["Attributes"]["ApproximateReceiveCount"] == "2"
    assert agent.processed() == 0


def test_a_job_handed_back_by_the_drain_is_left_alone_by_its_worker(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    driver.pause()
    agent = start_agent(driver, OROCHI_DRAIN_SECONDS="1")
    cluster_id = create(stack, owner, region)["cluster"]["id"]
    until(lambda: driver.active(cluster_id) == 1, what="the apply to start")
    agent.stop()
    handed_back = receive_one(sqs, region.queue_url)  # another agent's now
    assert handed_back["Attributes"]["ApproximateReceiveCount"] == "2"

    driver.resume()  # the blocked apply returns, long after the drain gave its job up
    until(lambda: driver.active(cluster_id) == 0, what="the apply to return")
    until(lambda: not any(t.name.startswith("reconcile") for t in threading.enumerate()),
          what="the agent's reconcile workers to end")

    problems = []
    if driver.after_close:
        problems.append(f"the worker called the driver after close(): {driver.after_close}")
    if queue_counts(sqs, region.queue_url) != (0, 1):
        problems.append("the worker deleted the message another agent now holds")
    assert not problems, problems


def test_a_job_that_finishes_during_the_drain_is_deleted(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    driver.pause()
    agent = start_agent(driver, OROCHI_DRAIN_SECONDS="30")
    cluster_id = create(stack, owner, region)["cluster"]["id"]
    until(lambda: driver.active(cluster_id) == 1, what="the apply to start")

    agent.agent.stop.set()
    driver.resume()
    agent.stop()

    assert agent.processed() == 1
    assert queue_counts(sqs, region.queue_url) == (0, 0)
    assert cluster_of(stack, owner, cluster_id)["status"] == "running"


# --- 7. order and parallelism -------------------------------------------------------------------------------------

def test_clusters_are_reconciled_in_parallel(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    driver.pause()
    start_agent(driver)
    first = create(stack, owner, region)["cluster"]["id"]
    second = create(stack, owner, region)["cluster"]["id"]

    until(lambda: driver.active(first) == 1 and driver.active(second) == 1, what="both applies under way at once")
    driver.resume()
    wait_for_status(stack, owner, first, "running")
    wait_for_status(stack, owner, second, "running")
    wait_for_empty_queue(sqs, region.queue_url)
    assert driver.max_parallel == 2


def test_jobs_of_one_cluster_never_overlap_and_the_latest_desired_state_wins(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    driver.pause()
    # A resync every second adds reconciles of the cluster while its jobs are under way: they must wait too.
    agent = start_agent(driver, OROCHI_RESYNC_INTERVAL_SECONDS="1")
    cluster = create(stack, owner, region)["cluster"]
    cluster_id = cluster["id"]
    until(lambda: driver.active(cluster_id) == 1, what="the first apply to start")
    blocked_at = time.monotonic()

    for instances in (2, 3, 4):
        response = stack.call("POST", cluster_path(owner.org_id, cluster_id) + "/scale", token=owner.access_token,
                              json={"instances": instances})
        assert response.status_code == 202, response.text
    until(lambda: 0 <= agent.value("orochi_agent_last_resync_age_seconds") < time.monotonic() - blocked_at,
          what="a resync while the first apply is blocked", every=0.1)
    driver.resume()

    wait_for_status(stack, owner, cluster_id, "running", observed_generation=4, ready_instances=4)
    wait_for_empty_queue(sqs, region.queue_url)
    held = driver.holding(cluster_id)
    assert held is not None and (held.generation, held.instances) == (4, 4)
    assert driver.applied[-1].generation == 4
    assert driver.max_active[cluster_id] == 1


# --- 8. resync --------------------------------------------------------------------------------------------------------

def test_the_start_up_resync_reconciles_lost_jobs_and_removes_only_clusters_the_api_does_not_know(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    lost = create(stack, owner, region)["cluster"]["id"]
    lagging = create(stack, owner, region)["cluster"]["id"]
    unknown = f"cls_{uuid.uuid4().hex[:20]}"
    for _ in range(2):  # both jobs are lost: only the resync can find these clusters
        message = receive_one(sqs, region.queue_url)
        sqs.delete_message(QueueUrl=region.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert queue_counts(sqs, region.queue_url) == (0, 0)

    def listing_lags(method: str, path: str, body: bytes) -> bytes:
        if method != "GET" or not path.startswith("/v1/agent/clusters?"):
            return body
        page = json.loads(body)
        page["items"] = [item for item in page["items"] if item["id"] != lagging]
        return json.dumps(page).encode()

    proxy = Proxy(stack.url, rewrite=listing_lags)
    try:
        driver = ScriptedDriver(held={unknown: 3, lagging: 1})
        agent = start_agent(driver, api_url=proxy.url)

        wait_for_status(stack, owner, lost, "running", observed_generation=1)
        until(lambda: unknown in driver.deletes, what="the unknown cluster to be deleted")
        until(lambda: driver.applies_of(lagging), what="the lagging cluster to be reconciled")
        wait_for_status(stack, owner, lagging, "running", observed_generation=1)
    finally:
        proxy.close()

    assert lagging not in driver.deletes
    assert driver.holding(lagging) is not None
    assert driver.holding(unknown) is None and not driver.applies_of(unknown)
    assert [d.id for d in driver.applies_of(lost)] == [lost]
    assert agent.received() == 0


# --- 9. delete --------------------------------------------------------------------------------------------------------

def test_deleting_a_cluster_removes_it_from_the_driver_and_completes_the_delete(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    agent = start_agent(driver)
    cluster_id = create(stack, owner, region)["cluster"]["id"]
    wait_for_status(stack, owner, cluster_id, "running")

    response = stack.call("DELETE", cluster_path(owner.org_id, cluster_id), token=owner.access_token)
    assert response.status_code == 202, response.text
    operation_id = response.json()["operation"]["id"]

    until(lambda: public(stack, owner, cluster_path(owner.org_id, cluster_id)).status_code == 404,
          what="the cluster to be gone", every=0.2)
    assert driver.deletes == [cluster_id]
    assert driver.holding(cluster_id) is None
    wait_for_empty_queue(sqs, region.queue_url)
    assert agent.processed("deleted") == 1
    # The public API hides every operation of a deleted cluster (clusters.get_operation loads the cluster first,
    # and a tombstone is NotFound), so the delete operation's outcome is read from the table.
    raw = stack.raw_item(keys.operation(cluster_id, operation_id))
    assert raw is not None and raw["status"]["S"] == "succeeded"


# --- 10. duplicate and stale jobs ---------------------------------------------------------------------------------

def test_duplicate_and_out_of_order_jobs_change_nothing(
    stack: Stack, owner: Account, region: Region, sqs: Any, start_agent: StartAgent,
) -> None:
    driver = ScriptedDriver()
    agent = start_agent(driver)
    cluster = create(stack, owner, region)["cluster"]
    cluster_id = cluster["id"]
    response = stack.call("POST", cluster_path(owner.org_id, cluster_id) + "/scale", token=owner.access_token,
                          json={"instances": 2})
    assert response.status_code == 202, response.text
    before = wait_for_status(stack, owner, cluster_id, "running", observed_generation=2, ready_instances=2)
    wait_for_empty_queue(sqs, region.queue_url)
    until(lambda: agent.processed() == 2, what="both jobs done")
    held_before, applies_before = driver.holding(cluster_id), len(driver.applies_of(cluster_id))
    assert held_before is not None and held_before.generation == 2
    reports_before = agent.value("orochi_agent_status_reports_total")

    for generation in (2, 1):  # a duplicate of the latest job, then one of an older generation
        sqs.send_message(QueueUrl=region.queue_url, MessageBody=job_body(cluster, generation),
                         MessageGroupId=cluster_id, MessageDeduplicationId=uuid.uuid4().hex)

    until(lambda: agent.processed() == 4, what="the duplicate and the stale job to be done")
    wait_for_empty_queue(sqs, region.queue_url)
    later = driver.applies_of(cluster_id)[applies_before:]
    assert later and all(desired == held_before.desired for desired in later)
    assert driver.holding(cluster_id) == held_before
    assert agent.value("orochi_agent_status_reports_total") == reports_before
    after = cluster_of(stack, owner, cluster_id)
    assert (after["status"], after["observed_generation"], after["generation"]) == ("running", 2, 2)
    assert after["updated_at"] == before["updated_at"]
