"""Clusters, their name claims, operations and audit entries; see `keys` for where each lives.

A cluster's index entries follow from its state whenever it is written (`_index`): live clusters are
listed by organization and by region, unsettled ones (a generation not yet observed) by when they were
last enqueued, and a deleted one leaves every index as a tombstone that expires. Every cluster write is
conditional on its `version` (pynamodb's VersionAttribute), which is also its ETag.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

from pynamodb.attributes import (
    BooleanAttribute, JSONAttribute, ListAttribute, UnicodeAttribute, VersionAttribute,
)

from chalicelib.store import fleet_records, keys
from chalicelib.store.fleet_records import FAILED_OPERATIONS, OPEN_OPERATIONS, clusters_counter
from chalicelib.store.org_records import Org
from chalicelib.store.table import (
    ConditionFailed, IntegerAttribute, OptionalIntegerAttribute, Item, LostRace, Page, StartKey, Transaction, get, page, transaction, written,
)

DELETED = "deleted"
C = TypeVar("C", bound="Cluster")


class StaleVersion(LostRace):
    """The cluster changed since it was read: read it again and retry."""


class Cluster(Item):
    id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    name = UnicodeAttribute()
    region = UnicodeAttribute()
    postgres_version = UnicodeAttribute()
    size = UnicodeAttribute()
    instances = IntegerAttribute()
    storage_gb = IntegerAttribute()
    storage_tiers = JSONAttribute(null=True)
    autoscaling = JSONAttribute(null=True)
    ip_allowlist = ListAttribute[str](null=True)  # a list of S: pynamodb infers the element type
    deletion_protection = BooleanAttribute(default=False)
    db_password = UnicodeAttribute()
    status = UnicodeAttribute()
    status_message = UnicodeAttribute(null=True)
    generation = IntegerAttribute()
    observed_generation = IntegerAttribute(default=0)
    ready_instances = IntegerAttribute(default=0)
    endpoint_host = UnicodeAttribute(null=True)
    endpoint_port = OptionalIntegerAttribute()
    primary = UnicodeAttribute(null=True)
    was_running = BooleanAttribute(default=False)
    open_operations = JSONAttribute(default=dict)
    enqueued_at = OptionalIntegerAttribute()
    instances_changed_at = OptionalIntegerAttribute()  # the last change of instances (not the creation)
    storage_changed_at = OptionalIntegerAttribute()  # the last change of storage_gb
    version = VersionAttribute()
    created_at = IntegerAttribute()
    updated_at = IntegerAttribute()
    reported_at = OptionalIntegerAttribute()
    # The status as last read or written (not an attribute): what a save moves the fleet counts away from.
    stored_status: str | None = None

    @classmethod
    def from_raw_data(cls: type[C], data: dict[str, Any]) -> C:
        cluster = super().from_raw_data(data)
        cluster.stored_status = cluster.status
        return cluster


class ClusterName(Item):
    cluster_id = UnicodeAttribute()


class Operation(Item):
    id = UnicodeAttribute()
    cluster_id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    status = UnicodeAttribute()
    actor = UnicodeAttribute()
    generation = IntegerAttribute()
    error = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)  # why it was made, when its actor says (the autoscaler does)
    deadline = IntegerAttribute()
    created_at = IntegerAttribute()
    updated_at = IntegerAttribute()


class AuditEntry(Item):
    cluster_id = UnicodeAttribute()
    action = UnicodeAttribute()
    actor = UnicodeAttribute()
    request_id = UnicodeAttribute()
    source_ip = UnicodeAttribute(null=True)
    at = IntegerAttribute()


def new_cluster(cluster_id: str, **fields: Any) -> Cluster:
    return Cluster(*keys.cluster(cluster_id), id=cluster_id, **fields)


def new_operation(*, operation_id: str, cluster: Cluster, kind: str, actor: str, deadline: int, at: int,
                  reason: str | None = None) -> Operation:
    gsi2pk, gsi2sk = keys.open_operation(deadline, cluster.id, operation_id)
    return Operation(
        *keys.operation(cluster.id, operation_id), id=operation_id, cluster_id=cluster.id, org_id=cluster.org_id,
        kind=kind, status="pending", actor=actor, generation=cluster.generation, deadline=deadline, reason=reason,
        created_at=at, updated_at=at, gsi2pk=gsi2pk, gsi2sk=gsi2sk,
    )


def _index(cluster: Cluster) -> None:
    """Set the cluster's index attributes from its state (the indexes follow the record, never a caller)."""
    cluster.gsi1pk = cluster.gsi1sk = cluster.gsi2pk = cluster.gsi2sk = cluster.gsi3pk = cluster.gsi3sk = None
    if cluster.status == DELETED:
        return
    cluster.gsi1pk, cluster.gsi1sk = keys.cluster_by_org(cluster.org_id, cluster.created_at, cluster.id)
    cluster.gsi2pk, cluster.gsi2sk = keys.cluster_by_region(cluster.region, cluster.id)
    if cluster.observed_generation < cluster.generation:
        enqueued = cluster.enqueued_at if cluster.enqueued_at is not None else cluster.updated_at
        cluster.gsi3pk, cluster.gsi3sk = keys.unsettled_cluster(cluster.region, enqueued, cluster.id)


