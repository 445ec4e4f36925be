"""The operator's view: GET /metrics (Prometheus text, the scrape token only), its fleet figures kept without a scan,
the access log line and the EMF figures of every request, and the sweep's per-region heartbeat age."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chalicelib.settings import Settings, SettingsError
from conftest import ROOT, Stack, cluster_path

SCRAPE_TOKEN = "scrape-token-for-the-operator-view-tests"
AGES_TOKEN = "scrape-token-for-the-heartbeat-age-tests"


@pytest.fixture(scope="module")
def operator_stack(stack_factory: Any) -> Stack:
    return stack_factory(METRICS_TOKEN=SCRAPE_TOKEN)


def scrape(stack: Stack, token: str = SCRAPE_TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by name and labels."""
    response = stack.call("GET", "/metrics", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def clusters(samples: dict[Any, float], status: str) -> float:
    return samples[("orochi_clusters", (("status", status),))]


def test_metrics_answer_only_the_scrape_token(operator_stack: Stack) -> None:
    account = operator_stack.register()
    for token in (None, "wrong-token", SCRAPE_TOKEN[:-1], account.access_token, operator_stack.agent("nyc1")):
        response = operator_stack.call("GET", "/metrics", token=token)
        assert response.status_code == 401, (token, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]
    answer = operator_stack.call("GET", "/metrics", token=SCRAPE_TOKEN)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert not any(name.lower().startswith("ratelimit") for name in answer.headers), "never counted against users"


def test_metrics_do_not_exist_without_a_scrape_token(stack: Stack) -> None:
    for token in (None, "anything-at-all"):
        response = stack.call("GET", "/metrics", token=token)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_a_short_scrape_token_is_refused_at_start() -> None:
    env = {"JWT_SECRET": "j" * 40, "ENCRYPTION_KEY": "k1:" + "A" * 43 + "=",
           "JOB_QUEUE_URL_TEMPLATE": "https://sqs.example/1/orochi-jobs-{region}.fifo"}
    assert Settings.from_env(env).metrics_token is None
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        Settings.from_env({**env, "METRICS_TOKEN": "short"})


def test_fleet_counts_follow_every_status_change_and_operation(operator_stack: Stack) -> None:
    stack, owner = operator_stack, operator_stack.register()
    before = scrape(stack)
    first, second = (stack.create_cluster(owner)["cluster"] for _ in range(2))

    def moved(now: dict[Any, float], status: str) -> float:
        return clusters(now, status) - clusters(before, status)

    def ops(now: dict[Any, float], name: str) -> float:
        return now[(name, ())] - before[(name, ())]

    created = scrape(stack)
    assert moved(created, "pending") == 2 and ops(created, "orochi_operations_open") == 2

    stack.report(first["id"], observed_generation=1, phase="ready", ready_instances=1)
    stack.report(second["id"], observed_generation=1, phase="failed", ready_instances=0, message="no capacity")
    settled = scrape(stack)
    assert (moved(settled, "pending"), moved(settled, "running"), moved(settled, "failed")) == (0, 1, 1)
    assert ops(settled, "orochi_operations_open") == 0
    assert ops(settled, "orochi_operations_failed_total") == 1

    response = stack.call("DELETE", cluster_path(owner.org_id, first["id"]), token=owner.access_token)
    assert response.status_code == 202, response.text
    deleting = scrape(stack)
    assert (moved(deleting, "running"), moved(deleting, "deleting")) == (0, 1)
    assert ops(deleting, "orochi_operations_open") == 1
    stack.report(first["id"], observed_generation=2, phase="deleted", ready_instances=0)
    deleted = scrape(stack)
    assert (moved(deleted, "deleting"), moved(deleted, "failed")) == (0, 1), "a deleted cluster leaves the counts"
    assert ("orochi_clusters", (("status", "deleted"),)) not in deleted
    assert ops(deleted, "orochi_operations_open") == 0 and ops(deleted, "orochi_operations_failed_total") == 1


def test_agents_by_region_with_their_heartbeat_age(own_stack: Any) -> None:
    stack = own_stack(METRICS_TOKEN=AGES_TOKEN)  # its own clock, moved forward here
    assert ("orochi_agent_heartbeat_age_seconds", (("region", "fra1"),)) not in scrape(stack, AGES_TOKEN)
    for token in (stack.agent("fra1"), stack.agent_token("fra1").token):
        response = stack.call("POST", "/v1/agent/heartbeat", token=token, json={"agent_version": "1.0.0"})
        assert response.status_code == 200, response.text
    fresh = scrape(stack, AGES_TOKEN)
    assert fresh[("orochi_agents_live", (("region", "fra1"),))] == 2
    assert fresh[("orochi_agents_live", (("region", "sgp1"),))] == 0
    assert fresh[("orochi_agent_heartbeat_age_seconds", (("region", "fra1"),))] <= 5

    stack.advance_clock(200)
    stale = scrape(stack, AGES_TOKEN)
    assert stale[("orochi_agents_live", (("region", "fra1"),))] == 0
    assert stale[("orochi_agent_heartbeat_age_seconds", (("region", "fra1"),))] >= 200

    # The scheduled sweep (app.reap) writes the same ages as EMF, one document per region, on the API's clock.
    swept = subprocess.run(
        [sys.executable, "-c", "import sys, time, app; from chalicelib import clock; from devstack.scheduler import event; "
         "clock.use(lambda: time.time() + float(sys.argv[1])); app.reap(event('reaper'), None)", "200"],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60,
    )
    assert swept.returncode == 0, swept.stderr[-3000:]
    documents = [json.loads(line) for line in swept.stdout.splitlines() if line.startswith('{"_aws"')]
    by_region = {d["region"]: d for d in documents}
    assert set(by_region) == set(Settings.from_env(stack.env).region_slugs)
    assert by_region["fra1"]["AgentHeartbeatAge"] >= [200] and by_region["fra1"]["LiveAgents"] == [0]
    assert "AgentHeartbeatAge" not in by_region["sgp1"], "no figure: its alarm treats that as breaching"
    (directive,) = by_region["fra1"]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Orochi/ControlPlane" and directive["Dimensions"] == [["region"]]


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = []
    for line in stack.log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_each_request_logs_one_access_line_and_one_emf_document(operator_stack: Stack) -> None:
    stack = operator_stack
    owner = stack.register()
    cluster = stack.create_cluster(owner)["cluster"]
    request_id = "access-log-test-1"
    response = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "?x=1", token=owner.access_token,
                          headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    agent_request = "access-log-test-agent"
    stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=stack.agent("nyc1"),
               headers={"X-Request-ID": agent_request})

    lines = log_lines(stack)
    (access,) = [line for line in lines if line.get("message") == "request" and line.get("request_id") == request_id]
    assert access["route"] == "/v1/orgs/{org_id}/clusters/{cluster_id}" and access["method"] == "GET"
    assert access["org_id"] == owner.org_id and access["status"] == 200
    assert access["latency_ms"] > 0 and access["dynamodb_calls"] >= 1
    assert "path" not in access and cluster["id"] not in json.dumps(access)
    (agent,) = [line for line in lines if line.get("message") == "request" and line.get("request_id") == agent_request]
    assert agent["region"] == "nyc1" and "org_id" not in agent

    documents = [line for line in lines if "_aws" in line and line.get("route") == access["route"]]
    assert documents, "an EMF document per request"
    document = documents[-1]
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Orochi/ControlPlane"
    assert directive["Dimensions"] == [["route", "method", "status_class"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {"Latency": "Milliseconds", "DynamoDBCalls": "Count"}
    assert document["status_class"] == "2xx" and document["method"] == "GET"
    assert set(document) == {"_aws", "route", "method", "status_class", "Latency", "DynamoDBCalls"}
