"""What the driver keeps on disk: the folder layout under `data_dir` and one state file per cluster.

    data_dir/
      runtime/<major>/             a copy of an installation the server user could not reach
      clusters/<cluster_id>/
        state.json                 ClusterState, mode 0600 (it holds the superuser password)
        <cluster_id>-1/            the primary's data directory (owned by the server user, 0700)
        <cluster_id>-1.log         its server log
        <cluster_id>-2/ ...        one per replica

Only this module reads or writes state files; a write replaces the file atomically and only when its content
changes, so re-applying a state already applied leaves the file (and its mtime) alone.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from orochi_agent.drivers.base import DriverError, Refused
from orochi_agent.drivers.local.files import write_private

STATE_FILE = "state.json"
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")

Role = Literal["primary", "replica"]


@dataclass
class Instance:
    name: str
    port: int
    role: Role
    slot: str | None = None
    """The physical replication slot a replica streams from (on the primary)."""


@dataclass
class ClusterState:
    version: str
    superuser_password: str
    replication_password: str
    generation: int = 0
    """The last generation applied successfully; 0 until the first apply finishes."""
    instances: list[Instance] = field(default_factory=list)
    owner: str | None = None
    database: str | None = None
    owner_password_digest: str | None = None
    desired_instances: int = 0
    vcpu: int = 1
    memory_gb: int = 1
    storage_gb: int = 1

    @property
    def primary(self) -> Instance | None:
        return next((i for i in self.instances if i.role == "primary"), None)

    @property
    def replicas(self) -> list[Instance]:
        return [i for i in self.instances if i.role == "replica"]

    def instance(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)


class Layout:
    """Where each thing lives under `data_dir`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clusters_dir = root / "clusters"
        self.runtime_dir = root / "runtime"

    def cluster_dir(self, cluster_id: str) -> Path:
        if not _CLUSTER_ID.match(cluster_id):
            raise Refused(f"the local driver cannot hold a cluster named {cluster_id!r}")
        return self.clusters_dir / cluster_id

    def instance_dir(self, cluster_id: str, name: str) -> Path:
        return self.cluster_dir(cluster_id) / name

    def log_path(self, cluster_id: str, name: str) -> Path:
        return self.cluster_dir(cluster_id) / f"{name}.log"

    def cluster_ids(self) -> list[str]:
        if not self.clusters_dir.is_dir():
            return []
        return sorted(p.name for p in self.clusters_dir.iterdir() if p.is_dir() and _CLUSTER_ID.match(p.name))


class Store:
    """Reads and writes the state files of one `data_dir`."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def exists(self, cluster_id: str) -> bool:
        return self.layout.cluster_dir(cluster_id).is_dir()

    def load(self, cluster_id: str) -> ClusterState | None:
        """The cluster's state; None when its folder or state file is missing."""
        text = self._read(cluster_id)
        if text is None:
            return None
        try:
            data = json.loads(text)
            instances = [Instance(**i) for i in data.pop("instances")]
            return ClusterState(**data, instances=instances)
        except (ValueError, TypeError, KeyError) as e:
            raise DriverError(f"the local state of cluster {cluster_id} is unreadable", transient=False) from e

    def create(self, cluster_id: str, state: ClusterState) -> None:
        """Make the cluster's folder (0711: the server user enters it, nobody lists it) and its first state."""
        folder = self.layout.cluster_dir(cluster_id)
        folder.mkdir(exist_ok=True)
        folder.chmod(0o711)
        self.save(cluster_id, state)

    def save(self, cluster_id: str, state: ClusterState) -> bool:
        """Write `state` unless the file already says exactly that. True when it wrote."""
        text = json.dumps(asdict(state), indent=2, sort_keys=True) + "\n"
        return write_private(self.layout.cluster_dir(cluster_id) / STATE_FILE, text)

    def generation(self, cluster_id: str) -> int:
        try:
            state = self.load(cluster_id)
        except DriverError:
            return 0
        return state.generation if state is not None else 0

    def remove(self, cluster_id: str) -> None:
        """Remove the cluster's folder; a second pass removes what a server wrote while the first one ran."""
        shutil.rmtree(self.layout.cluster_dir(cluster_id), ignore_errors=True)
        if self.exists(cluster_id):
            shutil.rmtree(self.layout.cluster_dir(cluster_id))

    def _read(self, cluster_id: str) -> str | None:
        try:
            return (self.layout.cluster_dir(cluster_id) / STATE_FILE).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