def put_many(clusters: list[Cluster]) -> None:
    """Write clusters as they are, indexed, in BatchWriteItems of 25 and without conditions (bulk loading only:
    the benchmarks seed fleets with it; nothing on a request path may)."""
    with Cluster.batch_write() as batch:
        for cluster in clusters:
            _index(cluster)
            batch.save(cluster)


def create(*, cluster: Cluster, operation: Operation, quota: int) -> None:
    """Write a new cluster, its name claim and first operation, counting it against the org's quota.

    Raises ConditionFailed labelled `name` (the name is taken) or `quota` (the org has its quota of live
    clusters), or Contention when concurrent creates in the organization collided (retry).
    """
    _index(cluster)
    with transaction() as tx:
        tx.update(
            Org(*keys.org(cluster.org_id)),
            actions=[Org.cluster_count.add(1)],
            condition=Org.pk.exists() & (Org.cluster_count.does_not_exist() | (Org.cluster_count < quota)),
            label="quota",
        )
        tx.save(ClusterName(*keys.cluster_name(cluster.org_id, cluster.name), cluster_id=cluster.id),
                condition=ClusterName.pk.does_not_exist(), label="name")
        tx.save(cluster, condition=Cluster.pk.does_not_exist())
        tx.save(operation, condition=Operation.pk.does_not_exist())
        fleet_records.add(tx, Counter({clusters_counter(cluster.status): 1, OPEN_OPERATIONS: 1}))
    cluster.stored_status = cluster.status


@dataclass(frozen=True)
class Transition:
    """An operation moving to `status`; a final one leaves the open-operations index and expires later."""

    operation_id: str
    status: str
    error: str | None
    final: bool


def save(
    cluster: Cluster, *, new_operations: tuple[Operation, ...] = (), transitions: tuple[Transition, ...] = (),
    renamed_from: str | None = None, at: int, operation_retention: int = 0, entomb_until: int | None = None,
) -> None:
    """Write `cluster` if it is still at the version it was read at, and bump that version.

    With it: new operations, operation transitions, a moved name claim; with `entomb_until` (a cluster
    just deleted) its name and its place in the quota are released and it stays only as a tombstone
    until then. Raises StaleVersion if the cluster changed meanwhile, ConditionFailed labelled `name` if
    the new name is taken, Contention when another transaction was writing it at that moment.
    """
    _index(cluster)
    if entomb_until is not None:
        cluster.expires_ttl = entomb_until
    try:
        with transaction() as tx:
            tx.save(cluster, label="version")
            for operation in new_operations:
                tx.save(operation, condition=Operation.pk.does_not_exist())
            for transition in transitions:
                _transition(tx, cluster.id, transition, at=at, retention=operation_retention)
            if renamed_from is not None:
                tx.save(ClusterName(*keys.cluster_name(cluster.org_id, cluster.name), cluster_id=cluster.id),
                        condition=ClusterName.pk.does_not_exist(), label="name")
                tx.delete(ClusterName(*keys.cluster_name(cluster.org_id, renamed_from)))
            if entomb_until is not None:
                tx.delete(ClusterName(*keys.cluster_name(cluster.org_id, cluster.name)))
                tx.update(Org(*keys.org(cluster.org_id)), actions=[Org.cluster_count.add(-1)],
                          condition=Org.cluster_count > 0)
            changes = _status_change(cluster)
            changes.update(_operation_changes(transitions))  # update, not +: a Counter sum drops negative counts
            changes[OPEN_OPERATIONS] += len(new_operations)
            fleet_records.add(tx, changes)
    except ConditionFailed as e:
        if "version" in e.labels:
            raise StaleVersion() from e
        raise
    cluster.stored_status = cluster.status


def _status_change(cluster: Cluster) -> Counter[str]:
    """The fleet counts' change when `cluster` moves from its stored status (live clusters only: a deleted one
    leaves every count, as it leaves every index)."""
    change: Counter[str] = Counter()
    if cluster.stored_status != cluster.status:
        if cluster.stored_status not in (None, DELETED):
            change[clusters_counter(cluster.stored_status)] -= 1
        if cluster.status != DELETED:
            change[clusters_counter(cluster.status)] += 1
    return change


