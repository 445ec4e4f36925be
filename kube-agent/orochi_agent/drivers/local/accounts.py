"""The operating-system account the servers run as, and which folders it can enter.

PostgreSQL refuses to run as root, so an agent running as root starts its servers as an unprivileged
system user (created on first use); any other agent runs them as itself.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orochi_agent.drivers.base import DriverError

DEFAULT_SERVER_USER = "orochi-postgres"

log = logging.getLogger("orochi_agent.local")
_useradd_lock = threading.Lock()


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    switch: bool
    """True when the agent runs as root and every PostgreSQL process must be started as this account."""

    def process_options(self) -> dict[str, Any]:
        """Keyword arguments for `subprocess` that run a child as this account, with a private umask."""
        options: dict[str, Any] = {"umask": 0o077, "cwd": "/"}
        if self.switch:
            options.update(user=self.uid, group=self.gid, extra_groups=[])
        return options

    def blocked_folder(self, path: Path) -> Path | None:
        """The first folder from `/` down to `path` (inclusive) this account cannot enter; None when all can be."""
        path = path.resolve()
        for folder in (*reversed(path.parents), path):
            if not self._can_enter(folder):
                return folder
        return None

    def own(self, path: Path) -> None:
        """Give `path` to this account (a no-op unless the agent switches accounts)."""
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def _can_enter(self, folder: Path) -> bool:
        if not self.switch:
            return os.access(folder, os.X_OK)
        try:
            st = folder.stat()
        except OSError:
            return False
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def server_account(server_user: str | None) -> Account:
    """The account the servers run as: `server_user` (default `orochi-postgres`, created if missing) under root,
    the agent's own account otherwise."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        if server_user is not None and server_user != me.pw_name:
            raise DriverError(
                f"the local driver can run its servers as {server_user!r} only when the agent runs as root",
                transient=False,
            )
        return Account(name=me.pw_name, uid=me.pw_uid, gid=me.pw_gid, switch=False)
    name = server_user or DEFAULT_SERVER_USER
    entry = _lookup(name) or _create(name)
    if entry.pw_uid == 0:
        raise DriverError(f"the local driver cannot run its servers as {name!r}: it is a root account", transient=False)
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid, switch=True)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create(name: str) -> pwd.struct_passwd:
    with _useradd_lock:
        if (entry := _lookup(name)) is not None:
            return entry
        command = ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DriverError(f"could not create the system user {name!r} for the servers: {e}") from e
        entry = _lookup(name)
        if entry is None:
            raise DriverError(
                f"could not create the system user {name!r} for the servers: {done.stderr.strip()}", transient=False
            )
        log.info("created the system user %s (uid %d) for the PostgreSQL servers", name, entry.pw_uid)
        return entry
