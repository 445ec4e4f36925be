"""The agent's loop over the real system with the cnpg driver: reconciles per second, Kubernetes API calls per
reconcile (and that a no-op reconcile writes nothing), the agent's memory with 100 Cluster objects.

Everything is real and on loopback: a moto server (DynamoDB + SQS) with a fresh table and queues, the API as an HTTP
server (`python -m devstack.api`), the Kubernetes test bed of devstack/kube (etcd, kube-apiserver,
kube-controller-manager and the CloudNativePG v1.30.0 operator out of cluster with its admission webhooks; no kubelet,
so pods never run and a Cluster stays in `Setting up primary`), and one `orochi-agent` process with
`OROCHI_DRIVER=cnpg`, the test bed's admin kubeconfig and its Lease in a namespace of its own. A user registered
through the API acts only through it.

1. Idle: the agent's memory, CPU and Kubernetes calls with 0 clusters.
2. Reconciles per second: N clusters (`--clusters`, default 100) created through the API as fast as it accepts them
   (4 posting threads); the time until the agent has applied every one (its `jobs_processed_total{outcome="applied"}`,
   then every Cluster object checked in the apiserver) and, with the operator running, until each cluster's API
   record shows the generation observed (CNPG acted on the spec and the agent saw it through its watch cache). The
   agent's reconcile histogram, the driver's own apply times (its log), the CPU of every process over the burst.
   Four bursts: the operator running, then stopped with its webhooks removed (they fail closed without it: no Cluster
   could be written); each with the agent live during the POSTs, and with the agent paused (SIGSTOP) until every POST
   was answered, so that it then drains a full queue without the POSTs competing for the 2 cores.
3. Memory with the first N Clusters held, once every one shows as observed (the caches hold CNPG's status of each),
   and again at the end.
4. Calls per reconcile, one cluster step by step with the operator running (between the first two bursts): create
   (first apply), scale to 2 instances, an allow-list change, then duplicate jobs of the current generation sent
   straight to its queue (a no-op) in a burst and one at a time, and a window without a job. Per step: the agent's
   Kubernetes calls (`orochi_agent_kube_requests_total` deltas), its API requests (the API's access log), and every
   object in the cluster's namespace (each namespaced resource the apiserver lists, events aside) before and after:
   which moved, and whose managedFields entry moved with it.

    .venv/bin/python -m bench.cnpg_loop [--clusters 100] [--duplicates 20] [--operator-running-only]

Every process and folder is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from bench.common import (
    ROOT,
    Histogram,
    HttpApi,
    Scrape,
    User,
    access_lines,
    aws_sqs,
    cluster_body,
    cluster_path,
    clusters_path,
    heading,
    load_average,
    machine,
    markdown_table,
    moto_stack,
    percentile,
    route,
    serve_api,
    until,
)
from devstack import agents
from devstack.kube.build import CNPG_VERSION, ETCD_VERSION, KUBERNETES_VERSION, Binaries, ensure_built
from devstack.kube.testbed import ApiError, Testbed
from devstack.ports import free_port

REGION = "nyc1"
AGENT_NAMESPACE = "orochi-agent"
POD_NAME = "orochi-agent-bench-0"
POSTERS = 4
GAP_SECONDS = 1.2  # > OROCHI_POLL_WAIT_SECONDS: moto snapshots busy message groups when a long poll starts
FAST = {  # resync and metrics out of the way so that they never add calls to a window
    "OROCHI_POLL_WAIT_SECONDS": "1",
    "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
    "OROCHI_METRICS_INTERVAL_SECONDS": "3600",
    "OROCHI_RESYNC_INTERVAL_SECONDS": "3600",
}
RECONCILE = "orochi_agent_reconcile_duration_seconds"
JOB_LATENCY = "orochi_agent_job_latency_seconds"
ENQUEUE = "orochi_agent_enqueue_to_applied_seconds"
KUBE_REQUESTS = "orochi_agent_kube_requests_total"
PROCESSED = "orochi_agent_jobs_processed_total"
FAILED = "orochi_agent_jobs_failed_total"
REPORTS = "orochi_agent_status_reports_total"
AGENT = "orochi-agent"
CLUSTERS_API = "/apis/postgresql.cnpg.io/v1/clusters"
SELECTOR = "app.kubernetes.io/managed-by=orochi-agent"
Call = tuple[str, str, str, str]  # verb, group, resource, scope
Key = tuple[str, str]  # resource, name


# --- the system --------------------------------------------------------------------------------------------


class System(HttpApi):
    """moto + the API (HTTP) + the Kubernetes test bed + one cnpg agent, logs in a fresh folder under /tmp;
    `close` stops and removes all of it."""

    email_prefix = "cnpg-loop"

    def __init__(self, *, quota: int) -> None:
        self._quota = quota
        self._stack = ExitStack()
        self._closed = False
        self.root = Path(tempfile.mkdtemp(prefix="bench-cnpg-loop-", dir="/tmp"))
        self.api_log = self.root / "api.log"
        self.agent_log = self.root / "agent.log"
        self.api: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.bed: Testbed | None = None
        self.http = requests.Session()
        self.resources: list[tuple[str, str]] = []
        atexit.register(self.close)

    def start(self) -> None:
        self.binaries: Binaries = ensure_built()
        started = time.monotonic()
        bed = Testbed(self.binaries)
        self._stack.callback(bed.close)  # registered first, closed last
        self.bed = bed.start()
        self.testbed_seconds = time.monotonic() - started
        self.resources = self._namespaced_resources()
        self.bed.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE}})
        env = self._stack.enter_context(moto_stack(ORG_CLUSTER_QUOTA=str(self._quota),
                                                   ACCESS_TOKEN_TTL_SECONDS="7200"))
        self.env = env
        self.api, self.url = serve_api(env, self.api_log)
        self.health_port = free_port()
        self.agent_env = {
            **agents.agent_environment(env, region=REGION, token=agents.create_token(env, REGION),
                                       api_url=self.url, health_port=self.health_port),
            **FAST, "OROCHI_DRIVER": "cnpg", "KUBECONFIG": str(self.bed.admin_kubeconfig),
            "OROCHI_KUBE_NAMESPACE": AGENT_NAMESPACE, "OROCHI_POD_NAME": POD_NAME,
        }
        with self.agent_log.open("ab") as log:
            self.agent = subprocess.Popen([sys.executable, "-m", "orochi_agent"], cwd=ROOT, env=self.agent_env,
                                          stdout=log, stderr=log)
        until(lambda: self._probe("/readyz"), timeout=90, what="the agent's /readyz", every=0.1)
        self.agent_process = psutil.Process(self.agent.pid)
        self.sqs = aws_sqs(env)
        self.queue_url = self.agent_env["OROCHI_QUEUE_URL"]

    def _probe(self, path: str) -> bool:
        assert self.agent is not None
        if self.agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {self.agent.returncode}:\n{self.agent_log.read_text()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.agent is not None and self.agent.poll() is None:
                self.agent.send_signal(signal.SIGCONT)  # in case it was paused
                self.agent.send_signal(signal.SIGTERM)  # drains, gives its Lease up
                try:
                    self.agent.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait(timeout=10)
            if self.api is not None and self.api.poll() is None:
                self.api.terminate()
                try:
                    self.api.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.api.kill()
            self._stack.close()  # moto, then the test bed (every process, then its folder)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the agent, from outside ----------------------------------------------------------------------------

    def scrape(self) -> Scrape:
        return Scrape(requests.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=10).text)

    def processed(self) -> float:
        return self.scrape().total(PROCESSED)

    def applied(self) -> float:
        return self.scrape().value(PROCESSED, outcome="applied")

    def applies_ms(self) -> dict[tuple[str, int], float]:
        """From the agent's log: (cluster id, generation) → the driver's apply time (ms) of its first apply."""
        found: dict[tuple[str, int], float] = {}
        for line in self.agent_log.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if match := re.match(r"applied cluster (\S+) generation (\d+) .* in (\d+) ms", message):
                found.setdefault((match[1], int(match[2])), float(match[3]))
        return found

    def log_warnings(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for line in self.agent_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("WARNING", "ERROR"):
                found[re.sub(r"cls_\S+|orochi-[a-z0-9]{20}", "…", str(entry.get("message", "")))[:160]] += 1
        return found

    def pause_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGSTOP)

    def resume_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGCONT)

    # --- the test bed's processes and objects -----------------------------------------------------------------

    def processes(self) -> dict[str, psutil.Process]:
        """Each process of the stack by role (the operator only while it runs)."""
        binaries = {str(self.binaries.kube_apiserver): "kube-apiserver", str(self.binaries.etcd): "etcd",
                    str(self.binaries.kube_controller_manager): "kube-controller-manager",
                    str(self.binaries.cnpg_manager): "cnpg-operator"}
        found = {"agent": self.agent_process}
        if self.api is not None:
            found["API (chalice local)"] = psutil.Process(self.api.pid)
        for child in psutil.Process().children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if command and command[0] in binaries:
                found[binaries[command[0]]] = child
            elif "devstack.moto_server" in command:
                found["moto"] = child
        return found

    def stop_operator(self) -> None:
        """Stop the CNPG operator and remove its webhook configurations (which would refuse every Cluster write)."""
        assert self.bed is not None
        self.bed.stop_operator()
        for configuration in yaml.safe_load_all(self.binaries.cnpg_webhooks.read_text()):
            if configuration:
                plural = configuration["kind"].lower() + "s"
                self.bed.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{plural}/cnpg-"
                                           f"{configuration['metadata']['name']}")

    def _namespaced_resources(self) -> list[tuple[str, str]]:
        """(group-version path, plural) of every namespaced resource the apiserver lists, events aside."""
        assert self.bed is not None
        paths = ["/api/v1"] + [f"/apis/{group['preferredVersion']['groupVersion']}"
                               for group in self.bed.request("GET", "/apis")["groups"]]
        found = []
        for path in paths:
            for resource in self.bed.request("GET", path)["resources"]:
                if resource["namespaced"] and "list" in resource["verbs"] and "/" not in resource["name"] \
                        and resource["name"] != "events":
                    found.append((path, resource["name"]))
        return found

    def snapshot(self, namespace: str) -> dict[Key, ObjectState]:
        """Every object in `namespace` (and the namespace itself): resourceVersion and managedFields entries."""
        assert self.bed is not None
        objects: list[tuple[str, dict[str, Any]]] = []
        try:
            objects.append(("namespaces", self.bed.request("GET", f"/api/v1/namespaces/{namespace}")))
        except ApiError as e:
            if e.status != 404:
                raise
            return {}
        for path, plural in self.resources:
            for item in self.bed.request("GET", f"{path}/namespaces/{namespace}/{plural}")["items"]:
                objects.append((plural, item))
        found = {}
        for plural, item in objects:
            metadata = item["metadata"]
            managers = {(m.get("manager", ""), m.get("operation", ""), m.get("subresource", "")):
                        json.dumps([m.get("time"), m.get("fieldsV1")], sort_keys=True)
                        for m in metadata.get("managedFields") or []}
            found[(plural, metadata["name"])] = ObjectState(metadata["resourceVersion"], managers)
        return found

    def watched(self) -> dict[str, tuple[int, int, Counter[str]]]:
        """What the agent's three watch caches select (label `app.kubernetes.io/managed-by=orochi-agent`), as the
        apiserver holds it: kind → (objects, their JSON bytes without managedFields, names by count)."""
        assert self.bed is not None
        found = {}
        for kind, path in (("Namespace", "/api/v1/namespaces"), ("Cluster", CLUSTERS_API),
                           ("Service", "/api/v1/services")):
            items = self.bed.request("GET", f"{path}?labelSelector={SELECTOR}")["items"]
            size = 0
            for item in items:
                item["metadata"].pop("managedFields", None)
                size += len(json.dumps(item, separators=(",", ":")))
            found[kind] = (len(items), size, Counter(item["metadata"]["name"] for item in items
                                                     if kind != "Namespace"))
        return found

    def cluster_objects(self) -> dict[str, dict[str, Any]]:
        """orochi cluster id → its CNPG Cluster object as the apiserver holds it."""
        assert self.bed is not None
        items = self.bed.request("GET", f"{CLUSTERS_API}?labelSelector={SELECTOR}")["items"]
        return {item["metadata"]["labels"]["orochi.io/cluster"]: item for item in items}

    # --- the public API, beyond HttpApi -----------------------------------------------------------------------

    def scale(self, user: User, cluster_id: str, **fields: Any) -> dict[str, Any]:
        response = self.call("POST", cluster_path(user.org_id, cluster_id) + "/scale", token=user.token, body=fields)
        if response.status_code != 202:
            raise RuntimeError(f"scale: {response.status_code} {response.text}")
        return dict(response.json()["cluster"])

    def patch(self, user: User, cluster_id: str, **fields: Any) -> dict[str, Any]:
        response = self.call("PATCH", cluster_path(user.org_id, cluster_id), token=user.token, body=fields)
        if response.status_code != 202:
            raise RuntimeError(f"patch: {response.status_code} {response.text}")
        return dict(response.json()["cluster"])

    def send_duplicate(self, user: User, cluster: dict[str, Any], number: int) -> None:
        """A job of the cluster's current generation straight to its queue, as the API sends one (distinct
        deduplication id)."""
        body = {"v": 1, "kind": "reconcile", "cluster_id": cluster["id"], "org_id": user.org_id, "region": REGION,
                "generation": cluster["generation"], "enqueued_at": int(time.time())}
        self.sqs.send_message(QueueUrl=self.queue_url, MessageGroupId=cluster["id"],
                              MessageDeduplicationId=f"{cluster['id']}:bench-duplicate-{number}",
                              MessageBody=json.dumps(body, separators=(",", ":")))


@dataclass(frozen=True)
class ObjectState:
    version: str
    managers: dict[tuple[str, str, str], str]


@dataclass(frozen=True)
class Move:
    key: Key
    how: str  # created, changed, deleted
    writers: tuple[str, ...]  # managers whose managedFields entry appeared or changed


def moves(before: dict[Key, ObjectState], after: dict[Key, ObjectState]) -> list[Move]:
    found = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if new is None:
            found.append(Move(key, "deleted", ()))
        elif old is None or old.version != new.version:
            writers = tuple(sorted({_manager(m) for m, v in new.managers.items()
                                    if old is None or old.managers.get(m) != v}))
            found.append(Move(key, "created" if old is None else "changed", writers or ("no managedFields",)))
    return found


def _manager(entry: tuple[str, str, str]) -> str:
    manager, operation, subresource = entry
    who = "CNPG operator (`manager`)" if manager == "manager" else manager  # the operator's binary name
    return f"{who} {operation}{'/' + subresource if subresource else ''}"


def kube_calls(scrape: Scrape) -> Counter[Call]:
    """`orochi_agent_kube_requests_total` by its labels, summed should a label set repeat (before commit 9fd5319
    the agent exposed one sample per namespace called, under the same labels)."""
    found: Counter[Call] = Counter()
    for sample in _kube_samples(scrape):
        found[(sample.labels["verb"], sample.labels["group"], sample.labels["resource"], sample.labels["scope"])] += \
            sample.value
    return found


def duplicate_series(scrape: Scrape) -> tuple[int, int]:
    """(samples of orochi_agent_kube_requests_total, distinct label sets among them) in one scrape."""
    samples = _kube_samples(scrape)
    return len(samples), len({frozenset(s.labels.items()) for s in samples})


def _kube_samples(scrape: Scrape) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return [sample for family in text_string_to_metric_families(scrape.text) for sample in family.samples
            if sample.name == KUBE_REQUESTS]


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return math.nan
    return float(times.user + times.system)


def cpu_seconds(system: System) -> dict[str, float]:
    return {name: _cpu(process) for name, process in system.processes().items()}


# --- the calls in a window -----------------------------------------------------------------------------------


@dataclass
class Calls:
    """What the agent did between two scrapes."""

    kube: Counter[Call]
    api: Counter[str]  # the agent's requests to the API, by route
    reconciles: float
    reconcile: Histogram
    job_latency: Histogram
    enqueue: Histogram
    processed: float
    failed: float
    reports: float

    @property
    def background(self) -> Counter[Call]:
        """The Lease's renewals and the watch caches' lists and watches: not any reconcile's."""
        return Counter({c: n for c, n in self.kube.items() if c[2] == "leases" or c[0] in ("list", "watch")})

    @property
    def reconciling(self) -> Counter[Call]:
        return self.kube - self.background

    def requests(self, calls: Counter[Call]) -> float:
        """HTTP requests: an apply answered 201 is counted as a patch and as a create (RBAC asks for both), one
        request."""
        return sum(n for c, n in calls.items() if not (c[0] == "create" and c[2] != "leases"))


