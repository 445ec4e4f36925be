"""The agent's loop over the real system (local driver), section (g) of docs/benchmarks.md: create → running,
enqueue → applied, what a no-op reconcile costs, and the agent's memory.

moto, the API over HTTP and one `orochi-agent` with the local driver (bench.loop), its PostgreSQL 18 servers in the
run's folder under /tmp; a user registered through the API acts only through it.

1. create → running: 2-instance clusters one after another, from the POST to the GET (polled every 20 ms) showing
   `running` with 2 ready; each deleted (servers and folder gone) before the next; the last is kept for 3.
2. enqueue → applied: the agent's histograms, as differences of /metrics scrapes around each job.
3. A no-op: duplicate jobs for the running cluster straight to its queue, in a burst and one at a time, then as
   long with no job: postmaster pids, WAL, the cluster's files, status reports, the agent's API requests and CPU.
4. Memory: the agent's RSS idle, with N live 1-instance clusters (and their servers' PSS), and after.

    .venv/bin/python -m bench.agent_loop [--clusters 10] [--duplicates 20] [--fleet 20]   # as root
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import postgres
from bench import loop
from bench.loop import EMPTY, GAP_SECONDS, SHORT_ROUTES, Histogram, Scrape, System, routes
from bench.report import banner, heading, load_average, markdown_table, mib, percentile, sec
from devstack.harness import Account, until

AIM_SECONDS = 3.0
FAST = {**loop.FAST, "OROCHI_METRICS_INTERVAL_SECONDS": "30", "OROCHI_LOCAL_STOP_SERVERS_ON_EXIT": "true"}
HISTOGRAMS = ("orochi_agent_enqueue_to_applied_seconds", "orochi_agent_job_latency_seconds",
              "orochi_agent_reconcile_duration_seconds")


class LocalSystem(System):
    def start_local(self) -> None:
        self.data_dir = self.root / "data"
        self.start({**FAST, "OROCHI_LOCAL_DATA_DIR": str(self.data_dir)})

    def cleanup(self) -> None:
        postgres.stop_servers_under(self.root / "data")

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.data_dir / "clusters" / cluster_id

    def servers(self, cluster_id: str) -> dict[str, int]:
        return postgres.postmasters(self.cluster_dir(cluster_id))

    def gone(self, account: Account, cluster_id: str) -> bool:
        return not self.servers(cluster_id) and not self.cluster_dir(cluster_id).exists() \
            and self.api.find_cluster(account, cluster_id) is None


class Jobs:
    """The agent's histograms per kind of job: differences of scrapes around them, added up."""

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[str, Histogram]] = {}

    def add(self, kind: str, system: System, before: Scrape, jobs: int) -> None:
        """Once the agent processed `jobs` more than at `before`."""
        system.processed_reaches(before.total("orochi_agent_jobs_processed_total") + jobs)
        after = system.scrape()
        mine = self.by_kind.setdefault(kind, {name: EMPTY for name in HISTOGRAMS})
        for name in HISTOGRAMS:
            mine[name] = mine[name] + (after.histogram(name) - before.histogram(name))


def delete_and_wait(system: LocalSystem, user: Account, ids: list[str], jobs: Jobs) -> float:
    """Delete the clusters; seconds until every one is gone (404, no server, no folder)."""
    before, started = system.scrape(), time.perf_counter()
    for cluster_id in ids:
        system.api.change_cluster(user, "DELETE", cluster_id)
    waiting = set(ids)

    def all_gone() -> bool:
        waiting.difference_update([c for c in waiting if system.gone(user, c)])
        return not waiting

    until(all_gone, timeout=60 + 10 * len(ids), what=f"{len(ids)} clusters deleted", every=0.05)
    seconds = time.perf_counter() - started
    jobs.add("delete", system, before, len(ids))
    return seconds


