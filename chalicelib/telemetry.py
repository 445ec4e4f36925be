"""Figures for CloudWatch as embedded metric format (EMF) log lines, written with Powertools' Metrics.

Per request (from `web.envelope`): `Latency` (ms) and `DynamoDBCalls` (count), with the dimensions `route` (the
declared path), `method` and `status_class` (2xx…5xx). Per minute (from the scheduled sweep): `AgentHeartbeatAge`
(s) and `LiveAgents` per `region`. Each call flushes its own EMF document; nothing else (no body, header, id or
secret) goes into one. Powertools is imported on first use, not with the app.
"""

from __future__ import annotations

from chalicelib import fleet
from chalicelib.settings import Settings

NAMESPACE = "Orochi/ControlPlane"


def request(*, route: str, method: str, status: int, latency_ms: float, dynamodb_calls: int) -> None:
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    metrics = EphemeralMetrics(namespace=NAMESPACE)
    metrics.add_dimension(name="route", value=route)
    metrics.add_dimension(name="method", value=method)
    metrics.add_dimension(name="status_class", value=f"{status // 100}xx")
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=latency_ms)
    metrics.add_metric(name="DynamoDBCalls", unit=MetricUnit.Count, value=dynamodb_calls)
    metrics.flush_metrics()


def agent_heartbeats(settings: Settings) -> list[fleet.RegionAgents]:
    """Each region's heartbeat age and live agents; a region no agent ever heartbeated in gets no age (its alarm
    treats missing data as breaching)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    regions = fleet.agents_by_region(settings)
    for region in regions:
        metrics = EphemeralMetrics(namespace=NAMESPACE)
        metrics.add_dimension(name="region", value=region.region)
        metrics.add_metric(name="LiveAgents", unit=MetricUnit.Count, value=region.live)
        if region.heartbeat_age is not None:
            metrics.add_metric(name="AgentHeartbeatAge", unit=MetricUnit.Seconds, value=region.heartbeat_age)
        metrics.flush_metrics()
    return regions
