"""Loopback ports for the local stack's processes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


class NotListening(RuntimeError):
    """A process did not start listening: it exited first, or the time ran out."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, process: subprocess.Popen[bytes], host: str = "127.0.0.1", timeout: float = 120,
                  what: str | None = None, log: Path | None = None) -> None:
    """Return once `process` accepts connections on `port`. Raise NotListening naming `what` (the command by
    default), the port and the wait, with the last lines of `log` (the file the process writes to), if it exits
    first or the time runs out."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise NotListening(f"{_name(what, process)} exited with {process.returncode} before it listened on "
                               f"{host}:{port} (after {time.monotonic() - started:.0f}s){_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0 and _listens_itself(process, port):
                return
        if time.monotonic() > deadline:
            raise NotListening(f"timed out after {timeout:.0f}s waiting for {_name(what, process)} to accept "
                               f"connections on {host}:{port} (it is still running){_tail(log)}")
        time.sleep(0.05)


def _listens_itself(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the listener on `port` is `process` (or a child of it), not another one that took the port first;
    True when the system does not say whose sockets are whose."""
    import psutil

    try:
        owners = {c.pid for c in psutil.net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}
        ours = {process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))}
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return True
    return None in owners or bool(owners & ours)


def _name(what: str | None, process: subprocess.Popen[bytes]) -> str:
    if what:
        return what
    return " ".join(map(str, process.args)) if isinstance(process.args, (list, tuple)) else str(process.args)


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return ":\n" + "\n".join(text) if text else " (no output)"