def calls_between(system: System, before: Scrape, after: Scrape, logged: int) -> Calls:
    api = Counter(route(m, p) for m, p, _ in access_lines(system.api_log)[logged:] if p.startswith("/v1/agent/"))
    return Calls(
        kube=+(kube_calls(after) - kube_calls(before)), api=api,
        reconciles=after.histogram(RECONCILE).count - before.histogram(RECONCILE).count,
        reconcile=after.histogram(RECONCILE) - before.histogram(RECONCILE),
        job_latency=after.histogram(JOB_LATENCY) - before.histogram(JOB_LATENCY),
        enqueue=after.histogram(ENQUEUE) - before.histogram(ENQUEUE),
        processed=after.total(PROCESSED) - before.total(PROCESSED),
        failed=after.total(FAILED) - before.total(FAILED),
        reports=after.value(REPORTS) - before.value(REPORTS),
    )


# --- 1. idle and memory ----------------------------------------------------------------------------------------


@dataclass
class Memory:
    label: str
    rss: int
    pss: int
    cpu_percent: float
    calls: Calls
    seconds: float
    others: dict[str, int]  # RSS of the other processes
    watched: dict[str, tuple[int, int, Counter[str]]]


def memory(system: System, label: str, *, seconds: float = 10.0) -> Memory:
    before, logged, cpu = system.scrape(), system.api_requests(), _cpu(system.agent_process)
    time.sleep(seconds)
    info = system.agent_process.memory_full_info()
    cpu_percent = 100 * (_cpu(system.agent_process) - cpu) / seconds
    calls = calls_between(system, before, system.scrape(), logged)
    others = {}
    for name, process in system.processes().items():
        if name != "agent":
            try:
                others[name] = process.memory_info().rss
            except psutil.Error:
                continue
    return Memory(label, info.rss, info.pss, cpu_percent, calls, seconds, others, system.watched())


