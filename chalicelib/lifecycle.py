"""How a cluster's public status and its operations move.

A change begins an operation and bumps the generation; the agent's status reports and the reaper's
deadlines settle operations. The cluster record tracks its open operations (id → generation, status)
so a report never has to search for them.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from chalicelib import errors
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, Body, MultilineText, Out
from chalicelib.store import clusters as store
from chalicelib.clock import now

OPERATION_RETENTION = 90 * 86400
REPORT_ATTEMPTS = 8
Phase = Literal["provisioning", "ready", "degraded", "failed", "deleted"]


class EndpointIn(Body):
    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]{1,253}$")]
    port: Annotated[int, Field(ge=1, le=65535), JSON_INTEGER]


class StatusReport(Body):
    """What the agent observed of one cluster at one generation."""

    observed_generation: Annotated[int, Field(ge=0), JSON_INTEGER]
    phase: Phase
    ready_instances: Annotated[int, Field(ge=0, le=64), JSON_INTEGER]
    primary: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,253}$")] | None = None
    endpoint: EndpointIn | None = None
    # Free text for the cluster's status_message; multi-line (tab and newline) as operators' messages are.
    message: MultilineText | None = None


class ReportOut(Out):
    applied: bool
    status: str
    generation: int
    observed_generation: int


def _operation_id(at_ns: int) -> str:
    """Sortable by creation time, so a cluster's operations list newest first."""
    return f"op_{at_ns // 1000:014x}{secrets.token_hex(5)}"


def begin_change(settings: Settings, cluster: store.Cluster, *, kind: str, actor: str, at: int) -> store.Operation:
    """Bump `cluster` to a new generation for `kind` and return the pending operation that tracks it."""
    cluster.generation += 1
    cluster.version += 1
    cluster.updated_at = at
    if kind == "delete":
        cluster.status = "deleting"
    elif cluster.was_running:
        cluster.status = "updating"
    elif cluster.status != "provisioning":
        cluster.status = "pending"
    cluster.mark_unsettled(at)
    operation = store.Operation(
        *store.Operation.key(cluster.id, op_id := _operation_id(time.time_ns())), id=op_id, cluster_id=cluster.id,
        org_id=cluster.org_id, kind=kind, status="pending", actor=actor, generation=cluster.generation,
        deadline=at + settings.operation_deadline, created_at=at, updated_at=at,
    )
    operation.index_open()
    cluster.open_operations = {**cluster.open_operations, op_id: {"generation": cluster.generation, "status": "pending"}}
    return operation


def apply_report(settings: Settings, *, region: str, cluster_id: str, report: StatusReport) -> ReportOut:
    """Fold an agent's report into the cluster. A report older than one already applied changes nothing."""
    for _ in range(REPORT_ATTEMPTS):
        cluster = store.get_cluster(cluster_id)
        if cluster is None or cluster.region != region:
            raise errors.NotFound("cluster not found")
        if report.observed_generation > cluster.generation:
            raise errors.Unprocessable(f"generation {report.observed_generation} was never issued")
        if cluster.status == "deleted" or report.observed_generation < cluster.observed_generation:
            return _report_out(cluster, applied=False)
        before, expected, at = _observable(cluster), cluster.version, now()
        _settle(settings, cluster, report, at)
        transitions = _advance_operations(cluster)
        if _observable(cluster) == before and not transitions:
            return _report_out(cluster, applied=True)
        cluster.version += 1
        cluster.reported_at = cluster.updated_at = at
        try:
            store.save(cluster, expected_version=expected, transitions=transitions, released=cluster.status == "deleted",
                       at=at, operation_retention=OPERATION_RETENTION)
        except store.VersionConflict:
            continue
        return _report_out(cluster, applied=True)
    raise errors.Conflict("the cluster is being changed concurrently; retry")


def _report_out(cluster: store.Cluster, *, applied: bool) -> ReportOut:
    return ReportOut(applied=applied, status=cluster.status, generation=cluster.generation,
                     observed_generation=cluster.observed_generation)


def _observable(cluster: store.Cluster) -> tuple[object, ...]:
    return (cluster.status, cluster.status_message, cluster.observed_generation, cluster.ready_instances,
            cluster.primary, cluster.endpoint_host, cluster.endpoint_port, cluster.was_running)


def _settle(settings: Settings, cluster: store.Cluster, report: StatusReport, at: int) -> None:
    cluster.observed_generation = report.observed_generation
    cluster.ready_instances = report.ready_instances
    cluster.primary = report.primary or cluster.primary
    if report.endpoint is not None:
        cluster.endpoint_host, cluster.endpoint_port = report.endpoint.host, report.endpoint.port
    cluster.status_message = report.message
    settled = cluster.observed_generation == cluster.generation
    if report.phase == "deleted":
        if cluster.status != "deleting" or not settled:
            raise errors.Unprocessable("the cluster is not being deleted at this generation")
        cluster.status = "deleted"
        cluster.entomb(expires_at=at + settings.tombstone_retention)
        return
    if report.phase == "failed":
        cluster.status = "failed"
    elif cluster.status == "deleting":
        pass
    elif settled and report.phase == "ready" and report.ready_instances >= cluster.instances:
        cluster.status, cluster.was_running = "running", True
    elif settled and cluster.was_running and not cluster.open_operations:
        cluster.status = "degraded"
    elif cluster.was_running:
        cluster.status = "updating"
    else:
        cluster.status = "provisioning"
    if settled:
        cluster.mark_settled()


def _advance_operations(cluster: store.Cluster) -> tuple[store.Transition, ...]:
    """Operations whose generation the agent has reached: running, or finished with the cluster's outcome."""
    transitions: list[store.Transition] = []
    still_open: dict[str, dict[str, object]] = {}
    for op_id, entry in cluster.open_operations.items():
        reached = int(entry["generation"]) <= cluster.observed_generation
        if reached and cluster.status == "failed":
            transitions.append(store.Transition(op_id, "failed", cluster.status_message or "the agent reported a failure", final=True))
        elif reached and cluster.status in ("running", "deleted"):
            transitions.append(store.Transition(op_id, "succeeded", None, final=True))
        else:
            if reached and entry["status"] == "pending":
                transitions.append(store.Transition(op_id, "running", None, final=False))
                entry = {**entry, "status": "running"}
            still_open[op_id] = entry
    cluster.open_operations = still_open
    return tuple(transitions)


def fail_overdue(settings: Settings, operation: store.Operation, *, at: int) -> None:
    """Fail an operation past its deadline, with the reason, and stop tracking it on its cluster."""
    reason = f"not completed within {settings.operation_deadline} seconds; the cluster is still being reconciled"
    transition = store.Transition(operation.id, "failed", reason, final=True)
    for _ in range(REPORT_ATTEMPTS):
        cluster = store.get_cluster(operation.cluster_id)
        if cluster is None or operation.id not in cluster.open_operations:
            store.close_operation(operation.cluster_id, transition, at=at, retention=OPERATION_RETENTION)
            return
        expected = cluster.version
        cluster.version += 1
        cluster.open_operations = {k: v for k, v in cluster.open_operations.items() if k != operation.id}
        cluster.status_message = f"operation {operation.id} ({operation.kind}) timed out"
        try:
            store.save(cluster, expected_version=expected, transitions=(transition,), at=at,
                       operation_retention=OPERATION_RETENTION)
            return
        except store.VersionConflict:
            continue