def create_to_running(system: LocalSystem, user: Account, count: int, jobs: Jobs) -> tuple[list[list[float]], str]:
    """Per cluster: [POST → running, the POST, apply, primary start, replica start, DELETE → gone] in seconds; and
    the last cluster, kept."""
    rows, ids = [], []
    for index in range(count):
        before, started = system.scrape(), time.perf_counter()
        cluster_id = system.api.create_cluster(user, postgres_version="18", instances=2)["cluster"]["id"]
        posted = time.perf_counter() - started
        system.api.until_status(user, cluster_id, "running", ready=2, every=0.02)
        rows.append([time.perf_counter() - started, posted])
        ids.append(cluster_id)
        jobs.add("create (2 instances)", system, before, 1)
        if index < count - 1:
            rows[-1].append(delete_and_wait(system, user, [cluster_id], jobs))
    applies = system.logged_ms(r"applied cluster (\S+) generation 1 \(\d+ instances\) in (\d+) ms")
    starts = system.logged_ms(r"started (\S+) on port \d+ \(pid \d+\) in (\d+) ms")
    for row, cluster_id in zip(rows, ids, strict=True):
        deleted = row.pop() if len(row) == 3 else math.nan
        row += [applies.get((cluster_id,), math.nan) / 1000, starts.get((f"{cluster_id}-1",), math.nan) / 1000,
                starts.get((f"{cluster_id}-2",), math.nan) / 1000, deleted]
    return rows, ids[-1]


@dataclass
class Window:
    label: str
    jobs: int = 0
    seconds: float = 0.0
    restarts: int = 0
    wal: tuple[int, int] = (0, 0)  # bytes written, inserted
    state_same: bool = True
    file_changes: Counter[str] = field(default_factory=Counter)
    reports: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    agent_cpu: float = 0.0
    reconcile: Histogram = EMPTY
    job_latency: Histogram = EMPTY
    wal_records: Counter[str] = field(default_factory=Counter)
    applied_after: list[float] = field(default_factory=list)


def window(system: LocalSystem, cluster_id: str, conn: psycopg.Connection, label: str,
           action: Callable[[list[float]], int]) -> Window:
    folder = system.cluster_dir(cluster_id)
    state_file, primary = folder / "state.json", folder / f"{cluster_id}-1"
    pids, state, start = system.servers(cluster_id), postgres.digest(state_file), postgres.positions(conn)
    result = Window(label)
    before, cpu, logged = system.scrape(), system.agent_cpu(), system.api_requests()
    started = time.perf_counter()
    with postgres.FileWatch(folder) as watch:
        result.jobs = action(result.applied_after)
        result.seconds = time.perf_counter() - started
    after, end, now_pids = system.scrape(), postgres.positions(conn), system.servers(cluster_id)
    result.restarts = sum(1 for n, pid in pids.items() if now_pids.get(n) != pid) + len(set(now_pids) - set(pids))
    result.wal = (postgres.lsn(end[0]) - postgres.lsn(start[0]), postgres.lsn(end[1]) - postgres.lsn(start[1]))
    result.state_same, result.file_changes = postgres.digest(state_file) == state, watch.changes
    reports = "orochi_agent_status_reports_total"
    result.reports = after.value(reports) - before.value(reports)
    result.requests, result.agent_cpu = Counter(system.requests_since(logged)), system.agent_cpu() - cpu
    result.reconcile = after.histogram(HISTOGRAMS[2]) - before.histogram(HISTOGRAMS[2])
    result.job_latency = after.histogram(HISTOGRAMS[1]) - before.histogram(HISTOGRAMS[1])
    result.wal_records = postgres.wal_records(primary, min(*start, key=postgres.lsn), max(*end, key=postgres.lsn))
    return result