def quiet(system: System, *, settle: float = 5.0, timeout: float = 180.0) -> float:
    """Wait until the agent sent no status report and made no reconcile for `settle` seconds (at most `timeout`);
    the seconds waited."""
    started = time.monotonic()
    last = (system.scrape().value(REPORTS), system.scrape().histogram(RECONCILE).count)
    calm_since = time.monotonic()
    while time.monotonic() - calm_since < settle and time.monotonic() - started < timeout:
        time.sleep(0.5)
        scrape = system.scrape()
        now = (scrape.value(REPORTS), scrape.histogram(RECONCILE).count)
        if now != last:
            last, calm_since = now, time.monotonic()
    return time.monotonic() - started


# --- 2. a burst of creates ---------------------------------------------------------------------------------------


@dataclass
class Burst:
    operator: str
    paused: bool  # the agent was stopped (SIGSTOP) while the POSTs were accepted: a full queue to drain
    count: int
    posting: float  # first POST sent → last POST answered
    applied: float  # start (first POST, or the agent's resume when paused) → the applied counter reached count
    after_last_post: float
    steady_rate: float  # applied per second between the 10th and the 90th percentile cluster
    observed: float | None  # start → every cluster's API record shows its generation observed
    in_apiserver: int
    calls: Calls
    cpu: dict[str, float]  # CPU seconds of each process over start → all applied
    applies_ms: list[float]
    retried_posts: int
    load: str  # the load average when the burst began

    @property
    def label(self) -> str:
        return f"operator {self.operator}, agent {'paused during the POSTs' if self.paused else 'live'}"


