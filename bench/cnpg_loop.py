"""The agent's loop over the real system with the cnpg driver, section (h) of docs/benchmarks.md: reconciles per
second, Kubernetes calls per reconcile (and that a no-op writes nothing), the agent's memory with N Clusters.

moto, the API over HTTP and one `orochi-agent` with `OROCHI_DRIVER=cnpg` (bench.loop) against the Kubernetes test
bed of devstack/kube (etcd, kube-apiserver, kube-controller-manager, the CloudNativePG operator out of cluster with
its webhooks; no kubelet, so a Cluster stays in `Setting up primary`), the agent's Lease in a namespace of its own.

1. Idle: the agent's memory, CPU and Kubernetes calls with 0 clusters.
2. Bursts of N clusters POSTed by 4 threads: until the agent applied every one (then each Cluster checked in the
   apiserver) and, with the operator running, until every API record shows its generation observed; the reconcile
   histogram, the driver's apply times (its log), every process's CPU. With the operator running, then stopped
   (its webhooks removed: they fail closed); each with the agent live, and paused (SIGSTOP) during the POSTs.
3. Memory with the first N Clusters held, every one observed, and at the end.
4. One cluster step by step (operator running): create, scale to 2, an allow-list change, duplicate jobs in a burst
   and one at a time, no job. Per step the agent's Kubernetes calls and API requests, and every object of the
   namespace before and after: which moved, and whose managedFields entry moved with it.

    .venv/bin/python -m bench.cnpg_loop [--clusters 100] [--duplicates 20] [--operator-running-only]
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil
import requests

from bench.kube import Bed, Call, Move, kube_calls, moves
from bench import loop
from bench.loop import GAP_SECONDS, PROCESSED, Histogram, Scrape, System, per, routes
from bench.report import banner, heading, load_average, markdown_table, mib, percentile, sec
from devstack.harness import Account, cluster_body, clusters_path, until
from devstack.kube.build import CNPG_VERSION, ETCD_VERSION, KUBERNETES_VERSION, ensure_built
from devstack.kube.testbed import Testbed

AGENT_NAMESPACE, POD_NAME, POSTERS = "orochi-agent", "orochi-agent-bench-0", 4
FAST = {**loop.FAST, "OROCHI_METRICS_INTERVAL_SECONDS": "3600"}
RECONCILE, JOB_LATENCY = "orochi_agent_reconcile_duration_seconds", "orochi_agent_job_latency_seconds"
REPORTS = "orochi_agent_status_reports_total"


class CnpgSystem(System):
    def start_cnpg(self) -> None:
        self.binaries = ensure_built()
        started = time.monotonic()
        testbed = Testbed(self.binaries)
        self._stack.callback(testbed.close)  # registered first, closed last
        self.bed = Bed(testbed.start(), self.binaries)
        self.testbed_seconds = time.monotonic() - started
        testbed.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": AGENT_NAMESPACE}})
        self.start({**FAST, "OROCHI_DRIVER": "cnpg", "KUBECONFIG": str(testbed.admin_kubeconfig),
                    "OROCHI_KUBE_NAMESPACE": AGENT_NAMESPACE, "OROCHI_POD_NAME": POD_NAME})

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the agent, the API and every process of the bed and moto."""
        found = {"agent": self.agent_process, "API (chalice local)": psutil.Process(self.api.process.pid),
                 **self.bed.processes()}
        seconds = {}
        for name, process in found.items():
            try:
                seconds[name] = sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
        return seconds

    def observed(self, user: Account, ids: set[str], timeout: float) -> None:
        """Until the API shows every cluster of `ids` with its generation observed."""
        waiting = set(ids)

        def all_observed() -> bool:
            waiting.difference_update(c["id"] for c in self.clusters(user)
                                      if c["observed_generation"] >= c["generation"])
            return not waiting

        until(all_observed, timeout=timeout, what=f"{len(ids)} clusters observed", every=1.0)


@dataclass
class Calls:
    """What the agent did between two scrapes."""

    kube: Counter[Call]
    api: Counter[str]
    reconcile: Histogram
    job_latency: Histogram
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

    def requests(self) -> float:
        """HTTP requests of the reconciles: an apply answered 201 counts as a patch and a create (RBAC asks for
        both), one request."""
        return sum(n for c, n in self.reconciling.items() if c[0] != "create")


