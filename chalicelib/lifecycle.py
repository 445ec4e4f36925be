"""How a cluster and its operations move, from creation to tombstone: the one home of every transition.

A change (create, update, scale, delete — a user's or the autoscaler's (`autoscaler`)) bumps the generation,
opens an operation and enqueues a job for the region's agent. The agent's status reports settle
operations; the scheduled sweep re-enqueues generations nobody observed and fails operations past
their deadline. The cluster record tracks its open operations (id → generation, status) so a report
never has to search for them. Lost races are retried by `retrying`'s one policy.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from chalicelib import errors, jobs, retrying
from chalicelib.clock import now
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, Body, Count, MultilineText, Out
from chalicelib.store import cluster_records
from chalicelib.store.cluster_records import DELETED, Cluster, Operation, StaleVersion, Transition
from chalicelib.store.table import ConditionFailed

log = logging.getLogger("orochi.lifecycle")
OPERATION_RETENTION = 90 * 86400
Phase = Literal["provisioning", "ready", "degraded", "failed", "deleted"]


class EndpointIn(Body):
    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]{1,253}$")]
    port: Annotated[int, Field(ge=1, le=65535), JSON_INTEGER]


class StatusReport(Body):
    """What the agent observed of one cluster at one generation."""

    observed_generation: Count
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


@dataclass(frozen=True)
class Change:
    """A change accepted: the cluster as written and the operation that tracks it."""

    cluster: Cluster
    operation: Operation


def _operation_id(at_ns: int) -> str:
    """Sortable by creation time, so a cluster's operations list newest first."""
    return f"op_{at_ns // 1000:014x}{secrets.token_hex(5)}"


def _begin(settings: Settings, cluster: Cluster, *, kind: str, actor: str, at: int,
           reason: str | None = None) -> Operation:
    """Bump `cluster` to a new generation for `kind` and return the pending operation that tracks it."""
    cluster.generation += 1
    cluster.updated_at = cluster.enqueued_at = at
    if kind == "delete":
        cluster.status = "deleting"
    elif cluster.was_running:
        cluster.status = "updating"
    elif cluster.status != "provisioning":
        cluster.status = "pending"
    operation = cluster_records.new_operation(operation_id=_operation_id(time.time_ns()), cluster=cluster, kind=kind,
                                              actor=actor, deadline=at + settings.operation_deadline, at=at,
                                              reason=reason)
    cluster.open_operations = {**cluster.open_operations,
                               operation.id: {"generation": cluster.generation, "status": "pending"}}
    return operation


def _name_taken(cluster: Cluster) -> errors.Conflict:
    return errors.Conflict(f"a cluster named {cluster.name!r} already exists in this organization")


def create(settings: Settings, cluster: Cluster, *, actor: str) -> Change:
    """Write a new cluster at its first generation within the organization's quota, and enqueue it."""
    at = cluster.created_at
    cluster.status, cluster.generation, cluster.observed_generation, cluster.ready_instances = "pending", 0, 0, 0
    cluster.open_operations, cluster.updated_at = {}, at
    operation = _begin(settings, cluster, kind="create", actor=actor, at=at)
    quota = settings.org_cluster_quota

    def attempt() -> None:
        try:
            cluster_records.create(cluster=cluster, operation=operation, quota=quota)
        except ConditionFailed as e:
            if "name" in e.labels:
                raise _name_taken(cluster) from e
            if "quota" in e.labels:
                raise errors.QuotaExceeded(f"the organization already has its quota of {quota} live clusters") from e
            raise

    retrying.until_won(attempt, what="the organization's clusters")
    _enqueue(settings, cluster, at)
    return Change(cluster, operation)


def change(
    settings: Settings, load: Callable[[], Cluster], *, kind: str, edit: Callable[[Cluster], str | None],
    if_match: str | None, actor: str, reason: str | None = None,
) -> Change:
    """Apply `edit` to the latest record as one conditional write that bumps the generation, then enqueue.

    `load` reads the cluster (raising NotFound); `edit` changes it in place (raising a domain error to
    refuse) and returns the previous name when it renamed the cluster. With If-Match, a cluster that
    changed since the caller read it is 412; without, a concurrent write is retried on the fresh record.
    A change of instances or storage is timed on the record (the autoscaler's cooldown starts there);
    `reason`, when given, says on the operation why the change was made.
    """
    def attempt() -> Change:
        cluster = load()
        if if_match is not None and not matches(if_match, etag(cluster)):
            raise _etag_mismatch()
        if cluster.status == "deleting":
            raise errors.Conflict("the cluster is being deleted")
        at = now()
        instances, storage_gb = cluster.instances, cluster.storage_gb
        renamed_from = edit(cluster)
        if cluster.instances != instances:
            cluster.instances_changed_at = at
        if cluster.storage_gb != storage_gb:
            cluster.storage_changed_at = at
        operation = _begin(settings, cluster, kind=kind, actor=actor, at=at, reason=reason)
        try:
            cluster_records.save(cluster, new_operations=(operation,), renamed_from=renamed_from, at=at)
        except StaleVersion:
            if if_match is not None:
                raise _etag_mismatch() from None
            raise
        except ConditionFailed as e:
            raise _name_taken(cluster) if "name" in e.labels else e
        return Change(cluster, operation)

    accepted = retrying.until_won(attempt, what="the cluster")
    _enqueue(settings, accepted.cluster, accepted.cluster.updated_at)
    return accepted


def etag(cluster: Cluster) -> str:
    return f'"{cluster.version}"'


