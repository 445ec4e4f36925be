"""The agent side of the API: region-scoped tokens, heartbeat, resync, desired state, reports, metrics."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from chalicelib import autoscaler, catalog, crypto, errors, metric_series, pages, storage_tiers
from chalicelib.clock import now
from chalicelib.clusters import DATABASE, DATABASE_OWNER, database_password
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.shapes import JSON_INTEGER, MAX_INTEGER, Body, Count, ListQuery, Measure, Out, Page
from chalicelib.storage_tiers import StorageTiersOut
from chalicelib.store import agent_records, cluster_records, prefetch
from chalicelib.store.cluster_records import DELETED, Cluster
from chalicelib.store.table import ConditionFailed

MAX_CLOCK_SKEW = 300


class Heartbeat(Body):
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")]
    driver: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")] | None = None
    clusters: Count | None = None


class HeartbeatOut(Out):
    region: str
    server_time: int


class AgentClusterOut(Out):
    id: str
    org_id: str
    generation: int
    status: str


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
    storage_tiers: StorageTiersOut | None = None
    ip_allowlist: list[str]
    database: str
    owner: str
    password: str


class MetricValues(Body):
    cpu_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    memory_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    storage_used_gb: Measure | None = None
    storage_used_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    connections: Count | None = None
    max_connections: Annotated[int, Field(ge=1, le=MAX_INTEGER), JSON_INTEGER] | None = None
    database_size_gb: Measure | None = None
    replication_lag_seconds: Measure | None = None
    transactions_per_second: Measure | None = None


class MetricsSampleIn(Body):
    cluster_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    at: Count
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


def _known_region(settings: Settings, region: str) -> None:
    if region not in settings.region_slugs:
        raise errors.Invalid(f"unknown region {region!r}; one of {', '.join(settings.region_slugs)}")


def create_token(settings: Settings, region: str) -> CreatedToken:
    """A new agent token for `region`; the token is shown here once and stored only as a hash."""
    _known_region(settings, region)
    token_id, secret = crypto.new_id("agt"), crypto.new_secret()
    agent_records.put_token(token_id=token_id, region=region, token_hash=crypto.token_hash(secret), at=now())
    return CreatedToken(id=token_id, region=region, token=f"{token_id}.{secret}")


def revoke_token(token_id: str) -> None:
    try:
        agent_records.revoke_token(token_id, at=now())
    except ConditionFailed:
        raise errors.NotFound("agent token not found") from None


def list_agents(settings: Settings, region: str | None = None) -> list[AgentOut]:
    """The agents of `region`, or of every region of the settings in their order (one Query per region)."""
    if region is not None:
        _known_region(settings, region)
    return [
        AgentOut(id=t.id, region=t.region, created_at=t.created_at, revoked_at=t.revoked_at, last_seen_at=t.last_seen_at,
                 agent_version=t.agent_version, driver=t.driver, clusters=t.clusters)
        for slug in ((region,) if region is not None else settings.region_slugs)
        for t in agent_records.tokens_of_region(slug)
    ]


def authenticate(settings: Settings, bearer: str, params: dict[str, str]) -> Principal:
    """The region's agent behind a live agent token; Unauthorized for anything else (user JWTs included).

    The token is read together with the cluster the path names, if any.
    """
    token_id, _, secret = bearer.partition(".")
    if not (token_id.startswith("agt_") and secret):
        raise errors.Unauthorized("the agent token is invalid or revoked")
    prefetch.request_items(agent_token_id=token_id, cluster_id=params.get("cluster_id"))
    token = agent_records.get_token(token_id)
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
    agent_records.record_heartbeat(agent.id, region=agent.region, at=at, agent_version=body.agent_version,
                                   driver=body.driver, clusters=body.clusters)
    return HeartbeatOut(region=agent.region, server_time=at)


def list_clusters(settings: Settings, agent: Principal, query: ListQuery) -> Page[AgentClusterOut]:
    items, cursor = pages.listing(
        settings, query.cursor, name=f"agent-clusters:{agent.region}:{agent.id}",
        read=lambda start: cluster_records.clusters_of_region(agent.region, limit=query.limit, start=start),
    )
    return Page[AgentClusterOut](
        items=[AgentClusterOut(id=c.id, org_id=c.org_id, generation=c.generation, status=c.status) for c in items],
        next_cursor=cursor,
    )


def _regional(agent: Principal, cluster_id: str) -> Cluster:
    cluster = cluster_records.get_cluster(cluster_id)
    if cluster is None or cluster.region != agent.region or cluster.status == DELETED:
        raise errors.NotFound("cluster not found")
    return cluster


def desired_state(settings: Settings, agent: Principal, cluster_id: str) -> DesiredState:
    cluster = _regional(agent, cluster_id)
    size = catalog.SIZES_BY_SLUG[cluster.size]
    return DesiredState(
        id=cluster.id, org_id=cluster.org_id, name=cluster.name, region=cluster.region, generation=cluster.generation,
        deleting=cluster.status == "deleting", postgres_version=cluster.postgres_version,
        image=catalog.image_for(settings, cluster.postgres_version), size=size.slug, vcpu=size.vcpu,
        memory_gb=size.memory_gb, instances=cluster.instances, storage_gb=cluster.storage_gb,
        storage_tiers=storage_tiers.revealed(settings, cluster.id, cluster.storage_tiers),
        ip_allowlist=list(cluster.ip_allowlist or []), database=DATABASE, owner=DATABASE_OWNER,
        password=database_password(settings, cluster),
    )


def ingest_metrics(settings: Settings, agent: Principal, batch: MetricsBatch) -> MetricsAccepted:
    """Fold samples of the region's clusters into their metric rollups; a sample of any other cluster refuses the batch.

    The samples of autoscaled clusters also move their autoscaling state (see `autoscaler.observe`).
    """
    at = now()
    clusters = cluster_records.clusters_by_id([s.cluster_id for s in batch.samples])
    for index, sample in enumerate(batch.samples):
        cluster = clusters.get(sample.cluster_id)
        if cluster is None or cluster.region != agent.region or cluster.status == DELETED:
            raise errors.NotFound(f"cluster {sample.cluster_id} not found",
                                  details=[{"field": f"samples.{index}.cluster_id", "message": "not a cluster of this region"}])
        if sample.at > at + MAX_CLOCK_SKEW or sample.at < at - settings.metrics_retention:
            raise errors.Invalid("sample time out of range", details=[{
                "field": f"samples.{index}.at", "message": "must be within the retention window and not in the future"}])
    samples = [cluster_records.Sample(s.cluster_id, s.at, s.values.model_dump(exclude_none=True)) for s in batch.samples]
    metric_series.record(samples, at=at)
    autoscaler.observe(settings, clusters, samples)
    return MetricsAccepted(accepted=len(batch.samples))
