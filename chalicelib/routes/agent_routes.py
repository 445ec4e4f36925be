from __future__ import annotations

from typing import Any

from chalicelib import agents, lifecycle
from chalicelib.shapes import ListQuery, Page
from chalicelib.web import Call, Reply, Router

router = Router(__name__, tag="agent")


@router.route("POST", "/v1/agent/heartbeat", auth="agent", body=agents.Heartbeat, response=agents.HeartbeatOut)
def heartbeat(call: Call[agents.Heartbeat]) -> agents.HeartbeatOut:
    """The agent is alive"""
    return agents.heartbeat(call.agent, call.body)


@router.route("GET", "/v1/agent/clusters", auth="agent", query=ListQuery, response=Page[agents.AgentClusterOut])
def list_region_clusters(call: Call[Any]) -> Page[agents.AgentClusterOut]:
    """The region's live clusters and their generations (resync)"""
    return agents.list_clusters(call.settings, call.agent, call.query)


@router.route("GET", "/v1/agent/clusters/{cluster_id}", auth="agent", response=agents.DesiredState, errors=(404,))
def desired_state(call: Call[Any]) -> Reply:
    """The desired state of one cluster of the region, secrets included"""
    return Reply(agents.desired_state(call.settings, call.agent, call.params["cluster_id"]),
                 headers={"Cache-Control": "no-store"})


@router.route("POST", "/v1/agent/clusters/{cluster_id}/status", auth="agent", body=lifecycle.StatusReport,
              response=lifecycle.ReportOut, errors=(404, 409, 422))
def report_status(call: Call[lifecycle.StatusReport]) -> lifecycle.ReportOut:
    """Report what the agent observed of one cluster"""
    return lifecycle.apply_report(call.settings, region=call.agent.region, cluster_id=call.params["cluster_id"],
                                  report=call.body)


@router.route("POST", "/v1/agent/metrics", auth="agent", body=agents.MetricsBatch, response=agents.MetricsAccepted,
              errors=(404,))
def ingest_metrics(call: Call[agents.MetricsBatch]) -> agents.MetricsAccepted:
    """A batch of metrics samples of the region's clusters"""
    return agents.ingest_metrics(call.settings, call.agent, call.body)