def burst(system: System, user: User, count: int, operator: str, *, paused: bool, wait_observed: bool) -> Burst:
    """`count` clusters POSTed by 4 threads; with `paused`, the agent is stopped (SIGSTOP) until every POST was
    answered, so that it then drains a full queue without the API's POSTs competing for the CPU."""
    assert system.agent is not None
    load = load_average()
    before, logged = system.scrape(), system.api_requests()
    base = before.value(PROCESSED, outcome="applied")
    retried = 0
    local = threading.local()

    def post(_: int) -> str:
        nonlocal retried
        if not hasattr(local, "session"):
            local.session = requests.Session()
        for attempt in range(6):
            response = local.session.post(system.url + clusters_path(user.org_id), timeout=60,
                                          headers={"Authorization": f"Bearer {user.token}"},
                                          json=cluster_body(postgres_version="18", ip_allowlist=["203.0.113.0/24"]))
            if response.status_code == 202:
                return str(response.json()["cluster"]["id"])
            if response.status_code not in (409, 429, 503) or attempt == 5:
                raise RuntimeError(f"create cluster: {response.status_code} {response.text}")
            retried += 1
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    progress: list[tuple[float, float]] = []  # (seconds since the start, clusters applied), every 0.1 s

    def sample() -> float:
        done = system.applied() - base
        progress.append((time.perf_counter() - started, done))
        return done

    posted_all = threading.Event()

    def sample_while_posting() -> None:  # the agent is live: it applies while the POSTs go on
        while not posted_all.wait(0.1):
            sample()

    cpu = cpu_seconds(system)
    if paused:
        system.pause_agent()  # its /metrics does not answer either until it resumes
    started = posting_started = time.perf_counter()
    sampler = threading.Thread(target=sample_while_posting, daemon=True)
    if not paused:
        sampler.start()
    try:
        with ThreadPoolExecutor(POSTERS) as pool:
            ids = list(pool.map(post, range(count)))
    finally:
        posted = time.perf_counter()
        posted_all.set()
        if paused:
            cpu = cpu_seconds(system)  # the window starts when the agent resumes
            system.resume_agent()
        else:
            sampler.join(15)
    posting = posted - posting_started
    if paused:
        started = posted
    until(lambda: sample() >= count, timeout=120 + 5 * count, what=f"{count} clusters applied", every=0.1)
    applied = time.perf_counter() - started
    cpu_after = cpu_seconds(system)
    calls = calls_between(system, before, system.scrape(), logged)
    held = system.cluster_objects()
    in_apiserver = sum(1 for cluster_id in ids if cluster_id in held)
    observed = None
    if wait_observed:
        waiting = set(ids)

        def all_observed() -> bool:
            for cluster in system.clusters(user):
                if cluster["id"] in waiting and cluster["observed_generation"] >= cluster["generation"]:
                    waiting.discard(cluster["id"])
            return not waiting

        until(all_observed, timeout=300 + 5 * count, what=f"{count} clusters observed", every=1.0)
        observed = time.perf_counter() - started
    low, high = _at(progress, 0.1 * count), _at(progress, 0.9 * count)
    steady = 0.8 * count / (high - low) if high > low else math.nan
    mine = set(ids)
    applies = [ms for (cluster_id, generation), ms in system.applies_ms().items()
               if cluster_id in mine and generation == 1]
    return Burst(operator, paused, count, posting, applied, applied - (0 if paused else posting), steady, observed,
                 in_apiserver, calls, {name: cpu_after[name] - cpu.get(name, math.nan) for name in cpu_after},
                 applies, retried, load)


