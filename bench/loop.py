"""The agent loops' system (bench.agent_loop, bench.cnpg_loop): moto, the API over HTTP (a devstack.harness
Stack) and one real `orochi-agent` process, in a fresh folder under /tmp that `close` removes with everything in
it; and the agent's /metrics, read as Prometheus would.
"""

from __future__ import annotations

import atexit
import collections
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from types import TracebackType
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from devstack import agents
from devstack.harness import ROOT, Account, Stack, clusters_path, environment, moto_server, until, with_table
from devstack.ports import free_port

REGION = "nyc1"
PROCESSED = "orochi_agent_jobs_processed_total"
GAP_SECONDS = 1.2  # > OROCHI_POLL_WAIT_SECONDS: moto snapshots busy message groups when a long poll starts
FAST = {"OROCHI_POLL_WAIT_SECONDS": "1", "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
        "OROCHI_RESYNC_INTERVAL_SECONDS": "3600"}  # the intervals both loops run the agent with


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram (or the difference of two scrapes of one): cumulative buckets, sum, count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(tuple((b, c - o) for (b, c), (_, o) in zip(self.buckets, other.buckets, strict=True)),
                         self.total - other.total, self.count - other.count)

    def __add__(self, other: Histogram) -> Histogram:
        if not (self.buckets and other.buckets):
            return self if self.buckets else other
        return Histogram(tuple((b, c + o) for (b, c), (_, o) in zip(self.buckets, other.buckets, strict=True)),
                         self.total + other.total, self.count + other.count)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """As Prometheus' histogram_quantile: linear within the bucket holding the rank (from 0 for the first)."""
        if self.count <= 0:
            return math.nan
        rank, low, below = q * self.count, 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return low
                return bound if cumulative == below else low + (bound - low) * (rank - below) / (cumulative - below)
            low, below = bound, cumulative
        return math.nan


EMPTY = Histogram((), 0.0, 0.0)


class Scrape:
    """One scrape of the agent's /metrics: every sample by name and labels (a repeated series is added up)."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = self.samples.get(key, 0.0) + sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum over every label set of `name`."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def labelled(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        return ((dict(labels), v) for (n, labels), v in self.samples.items() if n == name)

    def histogram(self, name: str) -> Histogram:
        buckets = sorted((float(labels["le"]), v) for labels, v in self.labelled(f"{name}_bucket"))
        return Histogram(tuple(buckets), self.value(f"{name}_sum"), self.value(f"{name}_count"))


def route(method: str, path: str) -> str:
    """A request line as its route: ids replaced by {id} and {org}, the query dropped."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^/v1/agent/clusters/[^/]+", "/v1/agent/clusters/{id}", path)
    path = re.sub(r"^/v1/orgs/[^/]+", "/v1/orgs/{org}", path)
    return f"{method} {re.sub(r'/clusters/[^/]+', '/clusters/{id}', path)}"


SHORT_ROUTES = {"GET /v1/agent/clusters/{id}": "desired state", "POST /v1/agent/clusters/{id}/status": "status",
                "POST /v1/agent/heartbeat": "heartbeat", "POST /v1/agent/metrics": "metrics",
                "GET /v1/agent/clusters": "resync"}


def per(value: float, jobs: float) -> str:
    return f"{value / jobs:.2f}".rstrip("0").rstrip(".")


def routes(counter: collections.Counter[str], jobs: float = 1.0) -> str:
    """API requests by route (short names for the agent's), each divided by `jobs`."""
    return ", ".join(f"{per(n, jobs)} {SHORT_ROUTES.get(r, r)}" for r, n in sorted(counter.items())) or "0"


def intervals(env: dict[str, str]) -> str:
    return ", ".join(f"{k.removeprefix('OROCHI_')}={v}" for k, v in env.items())


