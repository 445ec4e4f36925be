"""Clusters as users see them: create, read, change, scale, delete, operations, credentials, metrics."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from chalicelib import catalog, crypto, errors, lifecycle, metric_series, pages, storage_tiers
from chalicelib.autoscaling import AutoscalingPolicy, stored_policy
from chalicelib.clock import now
from chalicelib.metric_series import WindowName
from chalicelib.orgs import require
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, Body, ListQuery, Out, Page, Query
from chalicelib.storage_tiers import StorageTiers, StorageTiersOut
from chalicelib.store import cluster_records
from chalicelib.store.cluster_records import Cluster, Operation
from chalicelib.store.org_records import Member

DATABASE = "app"
DATABASE_OWNER = "app"
Status = Literal["pending", "provisioning", "running", "updating", "degraded", "deleting", "deleted", "failed"]


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR block such as 203.0.113.0/24") from None


ClusterName = Annotated[str, StringConstraints(pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")]
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([
    rf"(?:{_H}:){{7}}{_H}", rf"(?:{_H}:){{1,7}}:", rf"(?:{_H}:){{1,6}}:{_H}", rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
    rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}", rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}", rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
    rf"{_H}:(?::{_H}){{1,6}}", rf":(?:(?::{_H}){{1,7}}|:)",
])
# An IPv4 or IPv6 address or network (host bits are cleared), without embedded IPv4 or zone ids.
CIDR_PATTERN = (rf"^(?:{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?"
                rf"|(?:{_IPV6})(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$")
Cidr = Annotated[str, StringConstraints(max_length=43, pattern=CIDR_PATTERN), AfterValidator(_network)]
Instances = Annotated[int, Field(ge=catalog.INSTANCES_MIN, le=catalog.INSTANCES_MAX), JSON_INTEGER]
StorageGb = catalog.StorageGb


class ClusterCreate(Body):
    """Fields whose values come from the catalog (the settings) are checked against it by their types."""

    name: ClusterName
    region: catalog.Region
    postgres_version: catalog.PostgresVersion
    size: catalog.Size
    instances: Instances = 1
    storage_gb: StorageGb
    storage_tiers: StorageTiers | None = None
    autoscaling: AutoscalingPolicy | None = None
    ip_allowlist: Annotated[list[Cidr], Field(max_length=50)] = []
    deletion_protection: bool = False


class ClusterPatch(Body):
    """Only the fields given change; `autoscaling: null` or `storage_tiers: null` removes them."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: ClusterName | None = None
    ip_allowlist: Annotated[list[Cidr], Field(max_length=50)] | None = None
    autoscaling: AutoscalingPolicy | None = None
    storage_tiers: StorageTiers | None = None
    deletion_protection: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> ClusterPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


class ScaleRequest(Body):
    # The validator's rule, stated in the document: at least one of the three, not null.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in ("instances", "size", "storage_gb")
    ]})

    instances: Instances | None = None
    size: catalog.Size | None = None
    storage_gb: StorageGb | None = None

    @model_validator(mode="after")
    def _something(self) -> ScaleRequest:
        if self.instances is None and self.size is None and self.storage_gb is None:
            raise ValueError("give instances, size or storage_gb")
        return self


class ClusterListQuery(ListQuery):
    status: Status | None = None


class MetricsQuery(Query):
    """Which window of series to read: the last hour (the default), day or week."""

    window: WindowName = "1h"


class EndpointOut(Out):
    host: str
    port: int


class ClusterOut(Out):
    id: str
    org_id: str
    name: str
    region: str
    postgres_version: str
    size: str
    instances: int
    storage_gb: int
    status: Status
    status_message: str | None = None
    generation: int
    observed_generation: int
    ready_instances: int
    endpoint: EndpointOut | None = None
    autoscaling: AutoscalingPolicy | None = None
    storage_tiers: StorageTiersOut | None = None
    ip_allowlist: list[str]
    deletion_protection: bool
    created_at: int
    updated_at: int


class OperationOut(Out):
    id: str
    cluster_id: str
    kind: str
    status: Literal["pending", "running", "succeeded", "failed"]
    actor: str
    generation: int
    error: str | None = None
    reason: str | None = None
    created_at: int
    updated_at: int


class MutationOut(Out):
    cluster: ClusterOut
    operation: OperationOut


class CredentialsOut(Out):
    host: str
    port: int
    database: str
    username: str
    password: str
    uri: str


def mutation_out(change: lifecycle.Change) -> MutationOut:
    return MutationOut(cluster=cluster_out(change.cluster), operation=operation_out(change.operation))