def calls_between(system: CnpgSystem, before: Scrape, logged: int) -> Calls:
    after = system.scrape()
    return Calls(+(kube_calls(after) - kube_calls(before)),
                 Counter(r for r in system.requests_since(logged) if "/v1/agent/" in r),
                 after.histogram(RECONCILE) - before.histogram(RECONCILE),
                 after.histogram(JOB_LATENCY) - before.histogram(JOB_LATENCY), after.total(PROCESSED) -
                 before.total(PROCESSED), after.total("orochi_agent_jobs_failed_total") -
                 before.total("orochi_agent_jobs_failed_total"), after.value(REPORTS) - before.value(REPORTS))


def memory(system: CnpgSystem, label: str, seconds: float = 10.0) -> list[str]:
    before, logged, cpu = system.scrape(), system.api_requests(), system.agent_cpu()
    time.sleep(seconds)
    info, calls = system.agent_process.memory_full_info(), calls_between(system, before, logged)
    others = {n: p.memory_info().rss for n, p in system.bed.processes().items()}
    cells = [label, mib(info.rss), mib(info.pss), f"{100 * (system.agent_cpu() - cpu) / seconds:.1f}",
             _calls(calls.kube), *(mib(others[n]) if n in others else "–" for n in OTHERS)]
    for kind, (count, size, names) in system.bed.watched().items():
        by_name = ", ".join(f"{n}× {name}" for name, n in sorted(names.items())) if kind == "Service" else ""
        cells.append(f"{count} ({size / 1024:.0f} KiB)" + (f": {by_name}" if by_name else ""))
    return cells


OTHERS = ("cnpg-operator", "etcd", "kube-apiserver", "kube-controller-manager", "moto")


def quiet(system: CnpgSystem, *, settle: float = 5.0, timeout: float = 180.0) -> float:
    """Until the agent made no status report and no reconcile for `settle` s (at most `timeout`); seconds waited."""
    started = calm_since = time.monotonic()
    last: tuple[float, float] | None = None
    while time.monotonic() - calm_since < settle and time.monotonic() - started < timeout:
        scrape = system.scrape()
        if (now := (scrape.value(REPORTS), scrape.histogram(RECONCILE).count)) != last:
            last, calm_since = now, time.monotonic()
        time.sleep(0.5)
    return time.monotonic() - started


@dataclass
class Burst:
    label: str
    count: int
    posting: float  # first POST sent → last POST answered
    applied: float  # start (first POST, or the agent's resume when paused) → all applied
    after_last_post: float | None
    steady_rate: float  # applied per second between the 10th and the 90th percentile cluster
    observed: float | None  # start → every cluster's API record shows its generation observed
    in_apiserver: int
    calls: Calls
    cpu: dict[str, float]
    applies: list[float]
    retried_posts: int
    load: str