def no_op(system: LocalSystem, user: Account, cluster_id: str, duplicates: int) -> list[Window]:
    """The windows before (this connection's start and a 3 s pause), in a burst, one at a time, and without a job."""
    cluster = system.api.get_cluster(user, cluster_id)

    def burst(_: list[float]) -> int:
        return system.send_duplicates(user, cluster, duplicates)

    def one_at_a_time(applied_after: list[float]) -> int:
        return system.send_duplicates(user, cluster, duplicates, pause=GAP_SECONDS, applied_after=applied_after)

    uri = system.api.expect(200, "GET", f"/v1/orgs/{user.org_id}/clusters/{cluster_id}/credentials",
                            token=user.access_token)["uri"]
    with psycopg.connect(uri, autocommit=True) as conn:
        opened = postgres.positions(conn)  # what this connection's start writes lands before the first window
        time.sleep(3)
        until(lambda: len(set(postgres.positions(conn))) == 1, timeout=30, what="the WAL writer to catch up", every=0.1)
        settled = postgres.positions(conn)
        before = Window("before", wal=(postgres.lsn(settled[0]) - postgres.lsn(opened[0]),
                                       postgres.lsn(settled[1]) - postgres.lsn(opened[1])),
                        wal_records=postgres.wal_records(system.cluster_dir(cluster_id) / f"{cluster_id}-1",
                                                         min(opened, key=postgres.lsn), settled[1]))
        windows = [window(system, cluster_id, conn, f"{duplicates} duplicates in a burst", burst),
                   window(system, cluster_id, conn, f"{duplicates} duplicates one at a time", one_at_a_time)]
        quiet = max(w.seconds for w in windows)
        windows.append(window(system, cluster_id, conn, "baseline: no job", lambda _: time.sleep(quiet) or 0))
    return [before, *windows]


def idle(system: LocalSystem, label: str, ids: list[str], seconds: float = 10.0) -> list[str]:
    """The agent's RSS and PSS, its CPU, its servers' CPU and its API requests over `seconds` of idling."""
    folders = [system.cluster_dir(c) for c in ids]
    cpu, servers, logged = system.agent_cpu(), postgres.servers_cpu(folders), system.api_requests()
    time.sleep(seconds)
    info = system.agent_process.memory_full_info()
    servers_cpu = f"{100 * (postgres.servers_cpu(folders) - servers) / seconds:.1f}" if ids else "–"
    return [label, mib(info.rss), mib(info.pss), f"{100 * (system.agent_cpu() - cpu) / seconds:.1f}", servers_cpu,
            routes(Counter(system.requests_since(logged)))]


def fleet(system: LocalSystem, user: Account, count: int, jobs: Jobs) -> tuple[list[str], list[list[str]]]:
    before, started, posted, up = system.scrape(), time.perf_counter(), {}, {}
    for _ in range(count):
        posted[system.api.create_cluster(user, postgres_version="18")["cluster"]["id"]] = time.perf_counter()

    def all_running() -> bool:
        for c in system.clusters(user):
            if c["id"] in posted and c["id"] not in up and c["status"] == "running" and c["ready_instances"] == 1:
                up[c["id"]] = time.perf_counter() - posted[c["id"]]
        return len(up) == count

    until(all_running, timeout=60 + 15 * count, what=f"{count} clusters running", every=0.1)
    up_seconds = time.perf_counter() - started
    jobs.add(f"create (1 instance, {count} posted at once)", system, before, count)
    ids = list(posted)
    memory = idle(system, f"{count} live 1-instance clusters", ids)
    pss, rss, processes = postgres.servers_memory([system.cluster_dir(c) for c in ids])
    servers = sum(len(system.servers(c)) for c in ids)
    down = delete_and_wait(system, user, ids, jobs)
    return memory, [["servers / processes", f"{servers} / {processes}"],
                    ["summed PSS MiB (per server)", f"{mib(pss)} ({mib(pss / max(servers, 1))})"],
                    ["summed RSS MiB (overstates shared pages)", mib(rss)],
                    [f"{count} POSTs → all running, s", f"{up_seconds:.1f}"],
                    ["each cluster's POST → running, s: p50 / max",
                     f"{percentile(list(up.values()), 50):.1f} / {max(up.values()):.1f}"],
                    [f"{count} DELETEs → all gone, s", f"{down:.1f}"]]