def _at(progress: list[tuple[float, float]], done: float) -> float:
    """When the applied count first reached `done` (polled every 0.1 s)."""
    return next((t for t, n in progress if n >= done), math.nan)


# --- 4. one cluster, step by step ----------------------------------------------------------------------------


@dataclass
class Step:
    label: str
    jobs: int
    seconds: float
    calls: Calls
    moves: list[Move]
    applied_after: list[float] = field(default_factory=list)

    @property
    def agent_writes(self) -> list[Move]:
        return [m for m in self.moves if any(w.startswith(AGENT + " ") for w in m.writers)]

    @property
    def other_moves(self) -> list[Move]:
        return [m for m in self.moves if m not in self.agent_writes]


def step(system: System, namespace: str, label: str, action: Callable[[list[float]], int]) -> Step:
    objects = system.snapshot(namespace)
    before, logged = system.scrape(), system.api_requests()
    started = time.perf_counter()
    applied_after: list[float] = []
    jobs = action(applied_after)
    seconds = time.perf_counter() - started
    after = system.scrape()
    calls = calls_between(system, before, after, logged)
    return Step(label, jobs, seconds, calls, moves(objects, system.snapshot(namespace)), applied_after)


def processed_reaches(system: System, target: float) -> None:
    until(lambda: system.processed() >= target, timeout=120, what=f"{target:.0f} jobs processed")


def observed(system: System, user: User, cluster_id: str) -> dict[str, Any]:
    """Wait until the API shows the cluster's generation observed (CNPG acted on it, the agent saw it)."""
    def check() -> dict[str, Any] | None:
        cluster = system.cluster(user, cluster_id)
        return cluster if cluster and cluster["observed_generation"] >= cluster["generation"] else None

    return dict(until(check, timeout=120, what=f"{cluster_id} observed", every=0.1))


def settled(system: System, namespace: str, *, calm: float = 3.0, timeout: float = 60.0) -> None:
    """Wait until no object of the namespace moved for `calm` seconds (CNPG and the controllers are done)."""
    deadline = time.monotonic() + timeout
    last, since = system.snapshot(namespace), time.monotonic()
    while time.monotonic() - since < calm:
        if time.monotonic() > deadline:
            return  # reported as moves of the next step, by their writers
        time.sleep(0.5)
        now = system.snapshot(namespace)
        if {k: v.version for k, v in now.items()} != {k: v.version for k, v in last.items()}:
            last, since = now, time.monotonic()


