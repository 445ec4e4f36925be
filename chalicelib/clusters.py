"""Clusters as users see them: create, read, change, scale, delete, operations, credentials, metrics."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from chalicelib import catalog, crypto, errors, jobs, lifecycle
from chalicelib.orgs import require
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, Body, Documented, ListQuery, Out, Page
from chalicelib.store import clusters as store
from chalicelib.store.orgs import Member
from chalicelib.clock import now

DATABASE = "app"
DATABASE_OWNER = "app"
MASK = "********"
MUTATION_ATTEMPTS = 8
Status = Literal["pending", "provisioning", "running", "updating", "degraded", "deleting", "deleted", "failed"]


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR block such as 203.0.113.0/24") from None


ClusterName = Annotated[str, StringConstraints(pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")]
VISIBLE_ASCII = r"^[!-~]+$"


def _visible_ascii(value: object) -> object:
    """VISIBLE_ASCII for a secret, before SecretStr hides it (pydantic cannot apply a pattern to a SecretStr)."""
    if isinstance(value, str) and not re.fullmatch(VISIBLE_ASCII, value):
        raise ValueError("must be visible ASCII characters")
    return value


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


class S3Target(Body):
    """A customer's own S3-compatible bucket."""

    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$", max_length=512)]
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!_.*'()/-]{0,256}$")] | None = None
    access_key_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=VISIBLE_ASCII)]
    secret_access_key: Annotated[SecretStr, Field(min_length=1, max_length=256), BeforeValidator(_visible_ascii),
                                 Documented({"pattern": VISIBLE_ASCII})]


class StorageTiers(Body):
    cold: S3Target | None = None
    frozen: S3Target | None = None


class AutoscalingPolicy(Body):
    # min_instances <= max_instances, stated in the document as one branch per possible minimum.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"min_instances": {"const": low}, "max_instances": {"minimum": low}}}
        for low in range(catalog.INSTANCES_MIN, catalog.INSTANCES_MAX + 1)
    ]})

    enabled: bool = True
    min_instances: Instances
    max_instances: Instances
    target_cpu_percent: Annotated[int, Field(ge=20, le=95), JSON_INTEGER] = 70
    max_storage_gb: StorageGb | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingPolicy:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        return self


class _CatalogChecked(Body):
    """Fields whose allowed values come from the catalog (the settings): their types check them on parse."""


class ClusterCreate(_CatalogChecked):
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


class ClusterPatch(_CatalogChecked):
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


class ScaleRequest(_CatalogChecked):
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


class MetricsQuery(ListQuery):
    window_seconds: int = Field(default=3600, ge=60, le=7 * 86400)


class S3TargetOut(Out):
    endpoint: str
    bucket: str
    region: str
    prefix: str | None = None
    access_key_id: str
    secret_access_key: str = MASK


class StorageTiersOut(Out):
    cold: S3TargetOut | None = None
    frozen: S3TargetOut | None = None


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


class MetricsSampleOut(Out):
    at: int
    values: dict[str, int | float]


@dataclass(frozen=True)
class Mutation:
    cluster: store.Cluster
    operation: store.Operation

    def out(self) -> MutationOut:
        return MutationOut(cluster=cluster_out(self.cluster), operation=operation_out(self.operation))


def etag(cluster: store.Cluster) -> str:
    return f'"{cluster.version}"'


def cluster_out(cluster: store.Cluster) -> ClusterOut:
    endpoint = EndpointOut(host=cluster.endpoint_host, port=cluster.endpoint_port) if cluster.endpoint_host else None
    tiers = None
    if cluster.storage_tiers:
        tiers = StorageTiersOut(**{
            tier: S3TargetOut(**{k: v for k, v in target.items() if k != "secret_access_key"})
            for tier, target in cluster.storage_tiers.items()
        })
    return ClusterOut(
        id=cluster.id, org_id=cluster.org_id, name=cluster.name, region=cluster.region,
        postgres_version=cluster.postgres_version, size=cluster.size, instances=cluster.instances,
        storage_gb=cluster.storage_gb, status=cluster.status, status_message=cluster.status_message,  # type: ignore[arg-type]
        generation=cluster.generation, observed_generation=cluster.observed_generation,
        ready_instances=cluster.ready_instances, endpoint=endpoint,
        autoscaling=AutoscalingPolicy.model_validate(cluster.autoscaling) if cluster.autoscaling else None,
        storage_tiers=tiers, ip_allowlist=list(cluster.ip_allowlist or []),
        deletion_protection=cluster.deletion_protection, created_at=cluster.created_at, updated_at=cluster.updated_at,
    )


def operation_out(operation: store.Operation) -> OperationOut:
    return OperationOut(
        id=operation.id, cluster_id=operation.cluster_id, kind=operation.kind, status=operation.status,  # type: ignore[arg-type]
        actor=operation.actor, generation=operation.generation, error=operation.error,
        created_at=operation.created_at, updated_at=operation.updated_at,
    )