def burst(system: CnpgSystem, user: Account, count: int, operator: str, *, paused: bool) -> Burst:
    """`count` clusters POSTed by 4 threads; with `paused`, the agent is stopped (SIGSTOP) until every POST was
    answered, so that it then drains a full queue without the POSTs competing for the CPU."""
    assert system.agent is not None
    load, before, logged = load_average(), system.scrape(), system.api_requests()
    base, local, retried = before.value(PROCESSED, outcome="applied"), threading.local(), []

    def post(_: int) -> str:
        local.session = getattr(local, "session", None) or requests.Session()
        for attempt in range(6):
            response = local.session.post(system.api.url + clusters_path(user.org_id), timeout=60,
                                          headers={"Authorization": f"Bearer {user.access_token}"},
                                          json=cluster_body(postgres_version="18", ip_allowlist=["203.0.113.0/24"]))
            if response.status_code == 202:
                return str(response.json()["cluster"]["id"])
            if response.status_code not in (409, 429, 503) or attempt == 5:
                raise RuntimeError(f"create cluster: {response.status_code} {response.text}")
            retried.append(response.status_code)
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    progress: list[tuple[float, float]] = []  # (seconds since the start, clusters applied)

    def sample() -> float:
        progress.append((time.perf_counter() - started, system.scrape().value(PROCESSED, outcome="applied") - base))
        return progress[-1][1]

    posted_all = threading.Event()

    def sample_while_posting() -> None:  # the agent is live: it applies while the POSTs go on
        while not posted_all.wait(0.1):
            sample()

    sampler = threading.Thread(target=sample_while_posting, daemon=True)
    cpu = system.cpu()
    if paused:
        system.agent.send_signal(signal.SIGSTOP)  # its /metrics does not answer either until it resumes
    started = time.perf_counter()
    if not paused:
        sampler.start()
    try:
        with ThreadPoolExecutor(POSTERS) as pool:
            ids = list(pool.map(post, range(count)))
    finally:
        posting = time.perf_counter() - started
        posted_all.set()
        if paused:
            cpu, started = system.cpu(), time.perf_counter()  # the window starts when the agent resumes
            system.agent.send_signal(signal.SIGCONT)
        else:
            sampler.join(15)
    until(lambda: sample() >= count, timeout=120 + 5 * count, what=f"{count} clusters applied", every=0.1)
    applied, cpu_after = time.perf_counter() - started, system.cpu()
    calls, held = calls_between(system, before, logged), system.bed.cluster_objects()
    observed = None
    if operator == "running":
        system.observed(user, set(ids), timeout=300 + 5 * count)
        observed = time.perf_counter() - started
    low, high = (next((t for t, n in progress if n >= share * count), math.nan) for share in (0.1, 0.9))
    mine = set(ids)
    return Burst(f"operator {operator}, agent {'paused during the POSTs' if paused else 'live'}", count, posting,
                 applied, None if paused else applied - posting, 0.8 * count / (high - low) if high > low else math.nan,
                 observed, sum(1 for c in ids if c in held), calls,
                 {name: cpu_after[name] - cpu.get(name, math.nan) for name in cpu_after},
                 [ms / 1000 for (c, g), ms in system.logged_ms(r"applied cluster (\S+) generation (\d+) .* in (\d+) ms").items()
                  if c in mine and g == "1"], len(retried), load)


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
        return [m for m in self.moves if any(w.startswith("orochi-agent ") for w in m.writers)]


def single_cluster(system: CnpgSystem, user: Account, duplicates: int) -> list[Step]:
    from orochi_agent.drivers.cnpg import names  # the agent's package, installed in this venv

    steps: list[Step] = []
    cluster: dict[str, Any] = {}

    def step(label: str, action: Callable[[list[float]], int], namespace: str) -> None:
        objects, before, logged, started = system.bed.snapshot(namespace), system.scrape(), system.api_requests(), \
            time.perf_counter()
        applied_after: list[float] = []
        jobs = action(applied_after)
        seconds = time.perf_counter() - started
        steps.append(Step(label, jobs, seconds, calls_between(system, before, logged), [], applied_after))
        cluster.update(system.api.get_cluster(user, cluster["id"]))
        namespace = names.namespace(cluster["id"])
        steps[-1].moves = moves(objects, system.bed.snapshot(namespace))
        if jobs == 1:
            system.observed(user, {cluster["id"]}, timeout=120)
            system.bed.settled(namespace)

    def change(send: Callable[[], Any]) -> Callable[[list[float]], int]:
        def action(_: list[float]) -> int:
            target = system.processed() + 1
            send()
            system.processed_reaches(target)
            return 1
        return action

    def duplicates_sent(pause: float) -> Callable[[list[float]], int]:
        return lambda applied_after: system.send_duplicates(user, cluster, duplicates, pause=pause,
                                                            applied_after=applied_after)

    def create() -> None:
        cluster.update(system.api.create_cluster(user, postgres_version="18",
                                                 ip_allowlist=["203.0.113.0/24"])["cluster"])

    # The namespace is named from the id, which the API makes: "before" is of a namespace that does not exist yet.
    step("create (first apply)", change(create), "orochi-not-yet-created")
    namespace = names.namespace(cluster["id"])
    step("scale 1 → 2 instances", change(lambda: system.api.change_cluster(user, "POST", cluster["id"], "/scale",
                                                                          {"instances": 2})), namespace)
    step("allow-list change", change(lambda: system.api.change_cluster(user, "PATCH", cluster["id"], body={
        "ip_allowlist": ["198.51.100.0/24"]})), namespace)
    step(f"no-op: {duplicates} duplicate jobs in a burst", duplicates_sent(0), namespace)
    step(f"no-op: {duplicates} duplicate jobs one at a time", duplicates_sent(GAP_SECONDS), namespace)
    longest = max(s.seconds for s in steps[-2:])
    step("baseline: no job", lambda _: time.sleep(longest) or 0, namespace)
    return steps