def cluster_out(cluster: Cluster) -> ClusterOut:
    endpoint = None
    if cluster.endpoint_host and cluster.endpoint_port:
        endpoint = EndpointOut(host=cluster.endpoint_host, port=cluster.endpoint_port)
    return ClusterOut(
        id=cluster.id, org_id=cluster.org_id, name=cluster.name, region=cluster.region,
        postgres_version=cluster.postgres_version, size=cluster.size, instances=cluster.instances,
        storage_gb=cluster.storage_gb, status=cluster.status, status_message=cluster.status_message,  # type: ignore[arg-type]  # stored as a plain string; pydantic checks the Literal
        generation=cluster.generation, observed_generation=cluster.observed_generation,
        ready_instances=cluster.ready_instances, endpoint=endpoint,
        autoscaling=stored_policy(cluster.autoscaling) if cluster.autoscaling else None,
        storage_tiers=storage_tiers.masked(cluster.storage_tiers), ip_allowlist=list(cluster.ip_allowlist or []),
        deletion_protection=cluster.deletion_protection, created_at=cluster.created_at, updated_at=cluster.updated_at,
    )


def operation_out(operation: Operation) -> OperationOut:
    return OperationOut(
        id=operation.id, cluster_id=operation.cluster_id, kind=operation.kind, status=operation.status,  # type: ignore[arg-type]  # stored as a plain string; pydantic checks the Literal
        actor=operation.actor, generation=operation.generation, error=operation.error, reason=operation.reason,
        created_at=operation.created_at, updated_at=operation.updated_at,
    )


def _password_context(cluster_id: str) -> str:
    return f"cluster:{cluster_id}:db_password"


def database_password(settings: Settings, cluster: Cluster) -> str:
    """The cluster's database password, decrypted (for its admins' credentials and its agent)."""
    return crypto.cipher(settings).decrypt(cluster.db_password, context=_password_context(cluster.id))


def _actor(member: Member) -> str:
    return f"user:{member.user_id}"


def create(settings: Settings, member: Member, body: ClusterCreate) -> lifecycle.Change:
    at, cluster_id = now(), crypto.new_id("cls")
    cluster = cluster_records.new_cluster(
        cluster_id, org_id=member.org_id, name=body.name, region=body.region,
        postgres_version=body.postgres_version, size=body.size, instances=body.instances, storage_gb=body.storage_gb,
        storage_tiers=storage_tiers.seal(settings, cluster_id, body.storage_tiers),
        autoscaling=body.autoscaling.model_dump() if body.autoscaling else None,
        ip_allowlist=body.ip_allowlist, deletion_protection=body.deletion_protection,
        db_password=crypto.cipher(settings).encrypt(secrets.token_urlsafe(32), context=_password_context(cluster_id)),
        created_at=at,
    )
    _check_autoscaling(cluster, policy_given=True)
    return lifecycle.create(settings, cluster, actor=_actor(member))


def load(org_id: str, cluster_id: str) -> Cluster:
    """The organization's live cluster; NotFound for other organizations' clusters and tombstones."""
    cluster = cluster_records.get_cluster(cluster_id)
    if cluster is None or cluster.org_id != org_id or cluster.status == cluster_records.DELETED:
        raise errors.NotFound("cluster not found")
    return cluster


def get(member: Member, cluster_id: str) -> Cluster:
    return load(member.org_id, cluster_id)


def list_clusters(settings: Settings, member: Member, query: ClusterListQuery) -> Page[ClusterOut]:
    items, cursor = pages.listing(
        settings, query.cursor, name=f"clusters:{member.org_id}:{member.user_id}:{query.status or ''}",
        read=lambda start: cluster_records.clusters_of_org(member.org_id, limit=query.limit, start=start,
                                                           status=query.status),
    )
    return Page[ClusterOut](items=[cluster_out(c) for c in items], next_cursor=cursor)


def _change(settings: Settings, member: Member, cluster_id: str, *, kind: str, edit: Callable[[Cluster], str | None],
            if_match: str | None) -> lifecycle.Change:
    return lifecycle.change(settings, lambda: load(member.org_id, cluster_id), kind=kind, edit=edit,
                            if_match=if_match, actor=_actor(member))


def update(settings: Settings, member: Member, cluster_id: str, body: ClusterPatch, if_match: str | None) -> lifecycle.Change:
    given = body.model_fields_set
    if "deletion_protection" in given and body.deletion_protection is False:
        require(member, "clusters:delete")

    def edit(cluster: Cluster) -> str | None:
        previous = cluster.name
        if "name" in given and body.name is not None:
            cluster.name = body.name
        if "ip_allowlist" in given:
            cluster.ip_allowlist = body.ip_allowlist or []
        if "autoscaling" in given:
            cluster.autoscaling = body.autoscaling.model_dump() if body.autoscaling else None
            _check_autoscaling(cluster, policy_given=True)
        if "storage_tiers" in given:
            cluster.storage_tiers = storage_tiers.seal(settings, cluster.id, body.storage_tiers)
        if "deletion_protection" in given and body.deletion_protection is not None:
            cluster.deletion_protection = body.deletion_protection
        return previous if cluster.name != previous else None

    return _change(settings, member, cluster_id, kind="update", edit=edit, if_match=if_match)


