"""One PostgreSQL server: its data directory, how it is made (initdb or pg_basebackup), configured, started,
found again after the agent restarted (adopted), and stopped.

Servers run in their own session, so they outlive the agent, even a SIGKILLed one. A server is running when its
postmaster.pid names a live process whose command is `postgres` for this data directory.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from orochi_agent.drivers.base import DriverError
from orochi_agent.drivers.local import sql
from orochi_agent.drivers.local.accounts import Account
from orochi_agent.drivers.local.binaries import Installation
from orochi_agent.drivers.local.files import write_private
from orochi_agent.drivers.local.ports import HOST

CONFIG_FILE = "orochi.conf"
_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
_POLL_SECONDS = 0.005
_TOOL_TIMEOUT_SECONDS = 600

log = logging.getLogger("orochi_agent.local")


class PortTaken(DriverError):
    """The server could not listen on its port: another process took it first."""


class Server:
    def __init__(self, *, name: str, data_dir: Path, log_path: Path, installation: Installation | None,
                 account: Account) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = log_path
        self.installation = installation
        self.account = account
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def settings_pending(self) -> bool:
        """Whether the settings file changed after the running server read it (postmaster.pid is written once the
        configuration has been read, so a newer settings file was not)."""
        try:
            return (self.data_dir / CONFIG_FILE).stat().st_mtime_ns > (self.data_dir / "postmaster.pid").stat().st_mtime_ns
        except FileNotFoundError:
            return True

    def initdb(self, *, superuser_password: str) -> None:
        """A new, empty cluster whose superuser `postgres` has `superuser_password` and only SCRAM logins."""
        self._empty_data_dir()
        pwfile = self.data_dir.parent / f".{self.name}.pwfile"
        write_private(pwfile, superuser_password + "\n", account=self.account)
        try:
            self._run("initdb", [
                "-D", str(self.data_dir), "-U", sql.SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                "-E", "UTF8", "--locale=C", "-N",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{CONFIG_FILE}'\n")

    def basebackup(self, *, primary_port: int, slot: str, password: str) -> None:
        """A copy of the primary at `primary_port` set up to stream from it through a new slot `slot`."""
        self._empty_data_dir()
        self._run("pg_basebackup", [
            "-h", HOST, "-p", str(primary_port), "-U", sql.REPLICATION_ROLE, "-D", str(self.data_dir),
            "-R", "-X", "stream", "-c", "fast", "-S", slot, "-C", "-N", "-w",
        ], env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": str(sql.CONNECT_TIMEOUT_SECONDS),
                "PGSSLMODE": "disable", "PGGSSENCMODE": "disable"})

    def configure(self, settings: Mapping[str, str]) -> bool:
        """Write the driver's settings file; True when it changed (the caller decides whether to restart)."""
        lines = ["# Written by the Orochi agent's local driver; it is rewritten whenever the cluster changes."]
        lines += [f"{key} = '{value}'" for key, value in settings.items()]
        return write_private(self.data_dir / CONFIG_FILE, "\n".join(lines) + "\n", account=self.account)

    def postmaster(self) -> psutil.Process | None:
        """The live postmaster of this data directory, started by this agent or an earlier one."""
        if self._child is not None and self._child.poll() is not None:
            self._child = None
        lines = self._pid_file()
        if not lines:
            return None
        try:
            process = psutil.Process(int(lines[0]))
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            command = process.cmdline()
        except (ValueError, psutil.Error):
            return None
        return process if self._is_postmaster(command) else None

    def running_port(self) -> int | None:
        """The port the running server listens on, from its postmaster.pid."""
        lines = self._pid_file()
        try:
            return int(lines[3]) if lines else None
        except (ValueError, IndexError):
            return None

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every process it started."""
        postmaster = self.postmaster()
        if postmaster is None:
            return []
        try:
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.Error:
            return []

    def start(self, *, port: int, superuser_password: str, timeout: float) -> None:
        """Start the server on `port` and return once it accepts connections.

        Raises PortTaken when another process holds the port, DriverError when it exits or the time runs out.
        """
        self._remove_leftovers()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        with self.log_path.open("ab") as server_log:
            self._child = subprocess.Popen(
                [self._tool("postgres"), "-D", str(self.data_dir), "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT, env=_ENV,
                start_new_session=True, **self.account.process_options(),
            )
        child = self._child
        while True:
            if child.poll() is not None:
                output = self._log_since(offset)
                if "could not bind" in output or "could not create any TCP/IP sockets" in output:
                    raise PortTaken(f"port {port} was taken before {self.name} could listen on it")
                raise DriverError(f"the server {self.name} exited while starting: {_last_error(output)}")
            try:
                with sql.connect(port=port, password=superuser_password):
                    break
            except sql.Error:
                if time.monotonic() - started > timeout:
                    raise DriverError(f"the server {self.name} did not accept connections within {timeout:.0f} s")
                time.sleep(_POLL_SECONDS)
        log.info("started %s on port %d (pid %d) in %.0f ms", self.name, port, child.pid,
                 (time.monotonic() - started) * 1000)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster); immediate shutdown, then SIGKILL, when it does not end."""
        postmaster = self.postmaster()
        if postmaster is None:
            self._kill(self._orphans())
            return
        try:
            family = [postmaster, *postmaster.children(recursive=True)]
            postmaster.send_signal(signal.SIGINT)
        except psutil.Error:
            family = [postmaster]
        if not self._wait_gone(postmaster, timeout):
            log.warning("%s did not stop within %.0f s: immediate shutdown", self.name, timeout)
            _signal(postmaster, signal.SIGQUIT)
            if not self._wait_gone(postmaster, 5):
                _signal(postmaster, signal.SIGKILL)
                self._wait_gone(postmaster, 5)
        self._kill(family)
        self._child = None
        log.info("stopped %s", self.name)

    def _remove_leftovers(self) -> None:
        """After a crash: end the dead postmaster's orphans (still attached to its shared memory) and its pid file."""
        orphans = self._orphans()
        for process in orphans:
            try:
                if self._is_postmaster(process.cmdline()):
                    raise DriverError(f"the server {self.name} is already running (pid {process.pid})")
            except psutil.Error:
                continue
        self._kill(orphans)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _is_postmaster(self, command: list[str]) -> bool:
        return bool(command) and Path(command[0]).name == "postgres" and str(self.data_dir) in command

    def _pid_file(self) -> list[str] | None:
        """postmaster.pid's lines; None when there is none. The server rewrites it in place, so a read that
        finds it half-written is tried again."""
        for _ in range(20):
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
            except FileNotFoundError:
                return None
            except OSError:
                lines = []
            if lines and lines[0].strip().isdigit():
                return lines
            time.sleep(_POLL_SECONDS)
        return None

    def _orphans(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name"]):
            try:
                if process.info["name"] == "postgres" and process.cwd() == str(self.data_dir):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def _kill(self, processes: list[psutil.Process]) -> None:
        """Wait a moment for `processes` to end (a postmaster's children follow it), then SIGKILL the rest."""
        alive = _wait_ended(processes, timeout=2)
        for process in alive:
            _signal(process, signal.SIGKILL)
        _wait_ended(alive, timeout=5)

    def _wait_gone(self, process: psutil.Process, timeout: float) -> bool:
        if self._child is not None and self._child.pid == process.pid:
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return not _wait_ended([process], timeout=timeout)

    def _empty_data_dir(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        self.data_dir.chmod(0o700)
        self.account.own(self.data_dir)

    def _run(self, tool: str, args: list[str], *, env: Mapping[str, str] | None = None) -> None:
        started = time.monotonic()
        try:
            done = subprocess.run(
                [self._tool(tool), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                env={**_ENV, **(env or {})}, timeout=_TOOL_TIMEOUT_SECONDS, **self.account.process_options(),
            )
        except subprocess.TimeoutExpired as e:
            raise DriverError(f"{tool} for {self.name} did not finish within {_TOOL_TIMEOUT_SECONDS} s") from e
        if done.returncode != 0:
            raise DriverError(f"{tool} for {self.name} failed: {_last_error(done.stderr)}")
        log.info("%s for %s took %.0f ms", tool, self.name, (time.monotonic() - started) * 1000)

    def _tool(self, name: str) -> str:
        if self.installation is None:
            raise DriverError(f"no PostgreSQL installation is set for {self.name}", transient=False)
        return self.installation.tool(name)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read(64_000).decode(errors="replace")
        except OSError:
            return ""


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if any(word in line for word in ("FATAL", "PANIC", "ERROR", "error"))]
    return (errors or lines or ["no output"])[-1][:500]


def _wait_ended(processes: list[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """Those of `processes` still alive after up to `timeout` seconds. A zombie has ended: the init process of
    some machines reaps adopted orphans only about once a second."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(_POLL_SECONDS)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except psutil.Error:
        pass