def _calls(calls: Counter[Call], jobs: float = 1.0) -> str:
    def what(group: str, resource: str) -> str:
        return resource if group in ("", "networking.k8s.io") else f"{resource}.{group.split('.')[0]}"

    return ", ".join(f"{per(n, jobs)} {verb} {what(group, resource)}"
                     for (verb, group, resource, _), n in sorted(calls.items(), key=lambda i: (-i[1], i[0]))) or "0"


def print_bursts(bursts: list[Burst]) -> None:
    heading("1. Reconciles per second: clusters created through the API as fast as it accepts them")
    print(markdown_table(["burst", "clusters", "POSTs, s (accepted/s)", "start → all applied, s", "applied/s",
                          "applied/s, 10th→90th cluster", "last POST → all applied, s", "start → all observed, s",
                          "Cluster objects in the apiserver", "failed attempts", "POSTs retried (409/429/503)",
                          "load average at its start"],
                         [[b.label, b.count, f"{b.posting:.1f} ({b.count / b.posting:.1f}/s)", f"{b.applied:.1f}",
                           f"**{b.count / b.applied:.1f}**", sec(b.steady_rate, 1), sec(b.after_last_post, 1),
                           sec(b.observed, 1), f"{b.in_apiserver}/{b.count}", f"{b.calls.failed:.0f}",
                           b.retried_posts, b.load]
                          for b in bursts]))
    print("\n" + markdown_table(
        ["burst", "reconciles", "reconcile mean, s", "p50 (buckets)", "p95 (buckets)", "applies logged",
         "the driver's apply p50, s", "p95", "max", "job receipt → deleted mean, s", "p95 (buckets)"],
        [[b.label, f"{b.calls.reconcile.count:.0f}", sec(b.calls.reconcile.mean, 3),
          sec(b.calls.reconcile.quantile(0.5), 3), sec(b.calls.reconcile.quantile(0.95), 3), len(b.applies),
          sec(percentile(b.applies, 50), 3), sec(percentile(b.applies, 95), 3),
          sec(max(b.applies, default=math.nan), 3),
          sec(b.calls.job_latency.mean), sec(b.calls.job_latency.quantile(0.95))] for b in bursts]))
    roles = sorted({n for b in bursts for n in b.cpu}, key=lambda n: (n != "agent", n))
    rows = [[n, *(f"{b.cpu[n]:.1f} ({100 * b.cpu[n] / b.applied:.0f} %)" if not math.isnan(b.cpu.get(n, math.nan))
                  else "–" for b in bursts)] for n in roles]
    rows.append(["agent CPU ms per reconcile", *(f"{1000 * b.cpu['agent'] / max(b.calls.reconcile.count, 1):.0f}"
                                                  for b in bursts)])
    print("\n" + markdown_table(["CPU s over start → all applied (% of one core)", *(b.label for b in bursts)], rows))