def seal_tiers(settings: Settings, cluster_id: str, tiers: StorageTiers | None) -> dict[str, Any] | None:
    """The stored form of storage tiers: secret keys encrypted, bound to the cluster and tier."""
    if tiers is None:
        return None
    cipher = crypto.cipher(settings)
    sealed = {}
    for tier in ("cold", "frozen"):
        target: S3Target | None = getattr(tiers, tier)
        if target is not None:
            fields = target.model_dump(exclude={"secret_access_key"}, exclude_none=True)
            fields["secret_access_key"] = cipher.encrypt(
                target.secret_access_key.get_secret_value(), context=f"cluster:{cluster_id}:{tier}:secret_access_key"
            )
            sealed[tier] = fields
    return sealed or None


def _actor(member: Member) -> str:
    return f"user:{member.user_id}"


def create(settings: Settings, member: Member, body: ClusterCreate) -> Mutation:
    org_id = member.org_id
    at, cluster_id = now(), crypto.new_id("cls")
    cluster = store.Cluster(
        *store.Cluster.key(cluster_id), id=cluster_id, org_id=org_id, name=body.name, region=body.region,
        postgres_version=body.postgres_version, size=body.size, instances=body.instances, storage_gb=body.storage_gb,
        storage_tiers=seal_tiers(settings, cluster_id, body.storage_tiers),
        autoscaling=body.autoscaling.model_dump() if body.autoscaling else None,
        ip_allowlist=body.ip_allowlist, deletion_protection=body.deletion_protection,
        db_password=crypto.cipher(settings).encrypt(secrets.token_urlsafe(32), context=f"cluster:{cluster_id}:db_password"),
        status="pending", generation=0, observed_generation=0, ready_instances=0, open_operations={},
        version=0, created_at=at, updated_at=at,
    )
    _check_autoscaling(cluster)
    cluster.index_live()
    operation = lifecycle.begin_change(settings, cluster, kind="create", actor=_actor(member), at=at)
    store.create(cluster=cluster, operation=operation, quota=settings.org_cluster_quota)
    _enqueue(settings, cluster, at)
    return Mutation(cluster, operation)


def _enqueue(settings: Settings, cluster: store.Cluster, at: int) -> None:
    jobs.enqueue(settings, jobs.ReconcileJob(
        cluster_id=cluster.id, org_id=cluster.org_id, region=cluster.region, generation=cluster.generation, enqueued_at=at,
    ))


def load(org_id: str, cluster_id: str) -> store.Cluster:
    """The organization's live cluster; NotFound for other organizations' clusters and tombstones."""
    cluster = store.get_cluster(cluster_id)
    if cluster is None or cluster.org_id != org_id or cluster.status == "deleted":
        raise errors.NotFound("cluster not found")
    return cluster


def get(member: Member, cluster_id: str) -> store.Cluster:
    return load(member.org_id, cluster_id)


def list_clusters(member: Member, query: ClusterListQuery) -> Page[ClusterOut]:
    items, cursor = store.clusters_of_org(member.org_id, limit=query.limit, cursor=query.cursor, status=query.status)
    return Page[ClusterOut](items=[cluster_out(c) for c in items], next_cursor=cursor)


def mutate(
    settings: Settings, org_id: str, cluster_id: str, *,
    kind: str, change: Callable[[store.Cluster], str | None], if_match: str | None, actor: str,
) -> Mutation:
    """Apply `change` to the latest record as one conditional write that bumps the generation, then enqueue.

    `change` edits the cluster in place (raising a domain error to refuse) and returns the previous name
    when it renamed the cluster. Without If-Match a concurrent write is retried on the fresh record.
    """
    for _ in range(MUTATION_ATTEMPTS):
        cluster = load(org_id, cluster_id)
        if if_match is not None and if_match.strip() not in ("*", etag(cluster), f"W/{etag(cluster)}"):
            raise errors.PreconditionFailed("the cluster changed since you read it (ETag mismatch)")
        if cluster.status == "deleting":
            raise errors.Conflict("the cluster is being deleted")
        expected, at = cluster.version, now()
        renamed_from = change(cluster)
        operation = lifecycle.begin_change(settings, cluster, kind=kind, actor=actor, at=at)
        try:
            store.save(cluster, expected_version=expected, new_operations=(operation,), renamed_from=renamed_from, at=at)
        except store.VersionConflict:
            if if_match is not None:
                raise errors.PreconditionFailed("the cluster changed since you read it (ETag mismatch)") from None
            continue
        _enqueue(settings, cluster, at)
        return Mutation(cluster, operation)
    raise errors.Conflict("the cluster is being changed concurrently; retry")