def single_cluster(system: System, user: User, duplicates: int) -> tuple[list[Step], str]:
    from orochi_agent.drivers.cnpg import names  # the agent's package, installed in this venv

    steps: list[Step] = []
    holder: dict[str, Any] = {}

    def create(_: list[float]) -> int:
        target = system.processed() + 1
        holder.update(system.create(user, postgres_version="18", ip_allowlist=["203.0.113.0/24"]))
        processed_reaches(system, target)
        return 1

    # The namespace is named from the id, which the API makes: snapshot "before" is of a namespace that does not
    # exist yet (empty) whatever its name.
    steps.append(step(system, "orochi-not-yet-created", "create (first apply)", create))
    cluster_id = holder["id"]
    namespace = names.namespace(cluster_id)
    created = steps[-1]
    created.moves = moves({}, system.snapshot(namespace))
    observed(system, user, cluster_id)
    settled(system, namespace)

    def change(label: str, send: Callable[[], dict[str, Any]]) -> None:
        def action(_: list[float]) -> int:
            target = system.processed() + 1
            send()
            processed_reaches(system, target)
            return 1

        steps.append(step(system, namespace, label, action))
        observed(system, user, cluster_id)
        settled(system, namespace)

    change("scale 1 → 2 instances", lambda: system.scale(user, cluster_id, instances=2))
    change("allow-list change", lambda: system.patch(user, cluster_id, ip_allowlist=["198.51.100.0/24"]))
    current = system.cluster(user, cluster_id)
    assert current is not None
    sent = 0

    def burst_of_duplicates(_: list[float]) -> int:
        nonlocal sent
        target = system.processed() + duplicates
        for _ in range(duplicates):
            sent += 1
            system.send_duplicate(user, current, sent)
        processed_reaches(system, target)
        return duplicates

    def one_at_a_time(applied_after: list[float]) -> int:
        nonlocal sent
        for _ in range(duplicates):
            time.sleep(GAP_SECONDS)
            target = system.processed() + 1
            sent_at = time.perf_counter()
            sent += 1
            system.send_duplicate(user, current, sent)
            processed_reaches(system, target)
            applied_after.append(time.perf_counter() - sent_at)
        return duplicates

    steps.append(step(system, namespace, f"no-op: {duplicates} duplicate jobs in a burst", burst_of_duplicates))
    steps.append(step(system, namespace, f"no-op: {duplicates} duplicate jobs one at a time", one_at_a_time))
    longest = max(s.seconds for s in steps[-2:])

    def nothing(_: list[float]) -> int:
        time.sleep(longest)
        return 0

    steps.append(step(system, namespace, "baseline: no job", nothing))
    return steps, namespace


# --- output ----------------------------------------------------------------------------------------------------


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f}"