def _operation_changes(transitions: tuple[Transition, ...]) -> Counter[str]:
    change: Counter[str] = Counter()
    for transition in transitions:
        if transition.final:
            change[OPEN_OPERATIONS] -= 1
            if transition.status == "failed":
                change[FAILED_OPERATIONS] += 1
    return change


def _transition(tx: Transaction, cluster_id: str, transition: Transition, *, at: int, retention: int) -> None:
    actions = [Operation.status.set(transition.status), Operation.updated_at.set(at)]
    if transition.error is not None:
        actions.append(Operation.error.set(transition.error))
    if transition.final:
        actions += [Operation.gsi2pk.remove(), Operation.gsi2sk.remove(), Operation.expires_ttl.set(at + retention)]
    tx.update(Operation(*keys.operation(cluster_id, transition.operation_id)), actions=actions,
              condition=Operation.pk.exists())


def close_operation(cluster_id: str, transition: Transition, *, at: int, retention: int) -> None:
    """Move an operation that its cluster no longer tracks (the cluster is gone)."""
    with transaction() as tx:
        _transition(tx, cluster_id, transition, at=at, retention=retention)
        fleet_records.add(tx, _operation_changes((transition,)))


def get_cluster(cluster_id: str) -> Cluster | None:
    return get(Cluster, keys.cluster(cluster_id))


def clusters_by_id(cluster_ids: list[str]) -> dict[str, Cluster]:
    wanted = [keys.cluster(cluster_id) for cluster_id in dict.fromkeys(cluster_ids)]
    return {cluster.id: cluster for cluster in Cluster.batch_get(wanted, consistent_read=True)}


def clusters_of_org(org_id: str, *, limit: int, start: StartKey | None, status: str | None) -> Page[Cluster]:
    """Live clusters, oldest first (a `status` filter runs after `limit`, so a page may be short)."""
    return page(lambda key: Cluster.query(
        keys.clusters_of_org(org_id), index_name="gsi1", limit=limit, last_evaluated_key=key,
        filter_condition=(Cluster.status == status) if status else None,
    ), start)


def clusters_of_region(region: str, *, limit: int, start: StartKey | None) -> Page[Cluster]:
    return page(lambda key: Cluster.query(keys.clusters_of_region(region), index_name="gsi2", limit=limit,
                                          last_evaluated_key=key), start)


def unsettled_clusters(region: str, *, enqueued_before: int) -> list[Cluster]:
    """Live clusters of `region` whose latest generation is unobserved and was last enqueued before the time."""
    return list(Cluster.query(keys.unsettled_of_region(region), Cluster.gsi3sk < keys.due_before(enqueued_before),
                              index_name="gsi3"))


def touch_unsettled(cluster: Cluster, *, at: int) -> bool:
    """Note that `cluster`'s generation was enqueued again at `at`; False if it has settled meanwhile."""
    cluster.enqueued_at = at
    _, gsi3sk = keys.unsettled_cluster(cluster.region, at, cluster.id)
    return written(lambda: cluster.update(
        actions=[Cluster.enqueued_at.set(at), Cluster.gsi3sk.set(gsi3sk)], condition=Cluster.gsi3pk.exists(),
        add_version_condition=False,
    ))


def overdue_operations(*, at: int) -> list[Operation]:
    return list(Operation.query(keys.OPEN_OPERATIONS, Operation.gsi2sk < keys.due_before(at), index_name="gsi2"))


def get_operation(cluster_id: str, operation_id: str) -> Operation | None:
    return get(Operation, keys.operation(cluster_id, operation_id))


def operations_of(cluster_id: str, *, limit: int, start: StartKey | None) -> Page[Operation]:
    """Newest first."""
    return page(lambda key: Operation.query(
        keys.cluster_partition(cluster_id), Operation.sk.startswith(keys.OPERATION_PREFIX), scan_index_forward=False,
        limit=limit, consistent_read=True, last_evaluated_key=key,
    ), start)


def record_audit(*, cluster_id: str, entry_id: str, action: str, actor: str, request_id: str, source_ip: str | None,
                 at: int) -> None:
    AuditEntry(*keys.audit_entry(cluster_id, at, entry_id), cluster_id=cluster_id, action=action, actor=actor,
               request_id=request_id, source_ip=source_ip, at=at).save()


@dataclass(frozen=True)
class Sample:
    """One metrics sample as the agent reported it (folded into rollups and autoscaling states, not stored)."""

    cluster_id: str
    at: int
    values: dict[str, int | float]