def _check_autoscaling(cluster: Cluster, *, policy_given: bool = False) -> None:
    """While an enabled policy holds, instances stay within its range and storage never above its storage.max_gb.

    The details name the policy's field when the policy is what was given, else the cluster's.
    """
    if not cluster.autoscaling:
        return
    policy = stored_policy(cluster.autoscaling)
    if policy.enabled and not policy.min_instances <= cluster.instances <= policy.max_instances:
        bound = "min_instances" if cluster.instances < policy.min_instances else "max_instances"
        raise errors.Unprocessable(
            f"autoscaling keeps this cluster between {policy.min_instances} and {policy.max_instances} instances; "
            f"it has {cluster.instances}: scale it or change the policy",
            details=[{"field": f"autoscaling.{bound}" if policy_given else "instances",
                      "message": "outside the autoscaling policy's range"}],
        )
    max_gb = policy.storage.max_gb
    if policy.enabled and policy.storage.enabled and max_gb is not None and cluster.storage_gb > max_gb:
        raise errors.Unprocessable(
            f"autoscaling.storage.max_gb ({max_gb} GB) is below the cluster's storage_gb ({cluster.storage_gb} GB)",
            details=[{"field": "autoscaling.storage.max_gb", "message": "must be at least storage_gb"}],
        )


def scale(settings: Settings, member: Member, cluster_id: str, body: ScaleRequest, if_match: str | None) -> lifecycle.Change:
    def edit(cluster: Cluster) -> None:
        if body.storage_gb is not None:
            if body.storage_gb < cluster.storage_gb:
                raise errors.Unprocessable(
                    f"storage can only grow (now {cluster.storage_gb} GB, asked {body.storage_gb} GB)",
                    details=[{"field": "storage_gb", "message": "must not be below the current size"}],
                )
            cluster.storage_gb = body.storage_gb
        if body.size is not None:
            cluster.size = body.size
        if body.instances is not None:
            cluster.instances = body.instances
        _check_autoscaling(cluster)
        return None

    return _change(settings, member, cluster_id, kind="scale", edit=edit, if_match=if_match)


def delete(settings: Settings, member: Member, cluster_id: str, if_match: str | None) -> lifecycle.Change:
    def edit(cluster: Cluster) -> None:
        if cluster.deletion_protection:
            raise errors.Conflict("deletion protection is on; turn it off with PATCH first")
        return None

    return _change(settings, member, cluster_id, kind="delete", edit=edit, if_match=if_match)


def list_operations(settings: Settings, member: Member, cluster_id: str, query: ListQuery) -> Page[OperationOut]:
    load(member.org_id, cluster_id)
    items, cursor = pages.listing(
        settings, query.cursor, name=f"operations:{cluster_id}:{member.user_id}",
        read=lambda start: cluster_records.operations_of(cluster_id, limit=query.limit, start=start),
    )
    return Page[OperationOut](items=[operation_out(op) for op in items], next_cursor=cursor)


def get_operation(member: Member, cluster_id: str, operation_id: str) -> OperationOut:
    load(member.org_id, cluster_id)
    operation = cluster_records.get_operation(cluster_id, operation_id)
    if operation is None:
        raise errors.NotFound("operation not found")
    return operation_out(operation)


def credentials(settings: Settings, member: Member, cluster_id: str, *,
                request_id: str, source_ip: str) -> CredentialsOut:
    """The database credentials, once the agent has reported an endpoint; every read is audited."""
    cluster = load(member.org_id, cluster_id)
    if not cluster.endpoint_host or not cluster.endpoint_port:
        raise errors.Conflict("the cluster has no endpoint yet; try again when it is running")
    password = database_password(settings, cluster)
    cluster_records.record_audit(cluster_id=cluster.id, entry_id=crypto.new_id("aud"), action="credentials.read",
                                 actor=_actor(member), request_id=request_id, source_ip=source_ip or None, at=now())
    host, port = cluster.endpoint_host, int(cluster.endpoint_port)
    return CredentialsOut(
        host=host, port=port, database=DATABASE, username=DATABASE_OWNER, password=password,
        uri=f"postgresql://{DATABASE_OWNER}:{quote(password, safe='')}@{host}:{port}/{DATABASE}",
    )


def metrics(member: Member, cluster_id: str, query: MetricsQuery) -> metric_series.SeriesOut:
    return metric_series.series(load(member.org_id, cluster_id), metric_series.WINDOWS[query.window], at=now())