def _sec(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _calls(calls: Counter[Call], per: float = 1.0) -> str:
    parts = []
    for (verb, group, resource, _scope), n in sorted(calls.items(), key=lambda item: (-item[1], item[0])):
        what = resource if not group or group in ("", "networking.k8s.io") else f"{resource}.{group.split('.')[0]}"
        value = n / per
        parts.append(f"{value:.2f}".rstrip("0").rstrip(".") + f" {verb} {what}")
    return ", ".join(parts) or "0"


def _api(calls: Counter[str], per: float = 1.0) -> str:
    short = {"GET /v1/agent/clusters/{id}": "desired state", "POST /v1/agent/clusters/{id}/status": "status",
             "POST /v1/agent/heartbeat": "heartbeat", "POST /v1/agent/metrics": "metrics",
             "GET /v1/agent/clusters": "resync"}
    return ", ".join(f"{n / per:.2f}".rstrip("0").rstrip(".") + f" {short.get(r, r)}"
                     for r, n in sorted(calls.items())) or "0"


def print_setup(system: System) -> None:
    print(f"\nKubernetes {KUBERNETES_VERSION} (kube-apiserver, kube-controller-manager), etcd {ETCD_VERSION}, "
          f"CloudNativePG {CNPG_VERSION} (operator out of cluster, its webhooks registered); the test bed started in "
          f"{system.testbed_seconds:.1f} s (binaries cached). The agent: `python -m orochi_agent`, OROCHI_DRIVER=cnpg, "
          f"the test bed's admin kubeconfig (system:masters), its Lease in namespace `{AGENT_NAMESPACE}`, "
          "concurrency 4 (default), " + ", ".join(f"{k.removeprefix('OROCHI_')}={v}" for k, v in FAST.items())
          + ", heartbeat default (30 s). Clusters: PostgreSQL 18, db-s-1vcpu-2gb, 1 instance, 20 GB, one allow-list "
          "entry.")


def print_bursts(bursts: list[Burst]) -> None:
    heading("1. Reconciles per second: clusters created through the API as fast as it accepts them")
    rows = []
    for b in bursts:
        rows.append([b.label, b.count, f"{b.posting:.1f} ({b.count / b.posting:.1f}/s)", f"{b.applied:.1f}",
                     f"**{b.count / b.applied:.1f}**", _sec(b.steady_rate, 1),
                     "–" if b.paused else f"{b.after_last_post:.1f}", _sec(b.observed, 1),
                     f"{b.in_apiserver}/{b.count}", f"{b.calls.failed:.0f}", b.retried_posts, b.load])
    print(markdown_table(["burst", "clusters", "POSTs, s (accepted/s)", "start → all applied, s", "applied/s",
                          "applied/s, 10th→90th cluster", "last POST → all applied, s", "start → all observed, s",
                          "Cluster objects in the apiserver", "failed attempts", "POSTs retried (409/503)",
                          "load average at its start"], rows))
    print("\nStart: the first POST when the agent is live; its resume (SIGCONT, every POST answered and every job "
          "queued) when it was paused (SIGSTOP) during the POSTs, which measures the agent draining a full queue "
          "without the POSTs competing for the CPU. \"applied\": the agent's "
          "`jobs_processed_total{outcome=\"applied\"}` (each job deleted after its reconcile), then each Cluster "
          "checked in the apiserver. \"observed\": every cluster's API record shows `observed_generation = "
          "generation`: CNPG recorded the app Secret written after the Cluster, the agent saw it through its watch "
          "cache and reported it (never, with the operator stopped). With the operator stopped its webhooks are "
          "removed too: they fail closed, and no Cluster could be written.")
    print()
    rows = []
    for b in bursts:
        h = b.calls.reconcile
        applies = [ms / 1000 for ms in b.applies_ms]
        rows.append([b.label, f"{h.count:.0f}", _sec(h.mean, 3), _sec(h.quantile(0.5), 3), _sec(h.quantile(0.95), 3),
                     len(applies), _sec(percentile(applies, 50), 3), _sec(percentile(applies, 95), 3),
                     _sec(max(applies) if applies else math.nan, 3), _sec(b.calls.job_latency.mean, 2),
                     _sec(b.calls.job_latency.quantile(0.95), 2)])
    print(markdown_table(["burst", "reconciles", "reconcile mean, s", "p50 (buckets)", "p95 (buckets)",
                          "applies logged", "the driver's apply p50, s", "p95", "max", "job receipt → deleted mean, s",
                          "p95 (buckets)"], rows))
    print("\n`reconcile_duration_seconds` (fetch the desired state, apply, observe, report) from the agent's "
          "/metrics, a difference of scrapes around the burst; buckets 0.1, 0.25, 0.5, 1, 2, 3, 5 … s, so its "
          "quantiles are interpolations, the mean is exact. The driver's apply: its own log line (\"applied cluster "
          "… in N ms\"), exact. Receipt → deleted includes the wait for one of the 4 workers.")
    print()
    names = sorted({n for b in bursts for n in b.cpu}, key=lambda n: (n != "agent", n))
    rows = [[n, *(f"{b.cpu.get(n, math.nan):.1f} ({100 * b.cpu.get(n, math.nan) / b.applied:.0f} %)"
                  if not math.isnan(b.cpu.get(n, math.nan)) else "–" for b in bursts)] for n in names]
    rows.append(["agent CPU ms per reconcile", *(f"{1000 * b.cpu['agent'] / max(b.calls.reconciles, 1):.0f}"
                                                  for b in bursts)])
    print(markdown_table(["CPU s over start → all applied (% of one core)", *(b.label for b in bursts)], rows))


def print_calls(steps: list[Step], bursts: list[Burst]) -> None:
    heading("2. Kubernetes API calls per reconcile (orochi_agent_kube_requests_total deltas)")
    rows = []
    for s in steps:
        c = s.calls
        per = c.reconciles or 1
        rows.append([s.label, s.jobs, f"{c.reconciles:.0f}",
                     _sec(c.requests(c.reconciling) / per, 2) if c.reconciles else "0",
                     _calls(c.reconciling, per) if c.reconciles else _calls(c.reconciling),
                     _api(c.api, per) if c.reconciles else _api(c.api), _calls(c.background),
                     f"{c.reports:.0f}", _sec(c.reconcile.total * 1000 / per, 0) if c.reconciles else "–"])
    for b in bursts:
        c = b.calls
        per = c.reconciles or 1
        rows.append([f"burst: {b.label} (average)", f"{c.processed:.0f}", f"{c.reconciles:.0f}",
                     _sec(c.requests(c.reconciling) / per, 2), _calls(c.reconciling, per), _api(c.api, per),
                     _calls(c.background), f"{c.reports:.0f}", _sec(c.reconcile.total * 1000 / per, 0)])
    print(markdown_table(["reconcile", "jobs", "reconciles", "Kubernetes requests / reconcile",
                          "by verb and resource, per reconcile", "API requests by the agent (per reconcile)",
                          "background in the window (Lease, watch caches)", "status reports", "reconcile ms each"],
                         rows))
    print("\nAn apply answered 201 (it created the object) counts as one `patch` and one `create` in the metric "
          "(RBAC asks for both); the requests column counts it once. \"background\": the Lease (get + update every "
          "5 s) and the watch caches' lists and watches; not part of any reconcile. The status reports include "
          "those of the status loop (every 0.5 s, on a change CNPG wrote).")

    heading("3. What each step wrote: every object of the cluster's namespace before and after")
    rows = []
    for s in steps:
        agent = ", ".join(f"{m.key[0]}/{m.key[1]}" + (f" ({m.how})" if m.how != "changed" else "")
                          for m in s.agent_writes) or "**nothing**"
        others = Counter(w for m in s.other_moves for w in m.writers)
        rows.append([s.label, f"{s.seconds:.1f}", len(s.moves), agent,
                     ", ".join(f"{n}× {w}" for w, n in sorted(others.items())) or "none"])
    print(markdown_table(["step", "s", "objects whose resourceVersion moved", "written by the agent (field manager "
                          "orochi-agent)", "moved by others (their managedFields entries that moved)"], rows))
    for s in steps:
        if s.applied_after:
            print(f"\n\"{s.label}\": send → processed (its counter polled every 20 ms), each job after a "
                  f"{GAP_SECONDS} s pause: p50 {percentile(s.applied_after, 50) * 1000:.0f} ms, "
                  f"p95 {percentile(s.applied_after, 95) * 1000:.0f} ms, max {max(s.applied_after) * 1000:.0f} ms")
    no_ops = [s for s in steps if s.label.startswith("no-op")]
    verdict = all(not s.moves for s in no_ops)
    print(f"\nA no-op reconcile writes nothing: **{'yes' if verdict else 'no'}** — objects moved in the no-op windows: "
          + ", ".join(f"{len(s.moves)} ({s.label})" for s in no_ops) + ". Objects compared: the namespace and every "
          "object the apiserver lists in it (each namespaced resource but events), by resourceVersion; the "
          "writers are the managers whose managedFields entry appeared or changed with the move.")


def print_memory(points: list[Memory]) -> None:
    heading("4. Memory: the agent's RSS, and the test bed's for context")
    others = sorted({n for m in points for n in m.others})
    rows = []
    for m in points:
        rows.append([m.label, _mib(m.rss), _mib(m.pss), f"{m.cpu_percent:.1f}", _calls(m.calls.kube),
                     *(_mib(m.others[n]) if n in m.others else "–" for n in others)])
    print(markdown_table(["when", "agent RSS MiB", "agent PSS MiB", "agent CPU % (10 s)",
                          "its Kubernetes calls in those 10 s", *(f"{n} RSS MiB" for n in others)], rows))
    print()
    rows = []
    for m in points:
        cells = []
        for kind in ("Namespace", "Cluster", "Service"):
            count, size, names_ = m.watched.get(kind, (0, 0, Counter()))
            by_name = ", ".join(f"{n}× {name}" for name, n in sorted(names_.items()))
            cells.append(f"{count} ({size / 1024:.0f} KiB)" + (f": {by_name}" if by_name and kind == "Service" else ""))
        rows.append([m.label, *cells])
    print(markdown_table(["when", "Namespaces its cache selects (JSON without managedFields)", "Clusters",
                          "Services"], rows))
    print("\nThe caches select by `app.kubernetes.io/managed-by=orochi-agent`; the driver also keeps the Namespace, "
          "Cluster and Service as its own last write returned them (a second copy of each, without managedFields).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100, help="clusters per burst (and held for the memory figure)")
    parser.add_argument("--duplicates", type=int, default=20, help="duplicate jobs per no-op window")
    parser.add_argument("--operator-running-only", action="store_true",
                        help="skip the bursts with the operator stopped (and its webhooks removed)")
    args = parser.parse_args()
    if args.clusters < 1 or args.duplicates < 1:
        parser.error("every count must be at least 1")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: sys.exit(1))

    info = machine()
    print(f"# The agent's loop (cnpg driver)\n\n{info['date']} · {info['cpus']} CPUs ({info['cpu']}) · "
          f"{info['memory']} RAM · Python {info['python']} · {info['platform']}\n\n"
          f"_load average {load_average()} at start_", flush=True)
    started = time.monotonic()
    system = System(quota=4 * args.clusters + 10)
    try:
        system.start()
        user = system.register()
        time.sleep(3)
        points = [memory(system, "idle, 0 clusters (just started)")]
        n = args.clusters
        bursts = [burst(system, user, n, "running", paused=False, wait_observed=True)]
        waited = quiet(system)
        points.append(memory(system, f"{n} Clusters held, every one observed (operator running; quiet "
                                     f"{waited:.0f} s later)"))
        steps, _ = single_cluster(system, user, args.duplicates)
        bursts.append(burst(system, user, n, "running", paused=True, wait_observed=True))
        if not args.operator_running_only:
            system.stop_operator()
            time.sleep(2)
            bursts.append(burst(system, user, n, "stopped", paused=False, wait_observed=False))
            bursts.append(burst(system, user, n, "stopped", paused=True, wait_observed=False))
        waited = quiet(system)
        points.append(memory(system, f"{sum(b.count for b in bursts) + 1} Clusters held (operator "
                                     f"{'running' if args.operator_running_only else 'stopped'}; quiet "
                                     f"{waited:.0f} s later)"))
        warnings = system.log_warnings()
        samples, distinct = duplicate_series(system.scrape())
    except BaseException:
        if system.agent_log.exists():
            print("the agent's log, last lines:\n" + "\n".join(system.agent_log.read_text(errors="replace")
                                                              .splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        system.close()
    print_setup(system)
    print_bursts(bursts)
    print_calls(steps, bursts)
    print_memory(points)
    if samples > distinct:
        print(f"\nThe agent's last /metrics held {samples} samples of `{KUBE_REQUESTS}` under only {distinct} "
              "distinct label sets: the same series repeats (this benchmark sums them; a Prometheus server keeps the "
              "first of each and counts the rest in `prometheus_target_scrapes_sample_duplicate_timestamp_total`).")
    if warnings:
        print("\nWarnings in the agent's log (ids elided): "
              + "; ".join(f"{n}× {message}" for message, n in warnings.most_common(8)))
    print(f"\n_load average {load_average()} at the end; {time.monotonic() - started:.0f} s in all_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
