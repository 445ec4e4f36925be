"""Loopback ports for the servers."""

from __future__ import annotations

import socket
from collections.abc import Collection

HOST = "127.0.0.1"


def is_free(port: int) -> bool:
    """Whether a server could listen on `port` now (it binds with SO_REUSEADDR, as PostgreSQL does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def pick(*, preferred: int | None = None, taken: Collection[int] = ()) -> int:
    """`preferred` when it is still free, else a port the kernel has just found free (and not in `taken`).

    Another process may take it before the server binds it: the caller retries on that race.
    """
    if preferred is not None and preferred not in taken and is_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            return port
