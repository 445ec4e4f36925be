"""Clusters, their name claims, operations, audit entries and metrics samples.

Keys: cluster `CLUSTER#<id>`/`CLUSTER` — live ones indexed by organization (gsi1
`ORG#<org>#CLUSTERS`), by region (gsi2 `REGION#<region>`), and while a generation is unobserved
(gsi3 `UNSETTLED#<region>`, sorted by when it was last enqueued); name claim `ORG#<org>`/`CLUSTERNAME#<name>`;
operation `CLUSTER#<id>`/`OP#<sortable id>` (open ones in gsi2 `OPENOPS` by deadline); audit entry
`CLUSTER#<id>`/`AUDIT#<at>#<id>`; metrics sample `METRICS#<cluster>`/`<at>`. Every cluster write is
conditional on its `version`, which is also its ETag.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from pynamodb.attributes import BooleanAttribute, JSONAttribute, ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import UpdateError

from chalicelib import errors
from chalicelib.store.base import (
    ConditionFailed, Item, Transaction, condition_failed, decode_cursor, encode_cursor, get, transaction,
)
from chalicelib.store.orgs import Org

OPEN_OPERATIONS = "OPENOPS"
CONTENTION_ATTEMPTS = 4


class VersionConflict(Exception):
    """The cluster changed since it was read (or was being changed at that moment): read it again and retry."""


class Cluster(Item):
    id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    name = UnicodeAttribute()
    region = UnicodeAttribute()
    postgres_version = UnicodeAttribute()
    size = UnicodeAttribute()
    instances = NumberAttribute()
    storage_gb = NumberAttribute()
    storage_tiers = JSONAttribute(null=True)
    autoscaling = JSONAttribute(null=True)
    ip_allowlist = ListAttribute(of=UnicodeAttribute, null=True)
    deletion_protection = BooleanAttribute(default=False)
    db_password = UnicodeAttribute()
    status = UnicodeAttribute()
    status_message = UnicodeAttribute(null=True)
    generation = NumberAttribute()
    observed_generation = NumberAttribute(default=0)
    ready_instances = NumberAttribute(default=0)
    endpoint_host = UnicodeAttribute(null=True)
    endpoint_port = NumberAttribute(null=True)
    primary = UnicodeAttribute(null=True)
    was_running = BooleanAttribute(default=False)
    open_operations = JSONAttribute(default=dict)
    version = NumberAttribute()
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    reported_at = NumberAttribute(null=True)

    @staticmethod
    def key(cluster_id: str) -> tuple[str, str]:
        return f"CLUSTER#{cluster_id}", "CLUSTER"

    def index_live(self) -> None:
        self.gsi1pk, self.gsi1sk = f"ORG#{self.org_id}#CLUSTERS", f"{self.created_at:010d}#{self.id}"
        self.gsi2pk, self.gsi2sk = f"REGION#{self.region}", self.id

    def mark_unsettled(self, at: int) -> None:
        self.gsi3pk, self.gsi3sk = f"UNSETTLED#{self.region}", f"{at:010d}#{self.id}"

    def mark_settled(self) -> None:
        self.gsi3pk = self.gsi3sk = None

    def entomb(self, *, expires_at: int) -> None:
        """A deleted cluster leaves every index and stays only as a tombstone until `expires_at`."""
        self.gsi1pk = self.gsi1sk = self.gsi2pk = self.gsi2sk = None
        self.mark_settled()
        self.expires_ttl = expires_at


class ClusterName(Item):
    cluster_id = UnicodeAttribute()

    @staticmethod
    def key(org_id: str, name: str) -> tuple[str, str]:
        return f"ORG#{org_id}", f"CLUSTERNAME#{name}"


class Operation(Item):
    id = UnicodeAttribute()
    cluster_id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    status = UnicodeAttribute()
    actor = UnicodeAttribute()
    generation = NumberAttribute()
    error = UnicodeAttribute(null=True)
    deadline = NumberAttribute()
    created_at = NumberAttribute()
    updated_at = NumberAttribute()

    @staticmethod
    def key(cluster_id: str, operation_id: str) -> tuple[str, str]:
        return f"CLUSTER#{cluster_id}", f"OP#{operation_id}"

    def index_open(self) -> None:
        self.gsi2pk, self.gsi2sk = OPEN_OPERATIONS, f"{self.deadline:010d}#{self.cluster_id}#{self.id}"


class AuditEntry(Item):
    cluster_id = UnicodeAttribute()
    action = UnicodeAttribute()
    actor = UnicodeAttribute()
    request_id = UnicodeAttribute()
    source_ip = UnicodeAttribute(null=True)
    at = NumberAttribute()


class MetricsSample(Item):
    cluster_id = UnicodeAttribute()
    at = NumberAttribute()
    values = JSONAttribute()

    @staticmethod
    def key(cluster_id: str, at: int) -> tuple[str, str]:
        return f"METRICS#{cluster_id}", f"{at:010d}"


def create(*, cluster: Cluster, operation: Operation, quota: int) -> None:
    """Write a new cluster, its name claim and first operation, counting it against the org's quota.

    Creates in one organization all write its record, so DynamoDB may cancel a few that collide with
    each other; those are retried (the writes are the same each time) before answering Contention.
    """
    for attempt in range(CONTENTION_ATTEMPTS):
        try:
            _create_once(cluster=cluster, operation=operation, quota=quota)
            return
        except errors.Contention:
            if attempt == CONTENTION_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))


def _create_once(*, cluster: Cluster, operation: Operation, quota: int) -> None:
    org_pk, org_sk = Org.key(cluster.org_id)
    try:
        with transaction() as tx:
            tx.update(
                Org(org_pk, org_sk),
                actions=[Org.cluster_count.add(1)],
                condition=Org.pk.exists() & (Org.cluster_count.does_not_exist() | (Org.cluster_count < quota)),
                label="quota",
            )
            tx.save(ClusterName(*ClusterName.key(cluster.org_id, cluster.name), cluster_id=cluster.id),
                    condition=ClusterName.pk.does_not_exist(), label="name")
            tx.save(cluster, condition=Cluster.pk.does_not_exist())
            tx.save(operation, condition=Operation.pk.does_not_exist())
    except ConditionFailed as e:
        if "name" in e.labels:
            raise errors.Conflict(f"a cluster named {cluster.name!r} already exists in this organization") from e
        if "quota" in e.labels:
            raise errors.QuotaExceeded(f"the organization already has its quota of {quota} live clusters") from e
        raise


@dataclass(frozen=True)
class Transition:
    """An operation moving to `status`; a final one leaves the open-operations index and expires later."""

    operation_id: str
    status: str
    error: str | None
    final: bool


def save(
    cluster: Cluster, *, expected_version: int, new_operations: tuple[Operation, ...] = (),
    transitions: tuple[Transition, ...] = (), renamed_from: str | None = None, released: bool = False,
    at: int, operation_retention: int = 0,
) -> None:
    """Write `cluster` (whose version the caller has bumped) if it is still at `expected_version`.

    With it: new operations, operation transitions, a moved name claim, or — once deleted — the name
    and quota released. Raises VersionConflict if the cluster changed meanwhile, Conflict if the new
    name is taken.
    """
    try:
        with transaction() as tx:
            tx.save(cluster, condition=Cluster.version == expected_version, label="version")
            for operation in new_operations:
                tx.save(operation, condition=Operation.pk.does_not_exist())
            for transition in transitions:
                _transition(tx, cluster.id, transition, at=at, retention=operation_retention)
            if renamed_from is not None:
                tx.save(ClusterName(*ClusterName.key(cluster.org_id, cluster.name), cluster_id=cluster.id),
                        condition=ClusterName.pk.does_not_exist(), label="name")
                tx.delete(ClusterName(*ClusterName.key(cluster.org_id, renamed_from)))
            if released:
                tx.delete(ClusterName(*ClusterName.key(cluster.org_id, cluster.name)))
                tx.update(Org(*Org.key(cluster.org_id)), actions=[Org.cluster_count.add(-1)],
                          condition=Org.cluster_count > 0)
    except errors.Contention as e:
        raise VersionConflict from e
    except ConditionFailed as e:
        if "version" in e.labels:
            raise VersionConflict from e
        if "name" in e.labels:
            raise errors.Conflict(f"a cluster named {cluster.name!r} already exists in this organization") from e
        raise


def _transition(tx: Transaction, cluster_id: str, transition: Transition, *, at: int, retention: int) -> None:
    actions = [Operation.status.set(transition.status), Operation.updated_at.set(at)]
    if transition.error is not None:
        actions.append(Operation.error.set(transition.error))
    if transition.final:
        actions += [Operation.gsi2pk.remove(), Operation.gsi2sk.remove(), Operation.expires_ttl.set(at + retention)]
    tx.update(Operation(*Operation.key(cluster_id, transition.operation_id)), actions=actions,
              condition=Operation.pk.exists())


def close_operation(cluster_id: str, transition: Transition, *, at: int, retention: int) -> None:
    """Move an operation that its cluster no longer tracks (the cluster is gone)."""
    with transaction() as tx:
        _transition(tx, cluster_id, transition, at=at, retention=retention)


def get_cluster(cluster_id: str) -> Cluster | None:
    return get(Cluster, *Cluster.key(cluster_id))


def clusters_by_id(cluster_ids: list[str]) -> dict[str, Cluster]:
    keys = [Cluster.key(cluster_id) for cluster_id in dict.fromkeys(cluster_ids)]
    return {cluster.id: cluster for cluster in Cluster.batch_get(keys, consistent_read=True)}


def clusters_of_org(org_id: str, *, limit: int, cursor: str | None, status: str | None) -> tuple[list[Cluster], str | None]:
    pk = f"ORG#{org_id}#CLUSTERS"
    page = Cluster.query(
        pk, index_name="gsi1", limit=limit, last_evaluated_key=decode_cursor(cursor, pk=pk),
        filter_condition=(Cluster.status == status) if status else None,
    )
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def clusters_of_region(region: str, *, limit: int, cursor: str | None) -> tuple[list[Cluster], str | None]:
    pk = f"REGION#{region}"
    page = Cluster.query(pk, index_name="gsi2", limit=limit, last_evaluated_key=decode_cursor(cursor, pk=pk))
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def unsettled_clusters(region: str, *, enqueued_before: int) -> list[Cluster]:
    """Live clusters of `region` whose latest generation is unobserved and was last enqueued before the time."""
    return list(Cluster.query(f"UNSETTLED#{region}", Cluster.gsi3sk < f"{enqueued_before:010d}", index_name="gsi3"))


def touch_unsettled(cluster: Cluster, *, at: int) -> None:
    """Note that `cluster`'s generation was enqueued again at `at` (only if it is still unsettled)."""
    cluster.mark_unsettled(at)
    try:
        cluster.update(actions=[Cluster.gsi3sk.set(cluster.gsi3sk)], condition=Cluster.gsi3pk.exists())
    except UpdateError as e:
        if not condition_failed(e):
            raise


def overdue_operations(*, now: int) -> list[Operation]:
    return list(Operation.query(OPEN_OPERATIONS, Operation.gsi2sk < f"{now:010d}", index_name="gsi2"))


def get_operation(cluster_id: str, operation_id: str) -> Operation | None:
    return get(Operation, *Operation.key(cluster_id, operation_id))


def operations_of(cluster_id: str, *, limit: int, cursor: str | None) -> tuple[list[Operation], str | None]:
    pk = f"CLUSTER#{cluster_id}"
    page = Operation.query(
        pk, Operation.sk.startswith("OP#"), scan_index_forward=False, limit=limit, consistent_read=True,
        last_evaluated_key=decode_cursor(cursor, pk=pk),
    )
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def record_audit(entry: AuditEntry) -> None:
    entry.save()


def put_metrics(samples: list[MetricsSample]) -> None:
    with MetricsSample.batch_write() as batch:
        for sample in samples:
            batch.save(sample)


def metrics_of(cluster_id: str, *, since: int, limit: int) -> list[MetricsSample]:
    return list(MetricsSample.query(
        f"METRICS#{cluster_id}", MetricsSample.sk >= f"{since:010d}", scan_index_forward=False, limit=limit,
    ))