def print_steps(steps: list[Step], bursts: list[Burst]) -> None:
    heading("2. Kubernetes API calls per reconcile (orochi_agent_kube_requests_total deltas)")
    rows = []
    for label, jobs, c in [(s.label, s.jobs, s.calls) for s in steps] + \
            [(f"burst: {b.label} (average)", int(b.calls.processed), b.calls) for b in bursts]:
        each = c.reconcile.count or 1
        rows.append([label, jobs, f"{c.reconcile.count:.0f}", sec(c.requests() / each) if c.reconcile.count else "0",
                     _calls(c.reconciling, each), routes(c.api, each), _calls(c.background), f"{c.reports:.0f}",
                     sec(c.reconcile.total * 1000 / each, 0) if c.reconcile.count else "–"])
    print(markdown_table(["reconcile", "jobs", "reconciles", "Kubernetes requests / reconcile",
                          "by verb and resource, per reconcile", "API requests by the agent (per reconcile)",
                          "background in the window (Lease, watch caches)", "status reports", "reconcile ms each"],
                         rows))
    heading("3. What each step wrote: every object of the cluster's namespace before and after")
    rows = []
    for s in steps:
        others = Counter(w for m in s.moves if m not in s.agent_writes for w in m.writers)
        rows.append([s.label, f"{s.seconds:.1f}", len(s.moves), ", ".join(
            f"{m.key[0]}/{m.key[1]}" + (f" ({m.how})" if m.how != "changed" else "") for m in s.agent_writes)
            or "**nothing**", ", ".join(f"{n}× {w}" for w, n in sorted(others.items())) or "none"])
    print(markdown_table(["step", "s", "objects whose resourceVersion moved",
                          "written by the agent (field manager orochi-agent)",
                          "moved by others (their managedFields entries that moved)"], rows))
    for s in steps:
        if s.applied_after:
            print(f"\n\"{s.label}\": send → processed, each job after a {GAP_SECONDS} s pause: p50 "
                  f"{percentile(s.applied_after, 50) * 1000:.0f} ms, p95 {percentile(s.applied_after, 95) * 1000:.0f} "
                  f"ms, max {max(s.applied_after) * 1000:.0f} ms")
    no_ops = [s for s in steps if s.label.startswith("no-op")]
    print(f"\nA no-op reconcile writes nothing: **{'yes' if not any(s.moves for s in no_ops) else 'no'}** — objects "
          "moved in the no-op windows: " + ", ".join(f"{len(s.moves)} ({s.label})" for s in no_ops))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100, help="clusters per burst (and held for the memory figure)")
    parser.add_argument("--duplicates", type=int, default=20, help="duplicate jobs per no-op window")
    parser.add_argument("--operator-running-only", action="store_true",
                        help="skip the bursts with the operator stopped (and its webhooks removed)")
    args = parser.parse_args()
    if args.clusters < 1 or args.duplicates < 1:
        parser.error("every count must be at least 1")
    banner("The agent's loop (cnpg driver)")
    started, n = time.monotonic(), args.clusters
    with CnpgSystem("cnpg-loop", quota=4 * n + 10) as system:
        system.start_cnpg()
        user = system.api.register()
        time.sleep(3)
        points = [memory(system, "idle, 0 clusters (just started)")]
        bursts = [burst(system, user, n, "running", paused=False)]
        points.append(memory(system, f"{n} Clusters held, every one observed (quiet {quiet(system):.0f} s later)"))
        steps = single_cluster(system, user, args.duplicates)
        bursts.append(burst(system, user, n, "running", paused=True))
        if not args.operator_running_only:
            system.bed.stop_operator()
            time.sleep(2)
            bursts += [burst(system, user, n, "stopped", paused=False), burst(system, user, n, "stopped", paused=True)]
        waited = quiet(system)
        points.append(memory(system, f"{sum(b.count for b in bursts) + 1} Clusters held (operator "
                                     f"{'running' if args.operator_running_only else 'stopped'}; quiet {waited:.0f} s "
                                     "later)"))
        warnings = Counter(re.sub(r"cls_\S+|orochi-[a-z0-9]{20}", "…", str(e.get("message")))[:160]
                           for e in system.log_messages() if e.get("level") in ("WARNING", "ERROR"))
    print(f"\nKubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}, CloudNativePG {CNPG_VERSION}; the test bed started "
          f"in {system.testbed_seconds:.1f} s. Agent: OROCHI_DRIVER=cnpg, the bed's admin kubeconfig, its Lease in "
          f"`{AGENT_NAMESPACE}`, " + loop.intervals(FAST) + ".")
    print_bursts(bursts)
    print_steps(steps, bursts)
    heading("4. Memory: the agent's RSS, and the test bed's for context")
    print(markdown_table(["when", "agent RSS MiB", "agent PSS MiB", "agent CPU % (10 s)",
                          "its Kubernetes calls in those 10 s", *(f"{n} RSS MiB" for n in OTHERS),
                          "Namespaces its cache selects (JSON without managedFields)", "Clusters", "Services"], points))
    if warnings:
        print("\nWarnings in the agent's log (ids elided): "
              + "; ".join(f"{n}× {message}" for message, n in warnings.most_common(8)))
    print(f"\n_load average {load_average()} at the end; {time.monotonic() - started:.0f} s in all_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