def _stats(values: list[float]) -> list[str]:
    return [f"{percentile(values, 50):.2f}", f"{percentile(values, 95):.2f}", f"{max(values):.2f}",
            f"{sum(values) / len(values):.2f}"]


def print_create(rows: list[list[float]], final_delete: float) -> None:
    heading(f"1. create → running: {len(rows)} 2-instance PostgreSQL 18 clusters, one after another (s)")
    columns = [[r[i] for r in rows if not math.isnan(r[i])] for i in range(6)]
    columns[5].append(final_delete)
    rest = [r[0] - r[2] for r in rows if not math.isnan(r[2])]
    table = [[label, len(values), *_stats(values)] for label, values in (
        ("POST → GET shows running, 2 ready", columns[0]), ("the POST itself (202)", columns[1]),
        ("the driver's apply (agent log)", columns[2]), ("… of which the primary's start (postgres → connects)",
                                                         columns[3]),
        ("… of which the replica's start", columns[4]), ("the rest: API, queue, fetch, report, poll", rest),
        ("DELETE → 404, servers and folder gone", columns[5])) if values]
    print(markdown_table(["step", "n", "p50", "p95", "max", "mean"], table))
    loops = columns[0]
    verdict = "met" if max(loops) < AIM_SECONDS else "met at the p95" if percentile(loops, 95) < AIM_SECONDS \
        else "not met"
    print(f"\nAim < {AIM_SECONDS:.0f} s for the whole loop: **{verdict}** ({sum(s < AIM_SECONDS for s in loops)} of "
          f"{len(loops)} under; p50 {percentile(loops, 50):.2f} s, max {max(loops):.2f} s).\n\nEach cluster, in order "
          "(s): " + ", ".join(f"{s:.2f}" for s in loops))


def print_histograms(jobs: Jobs, whole: Scrape) -> None:
    heading("2. enqueue → applied: the agent's histograms (/metrics; differences of scrapes around the jobs, s)")
    rows = []
    for name in HISTOGRAMS:
        subsets = [*((kind, hist[name]) for kind, hist in jobs.by_kind.items()),
                   ("whole run (every job and reconcile)", whole.histogram(name))]
        rows += [[name.removeprefix("orochi_agent_"), kind, f"{h.count:.0f}", sec(h.total), sec(h.mean, 3),
                  sec(h.quantile(0.5), 3), sec(h.quantile(0.95), 3)] for kind, h in subsets]
    print(markdown_table(["histogram", "jobs", "count", "sum", "mean", "p50 (buckets)", "p95 (buckets)"], rows))


