"""The operator's view of the fleet, read without a scan, and its Prometheus text exposition (GET /metrics).

Clusters by status and open and failed operations are the store's fleet counts (`fleet_records`), kept in the
same transactions as the changes they count; agents come from each region's agent-token Query. Only a caller
with the scrape token (the setting METRICS_TOKEN) is answered; without that setting the route does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib import crypto, errors
from chalicelib.clock import now
from chalicelib.settings import Settings
from chalicelib.store import agent_records, fleet_records

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# An agent heartbeats every 30 s (OROCHI_HEARTBEAT_INTERVAL_SECONDS); six missed in a row and it is not live.
AGENT_STALE_AFTER = 180
STATUSES = ("pending", "provisioning", "running", "updating", "degraded", "deleting", "failed")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class RegionAgents:
    """A region's live agents (not revoked, heard from within AGENT_STALE_AFTER seconds) and the age of the freshest
    heartbeat of any unrevoked agent (None when none ever sent one)."""

    region: str
    live: int
    heartbeat_age: int | None


@dataclass(frozen=True)
class Fleet:
    clusters: dict[str, int]
    open_operations: int
    failed_operations: int
    agents: list[RegionAgents]


def check_scrape_token(settings: Settings, authorization: str) -> None:
    """NotFound when no scrape token is set (the route stays unknown); Unauthorized unless `authorization` is
    `Bearer <the token>`, compared in constant time."""
    if settings.metrics_token is None:
        raise errors.NotFound("not found")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not crypto.same(token.strip(), settings.metrics_token):
        raise errors.Unauthorized("the scrape token is missing or wrong")


def agents_by_region(settings: Settings) -> list[RegionAgents]:
    """One Query of the region's agent tokens per region; ages on the API's clock."""
    at, regions = now(), []
    for region in settings.region_slugs:
        seen = [t.last_seen_at for t in agent_records.tokens_of_region(region)
                if t.revoked_at is None and t.last_seen_at is not None]
        regions.append(RegionAgents(
            region=region, live=sum(1 for s in seen if at - s <= AGENT_STALE_AFTER),
            heartbeat_age=max(0, at - max(seen)) if seen else None,
        ))
    return regions


def fleet(settings: Settings) -> Fleet:
    counts = fleet_records.counts()
    return Fleet(
        clusters=fleet_records.clusters_by_status(counts),
        open_operations=counts.get(fleet_records.OPEN_OPERATIONS, 0),
        failed_operations=counts.get(fleet_records.FAILED_OPERATIONS, 0),
        agents=agents_by_region(settings),
    )


def exposition(settings: Settings) -> str:
    """The fleet in Prometheus' text format 0.0.4 (prometheus_client is imported here, off the cold start)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(fleet(settings)))
    return generate_latest(registry).decode()


class _Collector:
    def __init__(self, snapshot: Fleet) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot = self.snapshot
        clusters = GaugeMetricFamily("orochi_clusters", "Live clusters by status.", labels=["status"])
        for status in sorted({*STATUSES, *snapshot.clusters}):
            clusters.add_metric([status], snapshot.clusters.get(status, 0))
        yield clusters
        yield GaugeMetricFamily("orochi_operations_open", "Operations pending or running.",
                                value=snapshot.open_operations)
        yield CounterMetricFamily("orochi_operations_failed", "Operations that ended failed.",
                                  value=snapshot.failed_operations)
        live = GaugeMetricFamily("orochi_agents_live", f"Unrevoked agents heard from within {AGENT_STALE_AFTER} s.",
                                 labels=["region"])
        age = GaugeMetricFamily("orochi_agent_heartbeat_age_seconds",
                                "Seconds since the region's freshest heartbeat (absent: no agent ever sent one).",
                                labels=["region"])
        for region in snapshot.agents:
            live.add_metric([region.region], region.live)
            if region.heartbeat_age is not None:
                age.add_metric([region.region], region.heartbeat_age)
        yield live
        yield age