def matches(if_match: str, current: str) -> bool:
    """RFC 9110 13.1.1: `*`, or a list of entity tags of which one is `current` by the strong comparison (a weak
    tag, `W/"…"`, never matches). The header's syntax is checked before (shapes.HEADER_PATTERNS)."""
    if if_match.strip() == "*":
        return True
    return current in (tag.strip() for tag in if_match.split(","))


def _etag_mismatch() -> errors.PreconditionFailed:
    return errors.PreconditionFailed("the cluster changed since you read it (ETag mismatch)")


def _enqueue(settings: Settings, cluster: Cluster, at: int) -> bool:
    return jobs.enqueue(settings, jobs.ReconcileJob(
        cluster_id=cluster.id, org_id=cluster.org_id, region=cluster.region, generation=cluster.generation, enqueued_at=at,
    ))


def apply_report(settings: Settings, *, region: str, cluster_id: str, report: StatusReport) -> ReportOut:
    """Fold an agent's report into the cluster. A report older than one already applied changes nothing."""
    def attempt() -> ReportOut:
        cluster = cluster_records.get_cluster(cluster_id)
        if cluster is None or cluster.region != region:
            raise errors.NotFound("cluster not found")
        if report.observed_generation > cluster.generation:
            raise errors.Unprocessable(f"generation {report.observed_generation} was never issued")
        if cluster.status == DELETED or report.observed_generation < cluster.observed_generation:
            return _report_out(cluster, applied=False)
        before, at = _observable(cluster), now()
        _settle(cluster, report)
        transitions = _advance_operations(cluster)
        if _observable(cluster) == before and not transitions:
            return _report_out(cluster, applied=True)
        cluster.reported_at = cluster.updated_at = at
        entomb_until = at + settings.tombstone_retention if cluster.status == DELETED else None
        cluster_records.save(cluster, transitions=transitions, at=at, operation_retention=OPERATION_RETENTION,
                             entomb_until=entomb_until)
        return _report_out(cluster, applied=True)

    return retrying.until_won(attempt, what="the cluster")


def _report_out(cluster: Cluster, *, applied: bool) -> ReportOut:
    return ReportOut(applied=applied, status=cluster.status, generation=cluster.generation,
                     observed_generation=cluster.observed_generation)


def _observable(cluster: Cluster) -> tuple[object, ...]:
    return (cluster.status, cluster.status_message, cluster.observed_generation, cluster.ready_instances,
            cluster.primary, cluster.endpoint_host, cluster.endpoint_port, cluster.was_running)


def _settle(cluster: Cluster, report: StatusReport) -> None:
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
        cluster.status = DELETED
    elif report.phase == "failed":
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


def _advance_operations(cluster: Cluster) -> tuple[Transition, ...]:
    """Operations whose generation the agent has reached: running, or finished with the cluster's outcome."""
    transitions: list[Transition] = []
    still_open: dict[str, dict[str, object]] = {}
    for op_id, entry in cluster.open_operations.items():
        reached = int(entry["generation"]) <= cluster.observed_generation
        if reached and cluster.status == "failed":
            transitions.append(Transition(op_id, "failed", cluster.status_message or "the agent reported a failure", final=True))
        elif reached and cluster.status in ("running", DELETED):
            transitions.append(Transition(op_id, "succeeded", None, final=True))
        else:
            if reached and entry["status"] == "pending":
                transitions.append(Transition(op_id, "running", None, final=False))
                entry = {**entry, "status": "running"}
            still_open[op_id] = entry
    cluster.open_operations = still_open
    return tuple(transitions)


def fail_overdue(settings: Settings, operation: Operation, *, at: int) -> None:
    """Fail an operation past its deadline, with the reason, and stop tracking it on its cluster."""
    reason = f"not completed within {settings.operation_deadline} seconds; the cluster is still being reconciled"
    transition = Transition(operation.id, "failed", reason, final=True)

    def attempt() -> None:
        cluster = cluster_records.get_cluster(operation.cluster_id)
        if cluster is None or operation.id not in cluster.open_operations:
            cluster_records.close_operation(operation.cluster_id, transition, at=at, retention=OPERATION_RETENTION)
            return
        cluster.open_operations = {k: v for k, v in cluster.open_operations.items() if k != operation.id}
        cluster.status_message = f"operation {operation.id} ({operation.kind}) timed out"
        cluster_records.save(cluster, transitions=(transition,), at=at, operation_retention=OPERATION_RETENTION)

    retrying.until_won(attempt, what="the cluster")


@dataclass(frozen=True)
class Sweep:
    requeued: int
    failed_operations: int
    errors: int


def sweep(settings: Settings) -> Sweep:
    """No stranded clusters: re-enqueue generations nobody observed, fail operations past their deadline.

    A cluster or operation that could not be handled is logged and counted in `errors`; the next sweep
    tries it again.
    """
    at, requeued, failed, problems = now(), 0, 0, 0
    for region in settings.region_slugs:
        for cluster in cluster_records.unsettled_clusters(region, enqueued_before=at - settings.reconcile_stale_after):
            if _enqueue(settings, cluster, at):
                cluster_records.touch_unsettled(cluster, at=at)
                requeued += 1
            else:
                problems += 1
    for operation in cluster_records.overdue_operations(at=at):
        try:
            fail_overdue(settings, operation, at=at)
            failed += 1
        except errors.Contention:
            log.warning("overdue operation left for the next sweep", extra={"operation_id": operation.id})
            problems += 1
    result = Sweep(requeued=requeued, failed_operations=failed, errors=problems)
    log.info("sweep", extra={"requeued": requeued, "failed_operations": failed, "errors": problems})
    return result