def print_no_op(windows: list[Window], pids: dict[str, int], checksum_version: str) -> None:
    heading("3. A no-op reconcile: duplicate jobs for a running 2-instance cluster")
    before, *windows = windows
    quiet = windows[-1]
    rate = quiet.agent_cpu / quiet.seconds if quiet.seconds else 0.0
    rows = []
    for w in windows:
        per_job, net = w.jobs or 1, (w.agent_cpu - rate * w.seconds) * 1000 / (w.jobs or 1)
        rows.append([w.label, f"{w.seconds:.1f}", w.jobs, f"{w.reconcile.count:.0f}", w.restarts,
                     f"{w.wal[0]} / {w.wal[1]}", "unchanged" if w.state_same else "changed",
                     ", ".join(f"{n}× {name}" for name, n in sorted(w.file_changes.items())) or "none",
                     f"{w.reports:.0f}", routes(w.requests),
                     f"{w.agent_cpu * 1000:.0f}" + (f" ({net:.1f}/job net of baseline)" if w.jobs else ""),
                     f"{w.reconcile.total * 1000 / per_job:.1f}" if w.jobs else "–",
                     f"{w.job_latency.total * 1000 / per_job:.1f}" if w.jobs else "–"])
    print(markdown_table(["window", "s", "jobs", "reconciles", "restarts", "WAL bytes (written / inserted)",
                          "state.json (hash, mtime)", "file writes seen", "status reports", "API requests by the agent",
                          "agent CPU ms", "reconcile ms/job", "receipt→deleted ms/job"], rows))
    print(f"\n- Before the windows (the benchmark's connection opened, 3 s pause, until written = inserted): "
          f"{before.wal[0]} / {before.wal[1]} bytes written / inserted: "
          + (", ".join(f"{n}× {kind}" for kind, n in sorted(before.wal_records.items())) or "no record"))
    for w in windows:
        if w.wal_records:
            print(f"- WAL between the first and last positions of \"{w.label}\" (pg_waldump): "
                  + ", ".join(f"{n}× {kind}" for kind, n in sorted(w.wal_records.items())))
        if w.applied_after:
            print(f"- \"{w.label}\": send → processed (its counter polled every 20 ms), each after a {GAP_SECONDS} s "
                  f"pause: p50 {percentile(w.applied_after, 50) * 1000:.0f} ms, p95 "
                  f"{percentile(w.applied_after, 95) * 1000:.0f} ms, max {max(w.applied_after) * 1000:.0f} ms")
    per_job = [sum(n for r, n in w.requests.items() if SHORT_ROUTES.get(r) in ("desired state", "status")) / w.jobs
               for w in windows if w.jobs]
    print(f"- Servers watched: {', '.join(f'{n} (pid {p})' for n, p in sorted(pids.items()))}. The primary's data "
          f"page checksum version (pg_controldata): {checksum_version}. Per job, the agent's requests for the cluster "
          "(desired state + status): " + ", ".join(f"{x:.2f}" for x in per_job))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10, help="2-instance clusters for create → running")
    parser.add_argument("--duplicates", type=int, default=20, help="duplicate jobs per no-op window")
    parser.add_argument("--fleet", type=int, default=20, help="live 1-instance clusters for the memory figures")
    args = parser.parse_args()
    if min(args.clusters, args.duplicates, args.fleet) < 1:
        parser.error("every count must be at least 1")
    banner("The agent's loop (local driver)")
    started = time.monotonic()
    with LocalSystem("agent-loop", quota=max(args.clusters, args.fleet) + 10) as system:
        system.start_local()
        user = system.api.register()
        time.sleep(3)
        memory = [idle(system, "idle, 0 clusters (just started)", [])]
        jobs = Jobs()
        created, kept = create_to_running(system, user, args.clusters, jobs)
        pids = system.servers(kept)
        checksum_version = postgres.checksums(system.cluster_dir(kept) / f"{kept}-1")
        windows = no_op(system, user, kept, args.duplicates)
        final_delete = delete_and_wait(system, user, [kept], jobs)
        fleet_memory, servers = fleet(system, user, args.fleet, jobs)
        memory += [fleet_memory, idle(system, "idle, 0 clusters (after all of the above)", [])]
        whole = system.scrape()
        installations = next((str(e["message"]).split(":", 1)[1].strip() for e in system.log_messages()
                              if str(e.get("message", "")).startswith("PostgreSQL installations:")), "unknown")
    print(f"\nPostgreSQL found by the driver: {installations}. Agent intervals: "
          + loop.intervals(FAST) + ", heartbeat default (30 s).")
    print_create(created, final_delete)
    print_histograms(jobs, whole)
    print_no_op(windows, pids, checksum_version)
    heading(f"4. The agent's memory, and {args.fleet} live 1-instance clusters")
    print(markdown_table(["agent (process alone)", "RSS MiB", "PSS MiB", "agent CPU % over 10 s idle",
                          "its servers' CPU % (same 10 s)", "API requests over those 10 s"], memory))
    print("\n" + markdown_table(["the clusters' PostgreSQL servers", "value"], servers))
    print(f"\n_load average {load_average()} at the end; {time.monotonic() - started:.0f} s in all_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
