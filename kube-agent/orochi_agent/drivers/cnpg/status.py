"""A CNPG `Cluster` (and the agent's load balancer Service) as an `Observation`. Pure: no I/O.

**When has CNPG acted on a spec?** CNPG v1.30 records no generation for a Cluster: no `status.observedGeneration`,
and it sets its conditions (`Ready` included) without `observedGeneration`. What it does record is the
resourceVersion of every Secret the Cluster uses, `status.secretsResourceVersion.applicationSecretVersion` for
the app user's, written early in each reconcile, before it acts on the spec (`updateResourceStatus`, through a
status *update*: optimistic concurrency against the resourceVersion of the Cluster that reconcile read; the
instance manager also resets the app user's password from that Secret). So the agent writes the
app Secret *after* the Cluster, annotated with the Cluster's metadata.generation M that the apply returned (the
annotation makes the write a real change exactly when M moves); the Secret's new resourceVersion S is the
`Proof`. When the Cluster shows generation M and applicationSecretVersion S, CNPG read S after the Cluster was at
M, and its status update, made after that read, was accepted against the Cluster as it then was: that reconcile
ran on spec M (or a later one). The Secret carries CNPG's `cnpg.io/reload` label, so writing it always wakes a
reconcile: the proof comes even when nothing else in the status changes. A change of the spec by someone else (a
hand edit) moves metadata.generation past the proof: proven again after the agent's next apply (its resync).

`Observation.generation` is then the orochi generation last applied in full (the namespace's annotation): the
other objects (Secrets, policies, the Service) take effect when written; only the Cluster waits for CNPG. Before
the proof, it is the generation last observed this way (0 when none is known, e.g. after a restart before the
first apply, which the agent's resync makes at once: the proof is rebuilt from the answers of that no-op apply).

Phases: `ready` when CNPG acted on the spec, its phase is `Cluster in healthy state`, the `Ready` condition is
True and every instance of the spec is ready; `failed` in CNPG's phases that need a person (unrecoverable,
invalid definition, missing plugin or image catalog, waiting for the user); otherwise `degraded` when some
instance is ready, `provisioning` when none is. A CNPG reconcile writes its first status before it acts (a rolling
update's phase follows a moment later): the proof says the spec was taken up, not that its rollout began.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orochi_agent.drivers.base import Observation
from orochi_agent.drivers.cnpg import names
from orochi_agent.models import Endpoint

HEALTHY = "Cluster in healthy state"
FAILED_PHASES = frozenset({
    "Cluster is unrecoverable and needs manual intervention",
    "Invalid cluster definition",
    "Cluster has incomplete or invalid image catalog",
    "Cluster cannot proceed to reconciliation due to an unknown plugin being required",
    "Cluster cannot execute instance online upgrade due to missing architecture binary",
    "Waiting for user action",
})
MAX_REPORTED_INSTANCES = 64


@dataclass(frozen=True)
class Proof:
    """What shows that CNPG reconciled the Cluster at `cluster_generation`: its status recording `secret_version`
    as the app Secret's resourceVersion (the Secret written after the Cluster reached that generation)."""

    cluster_generation: int
    secret_version: str


def recorded_proof(namespace: dict[str, Any]) -> Proof | None:
    """The proof the last full apply noted on the namespace (whichever replica made it); None before one."""
    value = ((namespace.get("metadata") or {}).get("annotations") or {}).get(names.PROOF) or ""
    generation, _, secret_version = value.partition("/")
    return Proof(cluster_generation=int(generation), secret_version=secret_version) if (
        generation.isdigit() and secret_version) else None


def proof_annotation(proof: Proof) -> str:
    return f"{proof.cluster_generation}/{proof.secret_version}"


def acted(cluster: dict[str, Any], proof: Proof | None) -> bool:
    if proof is None:
        return False
    status = cluster.get("status") or {}
    recorded = (status.get("secretsResourceVersion") or {}).get("applicationSecretVersion")
    return _generation(cluster) == proof.cluster_generation and recorded == proof.secret_version


def observation(*, cluster: dict[str, Any] | None, service: dict[str, Any] | None, generation: int) -> Observation:
    """The cluster at `generation` (the caller decides it, see the module's docstring)."""
    endpoint = _endpoint(service)
    if cluster is None:
        return Observation(generation=generation, phase="provisioning", ready_instances=0, endpoint=endpoint,
                           message="the CNPG Cluster object does not exist (yet)")
    status = cluster.get("status") or {}
    phase = str(status.get("phase") or "")
    wanted = int((cluster.get("spec") or {}).get("instances") or 1)
    ready = min(int(status.get("readyInstances") or 0), MAX_REPORTED_INSTANCES)
    primary = str(status.get("currentPrimary") or "") or None
    reason = str(status.get("phaseReason") or "")
    message = "; ".join(part for part in (phase, reason) if part)[:1000] or "CNPG has not reported on it yet"
    if phase in FAILED_PHASES:
        return Observation(generation=generation, phase="failed", ready_instances=ready, primary=primary,
                           endpoint=endpoint, message=message)
    if phase == HEALTHY and _ready_condition(status) and ready >= wanted:
        return Observation(generation=generation, phase="ready", ready_instances=ready, primary=primary,
                           endpoint=endpoint)
    return Observation(generation=generation, phase="degraded" if ready > 0 else "provisioning",
                       ready_instances=ready, primary=primary, endpoint=endpoint, message=message)


def applied_generation(namespace: dict[str, Any]) -> int:
    """The orochi generation last applied in full, from the namespace's annotation (0: none yet)."""
    return _int(((namespace.get("metadata") or {}).get("annotations") or {}).get(names.GENERATION))


def _ready_condition(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _endpoint(service: dict[str, Any] | None) -> Endpoint | None:
    if service is None:
        return None
    for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        host = ingress.get("ip") or ingress.get("hostname")
        if host:
            return Endpoint(host=host, port=names.POSTGRES_PORT)
    return None


def _generation(obj: dict[str, Any]) -> int:
    return _int((obj.get("metadata") or {}).get("generation"))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
