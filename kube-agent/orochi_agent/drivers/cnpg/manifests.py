"""A cluster's desired state as Kubernetes objects, in the order they are applied. Pure: no I/O.

Choices (production, DOKS):
- **A namespace per cluster** (named from the cluster id, see names.py): a tenant's objects, its Secrets and
  its NetworkPolicies never share a namespace with another cluster's, a cluster's deletion is the namespace's,
  and no name inside needs to be unique across clusters. The organization is a label (`orochi.io/org`).
- **Network isolation**: `default-deny` selects every pod of the namespace and admits no ingress; the allow
  rules admit only what must reach PostgreSQL (egress stays open: the instances need DNS, the API server and the
  customer's S3 endpoints):
  - `allow-clients`: port 5432 of the instances from outside the cluster (`0.0.0.0/0`, `::/0`, minus the
    `internal_cidrs` given, e.g. the pod and service ranges on CNIs whose ipBlock also matches pods). The
    allow-list itself is the load balancer's `loadBalancerSourceRanges`, so changing it touches only the
    Service; the Service keeps client addresses (`externalTrafficPolicy: Local`) so the rule sees them.
  - `allow-replication`: 5432 and 8000 between the cluster's own pods (streaming, pg_basebackup of a joining
    replica, the instance managers).
  - `allow-operator`: 5432 and 8000 (the instance manager) from the CNPG operator's namespace.
  - `allow-metrics`: 9187 (the instance exporter) from `scrape_namespaces` (the agent's own, Prometheus').
- **The app user**: a `kubernetes.io/basic-auth` Secret (username = owner, password from the desired state),
  labeled `cnpg.io/reload` so that CNPG reconciles (and resets the password) when it changes.
- **Storage tiers**: the cold/frozen S3 credentials in a Secret of their own, given to the PostgreSQL pods as
  `OROCHI_<TIER>_S3_<FIELD>` variables through `secretKeyRef`; `OROCHI_STORAGE_TIERS_REVISION` (a hash of the
  Secret's content) makes a change of credentials roll the pods, which read variables only at start.
- **The Cluster**: instances, the catalog's image, `<storage_gb>Gi` of the configured storage class, requests equal
  to limits (Guaranteed QoS: the size's vCPUs and GiB), parameters from the size (`sizing.parameters`, none
  that CNPG fixes), `bootstrap.initdb` with the app Secret, required anti-affinity across nodes, and
  `enablePDB` (CNPG makes the PodDisruptionBudget). `inheritedMetadata` puts the agent's labels on what CNPG
  creates (pods, PVCs, its Services).
- **External access**: a LoadBalancer Service of the agent's own (`pg-external`) selecting the primary, rather
  than CNPG's `managed.services`: the agent owns its source ranges and annotations outright, and an allow-list
  change never rewrites (or rolls) the Cluster.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from orochi_agent.drivers import sizing
from orochi_agent.drivers.cnpg import names
from orochi_agent.models import DesiredState, S3Credentials

Manifest = dict[str, Any]
TIERS = ("cold", "frozen")
_TIER_FIELDS = ("endpoint", "bucket", "region", "prefix", "access_key_id", "secret_access_key")
TIERS_REVISION = "OROCHI_STORAGE_TIERS_REVISION"


@dataclass(frozen=True)
class Placement:
    """Where and how clusters run in this Kubernetes cluster (the driver's settings)."""

    storage_class: str = "do-block-storage"
    operator_namespace: str = "cnpg-system"
    scrape_namespaces: tuple[str, ...] = ()
    internal_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifests:
    namespace: Manifest
    network_policies: tuple[Manifest, ...]
    tiers_secret: Manifest | None
    cluster: Manifest
    """Without the agent's annotations: `stamped()` adds them, with the generation its spec belongs to."""
    service: Manifest
    """The namespace and the Service carry their spec hash, so a watch cache tells when applying them changes
    nothing."""


def build(desired: DesiredState, placement: Placement) -> Manifests:
    namespace = names.namespace(desired.id)
    labels = names.labels(cluster_id=desired.id, org_id=desired.org_id)
    tiers = _tier_values(desired)
    return Manifests(
        namespace=stamped({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}),
        network_policies=_network_policies(namespace, labels, placement),
        tiers_secret=_secret(names.TIERS_SECRET, namespace, labels, tiers, type_="Opaque") if tiers else None,
        cluster=_cluster(desired, namespace, labels, placement, tiers),
        service=stamped(_service(desired, namespace, labels)),
    )


def app_secret(desired: DesiredState, *, follows: int) -> Manifest:
    """The app user's Secret, annotated with the Cluster's metadata.generation it is written after."""
    namespace = names.namespace(desired.id)
    labels = {**names.labels(cluster_id=desired.id, org_id=desired.org_id), "cnpg.io/reload": "true"}
    secret = _secret(names.APP_SECRET, namespace, labels, {
        "username": desired.owner, "password": desired.password.get_secret_value()}, type_="kubernetes.io/basic-auth")
    secret["metadata"]["annotations"] = {names.FOLLOWS: str(follows)}
    return secret


def stamped(manifest: Manifest, *, generation: int | None = None) -> Manifest:
    """The object with its spec hash and, for the Cluster, the orochi generation its spec belongs to."""
    annotations = {names.SPEC_HASH: spec_hash(manifest)}
    if generation is not None:
        annotations[names.GENERATION] = str(generation)
    return {**manifest, "metadata": {**manifest["metadata"], "annotations": annotations}}


def spec_hash(manifest: Manifest) -> str:
    """A hash of everything the agent sets on an object but its own annotations."""
    unstamped = {**manifest, "metadata": {k: v for k, v in manifest["metadata"].items() if k != "annotations"}}
    return hashlib.sha256(json.dumps(unstamped, sort_keys=True).encode()).hexdigest()[:32]


def carries(live: dict[str, Any], manifest: Manifest) -> bool:
    """Whether the stored object `live` already is `manifest` applied: the same spec hash, and every field the
    manifest sets at the value it sets (a hand edit of one of them shows). Applying it again would change
    nothing."""
    want = ((manifest.get("metadata") or {}).get("annotations") or {}).get(names.SPEC_HASH)
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(names.SPEC_HASH)
    return want is not None and want == have and _contains(live, manifest)


def _contains(live: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and _contains(live[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(map(_contains, live, want))
    return bool(live == want)


def objects(desired: DesiredState, placement: Placement, *, generation: int, follows: int) -> list[Manifest]:
    """Every object of the cluster, in the order the driver applies them."""
    built = build(desired, placement)
    return [built.namespace, *built.network_policies, *([built.tiers_secret] if built.tiers_secret else []),
            stamped(built.cluster, generation=generation), app_secret(desired, follows=follows), built.service]


def uses_tiers_secret(cluster: Manifest) -> bool:
    """Whether a Cluster (as applied or as stored) takes variables from the tiers Secret."""
    env = ((cluster.get("spec") or {}).get("env")) or []
    return any(((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == names.TIERS_SECRET for e in env)


# The objects


def _cluster(desired: DesiredState, namespace: str, labels: dict[str, str], placement: Placement,
             tiers: dict[str, str]) -> Manifest:
    size = {"cpu": str(desired.vcpu), "memory": f"{desired.memory_gb}Gi"}
    spec: dict[str, Any] = {
        "instances": desired.instances,
        "imageName": desired.image,
        "storage": {"size": f"{desired.storage_gb}Gi", "storageClass": placement.storage_class},
        "resources": {"requests": dict(size), "limits": dict(size)},
        "postgresql": {"parameters": sizing.parameters(vcpu=desired.vcpu, memory_gb=desired.memory_gb)},
        "bootstrap": {"initdb": {"database": desired.database, "owner": desired.owner,
                                 "secret": {"name": names.APP_SECRET}}},
        "affinity": {"enablePodAntiAffinity": True, "podAntiAffinityType": "required",
                     "topologyKey": "kubernetes.io/hostname"},
        "enablePDB": True,
        "inheritedMetadata": {"labels": dict(labels)},
    }
    if tiers:
        spec["env"] = [*_tier_env(tiers), {"name": TIERS_REVISION, "value": _revision(tiers)}]
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": names.CLUSTER, "namespace": namespace, "labels": dict(labels)}, "spec": spec}


def _service(desired: DesiredState, namespace: str, labels: dict[str, str]) -> Manifest:
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "externalTrafficPolicy": "Local",
        "selector": names.primary_selector(),
        "ports": [{"name": "postgres", "port": names.POSTGRES_PORT, "targetPort": names.POSTGRES_PORT,
                   "protocol": "TCP"}],
    }
    if desired.ip_allowlist:  # none: open to every address, as Kubernetes reads an empty list
        spec["loadBalancerSourceRanges"] = list(desired.ip_allowlist)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": names.SERVICE, "namespace": namespace, "labels": dict(labels)}, "spec": spec}


def _network_policies(namespace: str, labels: dict[str, str], placement: Placement) -> tuple[Manifest, ...]:
    instances = {"matchLabels": names.instance_selector()}
    outside = [{"ipBlock": _block(cidr, placement.internal_cidrs)} for cidr in ("0.0.0.0/0", "::/0")]
    same_cluster = [{"podSelector": {"matchLabels": {"cnpg.io/cluster": names.CLUSTER}}}]
    operator = [_namespace_peer(placement.operator_namespace)]
    scrapers = [_namespace_peer(n) for n in placement.scrape_namespaces]
    postgres, manager = _port(names.POSTGRES_PORT), _port(names.INSTANCE_MANAGER_PORT)

    def policy(name: str, selector: dict[str, Any], rules: list[dict[str, Any]]) -> Manifest:
        # No `ingress` at all when there is no rule: the API server stores an empty list as none, and an apply
        # that sends one would write again every time.
        spec = {"podSelector": selector, "policyTypes": ["Ingress"], **({"ingress": rules} if rules else {})}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "spec": spec}

    policies = [
        policy("default-deny", {}, []),
        policy("allow-clients", instances, [{"from": outside, "ports": [postgres]}]),
        policy("allow-replication", instances, [{"from": same_cluster, "ports": [postgres, manager]}]),
        policy("allow-operator", instances, [{"from": operator, "ports": [postgres, manager]}]),
    ]
    if scrapers:
        policies.append(policy("allow-metrics", instances, [{"from": scrapers, "ports": [_port(names.EXPORTER_PORT)]}]))
    return tuple(policies)


def _secret(name: str, namespace: str, labels: dict[str, str], values: dict[str, str], *, type_: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(values.items())}}


# Parts


def _tier_values(desired: DesiredState) -> dict[str, str]:
    """The tiers Secret's content: `<tier>-<field>` → value, for each tier given (empty: no tiers)."""
    tiers = desired.storage_tiers
    values: dict[str, str] = {}
    for tier in TIERS:
        credentials: S3Credentials | None = getattr(tiers, tier) if tiers is not None else None
        if credentials is None:
            continue
        for field in _TIER_FIELDS:
            value = getattr(credentials, field)
            if field == "secret_access_key":
                value = value.get_secret_value()
            if value:
                values[f"{tier}-{field.replace('_', '-')}"] = str(value)
    return values


def _tier_env(tiers: dict[str, str]) -> list[dict[str, Any]]:
    env = []
    for key in sorted(tiers):
        tier, field = key.split("-", 1)
        env.append({"name": f"OROCHI_{tier.upper()}_S3_{field.replace('-', '_').upper()}",
                    "valueFrom": {"secretKeyRef": {"name": names.TIERS_SECRET, "key": key}}})
    return env


def _revision(tiers: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(tiers, sort_keys=True).encode()).hexdigest()[:16]


def _block(cidr: str, internal: tuple[str, ...]) -> dict[str, Any]:
    v6 = ":" in cidr
    excluded = [c for c in internal if (":" in c) == v6]
    return {"cidr": cidr, **({"except": excluded} if excluded else {})}


def _namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _port(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}
