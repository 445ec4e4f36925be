"""The names and labels of everything the cnpg driver creates.

Each cluster lives in a namespace of its own, named from a hash of its id: ids are mixed-case base64url, so
lowercasing them could make two clusters share a name. Inside it the names are fixed (the namespace already
tells clusters apart), short enough for everything CNPG derives from them (`pg-rw`, `pg-1`, `pg-1-initdb`).
"""

from __future__ import annotations

import base64
import hashlib
import re

MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT = "orochi-agent"
CLUSTER_LABEL = "orochi.io/cluster"
ORG_LABEL = "orochi.io/org"
SELECTOR = f"{MANAGED_BY}={AGENT}"
"""The label selector of every object the agent created."""

GENERATION = "orochi.io/generation"
"""On the namespace: the orochi generation last applied in full. On the Cluster: the orochi generation whose spec
it carries (it moves only when the spec does)."""
SPEC_HASH = "orochi.io/spec-hash"
"""On the Cluster: a hash of the spec the agent applied, to tell whether a new generation changes it."""
FOLLOWS = "orochi.io/cluster-generation"
"""On the app-user Secret: the Cluster's metadata.generation it was written after (see status.py)."""

PROOF = "orochi.io/proof"
"""On the namespace: `<Cluster metadata.generation>/<app Secret resourceVersion>` of the last full apply, so any
replica (the leader, after another replica applied) can tell when CNPG acted on it (see status.py)."""

NAMESPACE_PREFIX = "orochi-"
CLUSTER = "pg"
APP_SECRET = "pg-app-user"
TIERS_SECRET = "pg-storage-tiers"
SERVICE = "pg-external"
POSTGRES_PORT = 5432
INSTANCE_MANAGER_PORT = 8000
EXPORTER_PORT = 9187

_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)$")


def namespace(cluster_id: str) -> str:
    """`orochi-` and 20 base32 characters of the id's SHA-256 (100 bits): a DNS label, lowercase, 27 characters."""
    digest = hashlib.sha256(cluster_id.encode()).digest()
    return NAMESPACE_PREFIX + base64.b32encode(digest).decode().lower()[:20]


def is_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.match(value))


def labels(*, cluster_id: str, org_id: str) -> dict[str, str]:
    return {MANAGED_BY: AGENT, CLUSTER_LABEL: cluster_id, ORG_LABEL: org_id}


def instance_selector() -> dict[str, str]:
    """CNPG's labels of the cluster's PostgreSQL pods."""
    return {"cnpg.io/cluster": CLUSTER, "cnpg.io/podRole": "instance"}


def primary_selector() -> dict[str, str]:
    """CNPG's labels of the current primary's pod (they move with a switchover)."""
    return {"cnpg.io/cluster": CLUSTER, "cnpg.io/instanceRole": "primary"}