class System:
    """moto + the API (HTTP) + one agent of REGION with `agent_env` on top of its environment. As a context
    manager: SIGTERM and SIGHUP exit, a failure prints the agent's last log lines, and the system is closed."""

    def __init__(self, name: str, *, quota: int) -> None:
        self._quota = quota
        self._stack = ExitStack()
        self._closed = False
        self._sent = 0
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir="/tmp"))
        self.root.chmod(0o755)  # the local driver's servers run as an unprivileged user that must traverse it
        self.agent_log = self.root / "agent.log"
        self.agent: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    def start(self, agent_env: dict[str, str]) -> None:
        endpoint = self._stack.enter_context(moto_server(self.root / "moto.log"))
        env = with_table(environment(endpoint, stage="dev"), ORG_CLUSTER_QUOTA=str(self._quota),
                         ACCESS_TOKEN_TTL_SECONDS="7200", LOG_LEVEL="WARNING")
        self.api = Stack(env, folder=self.root)
        self._stack.callback(self.api.close)
        self.health_port = free_port()
        self.agent_env = {**agents.agent_environment(env, region=REGION, token=self.api.agent(REGION),
                                                     api_url=self.api.url, health_port=self.health_port), **agent_env}
        with self.agent_log.open("ab") as log:
            self.agent = subprocess.Popen([sys.executable, "-m", "orochi_agent"], cwd=ROOT, env=self.agent_env,
                                          stdout=log, stderr=log)
        until(self._ready, timeout=120, what=f"the agent's /readyz on port {self.health_port}", every=0.1)
        self.agent_process = psutil.Process(self.agent.pid)
        self.sqs, self.queue_url = self.api.sqs(), self.agent_env["OROCHI_QUEUE_URL"]

    def _ready(self) -> bool:
        assert self.agent is not None
        if self.agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {self.agent.returncode}:\n{self.agent_log.read_text()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def __enter__(self) -> System:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: sys.exit(1))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is not None and self.agent_log.exists():
            print("the agent's log, last lines:\n" + "\n".join(self.agent_log.read_text(errors="replace")
                                                              .splitlines()[-40:]), file=sys.stderr)
        self.close()

    def close(self) -> None:
        """The agent (SIGTERM: it drains), then the API and moto; then the folder."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.agent is not None and self.agent.poll() is None:
                self.agent.send_signal(signal.SIGCONT)  # in case it was paused
                self.agent.send_signal(signal.SIGTERM)
                try:
                    self.agent.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait(timeout=10)
            self.cleanup()
            self._stack.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def cleanup(self) -> None:
        """What a driver may leave behind once the agent is gone (its servers, say)."""

    # --- the agent, from outside --------------------------------------------------------------------------------

    def scrape(self) -> Scrape:
        return Scrape(requests.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=10).text)

    def processed(self) -> float:
        return self.scrape().total(PROCESSED)

    def processed_reaches(self, target: float, *, timeout: float = 120) -> None:
        until(lambda: self.processed() >= target, timeout=timeout, what=f"{target:.0f} jobs processed")

    def agent_cpu(self) -> float:
        times = self.agent_process.cpu_times()
        return float(times.user + times.system)

    def logged_ms(self, pattern: str) -> dict[tuple[str, ...], float]:
        """The first match of `pattern` in the agent's log messages by its groups but the last, which is ms."""
        found: dict[tuple[str, ...], float] = {}
        for entry in self.log_messages():
            if match := re.match(pattern, str(entry.get("message", ""))):
                found.setdefault(match.groups()[:-1], float(match.groups()[-1]))
        return found

    def log_messages(self) -> Iterator[dict[str, Any]]:
        """The agent's JSON log entries."""
        for line in self.agent_log.read_text(errors="replace").splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def api_requests(self) -> int:
        return len(self.api.requests_served())

    def requests_since(self, logged: int) -> list[str]:
        """The routes of the API's requests after the first `logged`."""
        return [route(m, p) for m, p, _ in self.api.requests_served()[logged:]]

    def send_duplicate(self, account: Account, cluster: dict[str, Any], number: int) -> None:
        """A job of the cluster's current generation straight to its queue, as the API sends one (distinct
        deduplication id)."""
        body = {"v": 1, "kind": "reconcile", "cluster_id": cluster["id"], "org_id": account.org_id, "region": REGION,
                "generation": cluster["generation"], "enqueued_at": int(time.time())}
        self.sqs.send_message(QueueUrl=self.queue_url, MessageGroupId=cluster["id"],
                              MessageDeduplicationId=f"{cluster['id']}:bench-duplicate-{number}",
                              MessageBody=json.dumps(body, separators=(",", ":")))

    def send_duplicates(self, account: Account, cluster: dict[str, Any], count: int, *, pause: float = 0.0,
                        applied_after: list[float] | None = None) -> int:
        """`count` duplicate jobs, at once or each `pause` s after the last one was processed (send → processed
        appended to `applied_after`); returns `count` once the agent processed them all."""
        target = self.processed() + count
        for _ in range(count):
            if pause:
                time.sleep(pause)
                target, sent_at = self.processed() + 1, time.perf_counter()
            self._sent += 1
            self.send_duplicate(account, cluster, self._sent)
            if pause:
                self.processed_reaches(target)
                if applied_after is not None:
                    applied_after.append(time.perf_counter() - sent_at)
        self.processed_reaches(target)
        return count

    def clusters(self, account: Account) -> list[dict[str, Any]]:
        return self.api.listing(clusters_path(account.org_id), account.access_token)
