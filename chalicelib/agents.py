"""The agent side of the API: region-scoped tokens, heartbeat, resync, desired state, reports, metrics."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from chalicelib import catalog, crypto, errors, lifecycle
from chalicelib.clusters import DATABASE, DATABASE_OWNER
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, Body, ListQuery, Out, Page
from chalicelib.store import agents as store
from chalicelib.store import clusters as cluster_store
from chalicelib.clock import now
from chalicelib.store.base import read_ahead

MAX_CLOCK_SKEW = 300


class Heartbeat(Body):
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")]
    driver: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")] | None = None
    clusters: Annotated[int, Field(ge=0), JSON_INTEGER] | None = None


class HeartbeatOut(Out):
    region: str
    server_time: int


class AgentClusterOut(Out):
    id: str
    org_id: str
    generation: int
    status: str


class S3Credentials(Out):
    endpoint: str
    bucket: str
    region: str
    prefix: str | None = None
    access_key_id: str
    secret_access_key: str


class DesiredStorageTiers(Out):
    cold: S3Credentials | None = None
    frozen: S3Credentials | None = None


class DesiredState(Out):
    """Everything the agent applies for one cluster, secrets included (served over TLS to its region only)."""

    id: str
    org_id: str
    name: str
    region: str
    generation: int
    deleting: bool
    postgres_version: str
    image: str
    size: str
    vcpu: int
    memory_gb: int
    instances: int
    storage_gb: int
    storage_tiers: DesiredStorageTiers | None = None
    ip_allowlist: list[str]
    database: str
    owner: str
    password: str


class MetricValues(Body):
    cpu_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    memory_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    storage_used_gb: Annotated[float, Field(ge=0)] | None = None
    storage_used_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    connections: Annotated[int, Field(ge=0), JSON_INTEGER] | None = None
    max_connections: Annotated[int, Field(ge=1), JSON_INTEGER] | None = None
    database_size_gb: Annotated[float, Field(ge=0)] | None = None
    replication_lag_seconds: Annotated[float, Field(ge=0)] | None = None
    transactions_per_second: Annotated[float, Field(ge=0)] | None = None


class MetricsSampleIn(Body):
    cluster_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    at: Annotated[int, Field(ge=0), JSON_INTEGER]
    values: MetricValues


class MetricsBatch(Body):
    samples: Annotated[list[MetricsSampleIn], Field(min_length=1, max_length=500)]


class MetricsAccepted(Out):
    accepted: int


class CreatedToken(Out):
    id: str
    region: str
    token: str


class AgentOut(Out):
    """An agent token and what its agent said in its last heartbeat (nothing yet when it never sent one)."""

    id: str
    region: str
    created_at: int
    revoked_at: int | None = None
    last_seen_at: int | None = None
    agent_version: str | None = None
    driver: str | None = None
    clusters: int | None = None


def create_token(settings: Settings, region: str) -> CreatedToken:
    """A new agent token for `region`; the token is shown here once and stored only as a hash."""
    if region not in settings.region_slugs:
        raise errors.Invalid(f"unknown region {region!r}; one of {', '.join(settings.region_slugs)}")
    token_id, secret = crypto.new_id("agt"), crypto.new_secret()
    store.put_token(store.AgentToken(
        *store.AgentToken.key(token_id), id=token_id, region=region, token_hash=crypto.token_hash(secret), created_at=now(),
    ))
    return CreatedToken(id=token_id, region=region, token=f"{token_id}.{secret}")


def revoke_token(token_id: str) -> None:
    store.revoke_token(token_id, at=now())


def list_agents(settings: Settings, region: str | None = None) -> list[AgentOut]:
    """The agents of `region`, or of every region of the settings in their order (one Query per region)."""
    if region is not None and region not in settings.region_slugs:
        raise errors.Invalid(f"unknown region {region!r}; one of {', '.join(settings.region_slugs)}")
    return [
        AgentOut(id=t.id, region=t.region, created_at=t.created_at, revoked_at=t.revoked_at, last_seen_at=t.last_seen_at,
                 agent_version=t.agent_version, driver=t.driver, clusters=t.clusters)
        for slug in ((region,) if region is not None else settings.region_slugs)
        for t in store.tokens_of_region(slug)
    ]


def authenticate(settings: Settings, bearer: str, params: dict[str, str]) -> Principal:
    """The region's agent behind a live agent token; Unauthorized for anything else (user JWTs included).

    The token is read together with the cluster the path names, if any.
    """
    token_id, _, secret = bearer.partition(".")
    if not (token_id.startswith("agt_") and secret):
        raise errors.Unauthorized("the agent token is invalid or revoked")
    read_ahead([store.AgentToken.key(token_id),
                *([cluster_store.Cluster.key(params["cluster_id"])] if "cluster_id" in params else [])])
    token = store.get_token(token_id)
    if (
        token is None
        or token.revoked_at is not None
        or not crypto.same(token.token_hash, crypto.token_hash(secret))
        or token.region not in settings.region_slugs
    ):
        raise errors.Unauthorized("the agent token is invalid or revoked")
    return Principal(kind="agent", id=token.id, region=token.region)


def heartbeat(agent: Principal, body: Heartbeat) -> HeartbeatOut:
    at = now()
    store.record_heartbeat(agent.id, region=agent.region, at=at, agent_version=body.agent_version,
                           driver=body.driver, clusters=body.clusters)
    return HeartbeatOut(region=agent.region, server_time=at)


def list_clusters(agent: Principal, query: ListQuery) -> Page[AgentClusterOut]:
    items, cursor = cluster_store.clusters_of_region(agent.region, limit=query.limit, cursor=query.cursor)
    return Page[AgentClusterOut](
        items=[AgentClusterOut(id=c.id, org_id=c.org_id, generation=c.generation, status=c.status) for c in items],
        next_cursor=cursor,
    )


def _regional(agent: Principal, cluster_id: str) -> cluster_store.Cluster:
    cluster = cluster_store.get_cluster(cluster_id)
    if cluster is None or cluster.region != agent.region or cluster.status == "deleted":
        raise errors.NotFound("cluster not found")
    return cluster


def desired_state(settings: Settings, agent: Principal, cluster_id: str) -> DesiredState:
    cluster = _regional(agent, cluster_id)
    cipher = crypto.cipher(settings)
    tiers = None
    if cluster.storage_tiers:
        tiers = DesiredStorageTiers(**{
            tier: S3Credentials(**{**target, "secret_access_key": cipher.decrypt(
                target["secret_access_key"], context=f"cluster:{cluster.id}:{tier}:secret_access_key")})
            for tier, target in cluster.storage_tiers.items()
        })
    size = catalog.SIZES_BY_SLUG[cluster.size]
    return DesiredState(
        id=cluster.id, org_id=cluster.org_id, name=cluster.name, region=cluster.region, generation=cluster.generation,
        deleting=cluster.status == "deleting", postgres_version=cluster.postgres_version,
        image=catalog.image_for(settings, cluster.postgres_version), size=size.slug, vcpu=size.vcpu,
        memory_gb=size.memory_gb, instances=cluster.instances, storage_gb=cluster.storage_gb, storage_tiers=tiers,
        ip_allowlist=list(cluster.ip_allowlist or []), database=DATABASE, owner=DATABASE_OWNER,
        password=cipher.decrypt(cluster.db_password, context=f"cluster:{cluster.id}:db_password"),
    )


def report(settings: Settings, agent: Principal, cluster_id: str, body: lifecycle.StatusReport) -> lifecycle.ReportOut:
    return lifecycle.apply_report(settings, region=agent.region, cluster_id=cluster_id, report=body)


def ingest_metrics(settings: Settings, agent: Principal, batch: MetricsBatch) -> MetricsAccepted:
    """Store samples of the region's clusters with a TTL; a sample of any other cluster refuses the batch."""
    at = now()
    clusters = cluster_store.clusters_by_id([s.cluster_id for s in batch.samples])
    for index, sample in enumerate(batch.samples):
        cluster = clusters.get(sample.cluster_id)
        if cluster is None or cluster.region != agent.region or cluster.status == "deleted":
            raise errors.NotFound(f"cluster {sample.cluster_id} not found",
                                  details=[{"field": f"samples.{index}.cluster_id", "message": "not a cluster of this region"}])
        if sample.at > at + MAX_CLOCK_SKEW or sample.at < at - settings.metrics_retention:
            raise errors.Invalid("sample time out of range", details=[{
                "field": f"samples.{index}.at", "message": "must be within the retention window and not in the future"}])
    cluster_store.put_metrics([
        cluster_store.MetricsSample(
            *cluster_store.MetricsSample.key(s.cluster_id, s.at), cluster_id=s.cluster_id, at=s.at,
            values=s.values.model_dump(exclude_none=True), expires_ttl=s.at + settings.metrics_retention,
        )
        for s in batch.samples
    ])
    return MetricsAccepted(accepted=len(batch.samples))
