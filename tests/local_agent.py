"""A real `orochi-agent` process with the local driver, for one region of a test `Stack`.

The agent runs from this tree's kube-agent/ (PYTHONPATH), not from wherever the package is installed.
Its servers' data lives in a folder of its own under /tmp (0755: the servers' unprivileged user must be able
to traverse it; pytest's tmp_path is not). The servers are found for inspection as PostgreSQL itself lists
them: each data directory's `postmaster.pid` (line 1 the pid, line 4 the port).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import requests
from conftest import ROOT, Stack, until

from devstack.ports import free_port

FAST = {
    "OROCHI_POLL_WAIT_SECONDS": "1",
    "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
    "OROCHI_METRICS_INTERVAL_SECONDS": "1",
    "OROCHI_HEARTBEAT_INTERVAL_SECONDS": "1",
    "OROCHI_RESYNC_INTERVAL_SECONDS": "300",
    "OROCHI_RETRY_BASE_SECONDS": "0.2",
    "OROCHI_RETRY_MAX_SECONDS": "2",
    "OROCHI_DRAIN_SECONDS": "30",
    "OROCHI_LOCAL_STOP_SERVERS_ON_EXIT": "true",
}


def data_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="orochi-agent-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


class LocalAgent:
    def __init__(self, stack: Stack, data_dir: Path, *, region: str = "nyc1", **overrides: str) -> None:
        self.stack, self.data_dir, self.region = stack, data_dir, region
        self.health_port = free_port()
        self.log = data_dir.with_suffix(".log")
        self.env = {
            **stack.env, **FAST,
            "OROCHI_API_URL": stack.url, "OROCHI_AGENT_TOKEN": stack.agent(region), "OROCHI_REGION": region,
            "OROCHI_QUEUE_URL": stack.queue_url(region), "OROCHI_DRIVER": "local",
            "OROCHI_HEALTH_PORT": str(self.health_port), "OROCHI_LOCAL_DATA_DIR": str(data_dir),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "kube-agent"), stack.env.get("PYTHONPATH")) if p),
            **overrides,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalAgent:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "orochi_agent"], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=log)
        until(self._healthy, timeout=120, what=f"the agent of {self.region}'s /healthz on port {self.health_port}")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"the agent exited:\n{self.log_text()}"
        try:
            return requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def health(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the agent's /metrics (0 when absent)."""
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in self.health("/metrics").text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == wanted:
                return float(value)
        return 0.0

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for the agent of {self.region} to exit on "
                                 f"signal {signum}:\n{self.log_text()[-4000:]}") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # --- the servers, as PostgreSQL lists them ------------------------------------------------------------------

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.data_dir / "clusters" / cluster_id

    def servers(self, cluster_id: str) -> dict[int, int]:
        """Port → postmaster pid of each live server of the cluster."""
        found = {}
        for pid_file in self.cluster_dir(cluster_id).glob("*/postmaster.pid"):
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                continue
            if len(lines) >= 4 and psutil.pid_exists(int(lines[0])):
                found[int(lines[3])] = int(lines[0])
        return found


def kill_servers_under(folder: Path) -> None:
    """Stop any PostgreSQL server left running with its data under `folder`, then remove the folder (the agent's
    log beside it stays, for a failure's post-mortem)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline: list[Any] = process.info.get("cmdline") or []
        if any(str(folder) in str(part) for part in cmdline):
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(folder, ignore_errors=True)