def update(settings: Settings, member: Member, cluster_id: str, body: ClusterPatch, if_match: str | None) -> Mutation:
    given = body.model_fields_set
    if "deletion_protection" in given and body.deletion_protection is False:
        require(member, "clusters:delete")

    def change(cluster: store.Cluster) -> str | None:
        previous = cluster.name
        if "name" in given and body.name is not None:
            cluster.name = body.name
        if "ip_allowlist" in given:
            cluster.ip_allowlist = body.ip_allowlist or []
        if "autoscaling" in given:
            cluster.autoscaling = body.autoscaling.model_dump() if body.autoscaling else None
            _check_autoscaling(cluster)
        if "storage_tiers" in given:
            cluster.storage_tiers = seal_tiers(settings, cluster.id, body.storage_tiers)
        if "deletion_protection" in given and body.deletion_protection is not None:
            cluster.deletion_protection = body.deletion_protection
        return previous if cluster.name != previous else None

    return mutate(settings, member.org_id, cluster_id, kind="update", change=change, if_match=if_match,
                  actor=_actor(member))


def _check_autoscaling(cluster: store.Cluster) -> None:
    """Storage may never exceed what the autoscaling policy allows it to grow to."""
    policy = cluster.autoscaling
    if policy and policy.get("max_storage_gb") is not None and policy["max_storage_gb"] < cluster.storage_gb:
        raise errors.Unprocessable(
            "autoscaling.max_storage_gb is below the cluster's storage_gb",
            details=[{"field": "autoscaling.max_storage_gb", "message": "must be at least storage_gb"}],
        )


def scale(settings: Settings, member: Member, cluster_id: str, body: ScaleRequest, if_match: str | None) -> Mutation:
    def change(cluster: store.Cluster) -> None:
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
            policy = cluster.autoscaling or {}
            if policy.get("enabled") and not policy["min_instances"] <= body.instances <= policy["max_instances"]:
                raise errors.Unprocessable(
                    f"autoscaling keeps this cluster between {policy['min_instances']} and {policy['max_instances']} "
                    "instances; change the policy first",
                    details=[{"field": "instances", "message": "outside the autoscaling policy's range"}],
                )
            cluster.instances = body.instances
        _check_autoscaling(cluster)
        return None

    return mutate(settings, member.org_id, cluster_id, kind="scale", change=change, if_match=if_match,
                  actor=_actor(member))


def delete(settings: Settings, member: Member, cluster_id: str, if_match: str | None) -> Mutation:
    def change(cluster: store.Cluster) -> None:
        if cluster.deletion_protection:
            raise errors.Conflict("deletion protection is on; turn it off with PATCH first")
        return None

    return mutate(settings, member.org_id, cluster_id, kind="delete", change=change, if_match=if_match,
                  actor=_actor(member))


def list_operations(member: Member, cluster_id: str, query: ListQuery) -> Page[OperationOut]:
    load(member.org_id, cluster_id)
    items, cursor = store.operations_of(cluster_id, limit=query.limit, cursor=query.cursor)
    return Page[OperationOut](items=[operation_out(op) for op in items], next_cursor=cursor)


def get_operation(member: Member, cluster_id: str, operation_id: str) -> OperationOut:
    load(member.org_id, cluster_id)
    operation = store.get_operation(cluster_id, operation_id)
    if operation is None:
        raise errors.NotFound("operation not found")
    return operation_out(operation)


def credentials(settings: Settings, member: Member, cluster_id: str, *,
                request_id: str, source_ip: str) -> CredentialsOut:
    """The database credentials, once the agent has reported an endpoint; every read is audited."""
    cluster = load(member.org_id, cluster_id)
    if not cluster.endpoint_host or not cluster.endpoint_port:
        raise errors.Conflict("the cluster has no endpoint yet; try again when it is running")
    password = crypto.cipher(settings).decrypt(cluster.db_password, context=f"cluster:{cluster.id}:db_password")
    at = now()
    store.record_audit(store.AuditEntry(
        f"CLUSTER#{cluster.id}", f"AUDIT#{at:010d}#{crypto.new_id('aud')}", cluster_id=cluster.id,
        action="credentials.read", actor=_actor(member), request_id=request_id, source_ip=source_ip or None, at=at,
    ))
    host, port = cluster.endpoint_host, int(cluster.endpoint_port)
    return CredentialsOut(
        host=host, port=port, database=DATABASE, username=DATABASE_OWNER, password=password,
        uri=f"postgresql://{DATABASE_OWNER}:{quote(password, safe='')}@{host}:{port}/{DATABASE}",
    )


def metrics(member: Member, cluster_id: str, query: MetricsQuery) -> Page[MetricsSampleOut]:
    load(member.org_id, cluster_id)
    samples = store.metrics_of(cluster_id, since=now() - query.window_seconds, limit=query.limit)
    return Page[MetricsSampleOut](items=[MetricsSampleOut(at=s.at, values=s.values) for s in samples])
