"""The agent API over HTTP: region-scoped agent tokens from the admin command, heartbeat, resync,
desired state with secrets, status reports and metrics batches, and who may call what."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from conftest import ROOT, Account, Stack

CLUSTERS = "/v1/orgs/{org}/clusters"
RETENTION_DEFAULT = 7 * 86400


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chalicelib.admin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def create_agent_token(env: dict[str, str], region: str) -> tuple[str, str]:
    """(token id, token) from `agent-token create`: the id ends the first line, the token ends stdout."""
    done = admin(env, "agent-token", "create", "--region", region)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0].split()[-1], done.stdout.split()[-1]


def raw_item(env: dict[str, str], pk: str, sk: str) -> dict[str, Any] | None:
    dynamodb = boto3.resource("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                              aws_access_key_id="test", aws_secret_access_key="test")
    return dynamodb.Table(env["TABLE_NAME"]).get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Callable[[str], str]:
    """`agent(region)`: a live agent token of that region (one per region for the module)."""
    tokens: dict[str, str] = {}

    def token(region: str) -> str:
        if region not in tokens:
            tokens[region] = create_agent_token(stack.env, region)[1]
        return tokens[region]

    return token


def create_cluster(stack: Stack, owner: Account, region: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"c-{uuid.uuid4().hex[:10]}", "region": region, "postgres_version": "17",
            "size": "db-s-1vcpu-2gb", "instances": 1, "storage_gb": 10, **fields}
    response = stack.call("POST", CLUSTERS.format(org=owner.org_id), token=owner.access_token, json=body)
    assert response.status_code == 202, response.text
    return response.json()["cluster"]


def public_cluster(stack: Stack, owner: Account, cluster_id: str) -> dict[str, Any]:
    response = stack.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster_id}", token=owner.access_token)
    assert response.status_code == 200, response.text
    return response.json()


def resync(stack: Stack, token: str, *, limit: int) -> list[dict[str, Any]]:
    """Every page of the region's cluster list; each page holds at most `limit` items."""
    items, cursor, pages = [], None, 0
    while True:
        path = f"/v1/agent/clusters?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = stack.call("GET", path, token=token)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        pages += 1
        cursor = page.get("next_cursor")
        if not cursor:
            return items
        assert pages < 200, "the resync listing never ends"


def test_agent_token_is_printed_once_and_stored_only_as_a_hash(stack: Stack) -> None:
    token_id, token = create_agent_token(stack.env, "nyc1")
    secret = token.partition(".")[2]
    assert token_id.startswith("agt_") and token.startswith(f"{token_id}.") and len(secret) >= 32

    item = raw_item(stack.env, f"AGENT#{token_id}", "AGENT")
    assert item is not None and item["region"] == "nyc1"
    stored = repr(item)
    assert secret not in stored and token not in stored
    assert item["token_hash"] and item["token_hash"] != secret

    heartbeat = stack.call("POST", "/v1/agent/heartbeat", token=token, json={"agent_version": "1.2.3"})
    assert heartbeat.status_code == 200, heartbeat.text
    assert heartbeat.json()["region"] == "nyc1"


def test_revoked_agent_token_is_refused(stack: Stack) -> None:
    token_id, token = create_agent_token(stack.env, "sfo3")
    assert stack.call("GET", "/v1/agent/clusters", token=token).status_code == 200

    done = admin(stack.env, "agent-token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    assert token_id in done.stdout

    for method, path, body in (("GET", "/v1/agent/clusters", None),
                               ("POST", "/v1/agent/heartbeat", {"agent_version": "1.2.3"})):
        response = stack.call(method, path, token=token, json=body)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"


def test_agent_token_command_refuses_unknown_region_and_unknown_token(stack: Stack) -> None:
    done = admin(stack.env, "agent-token", "create", "--region", "mars1")
    assert done.returncode != 0
    assert "unknown region" in done.stderr and "mars1" in done.stderr
    assert "agt_" not in done.stdout

    done = admin(stack.env, "agent-token", "revoke", "agt_doesnotexist")
    assert done.returncode != 0
    assert "not found" in done.stderr


def test_heartbeat_answers_the_token_region_and_records_the_agent(stack: Stack) -> None:
    token_id, token = create_agent_token(stack.env, "ams3")
    response = stack.call("POST", "/v1/agent/heartbeat", token=token,
                          json={"agent_version": "0.9.1", "driver": "local", "clusters": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["region"] == "ams3"
    assert abs(body["server_time"] - time.time()) < 10

    item = raw_item(stack.env, f"AGENT#{token_id}", "AGENT")
    assert item is not None
    assert item["agent_version"] == "0.9.1" and int(item["last_seen_at"]) == body["server_time"]


def test_heartbeat_with_an_invalid_body_is_a_validation_error(stack: Stack, agent: Callable[[str], str]) -> None:
    response = stack.call("POST", "/v1/agent/heartbeat", token=agent("nyc1"), json={"agent_version": ""})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "agent_version"


def test_resync_lists_region_clusters_with_generations_across_pages(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    mine = [create_cluster(stack, owner, "sgp1") for _ in range(3)]
    elsewhere = create_cluster(stack, owner, "fra1")
    scaled = stack.call("POST", f"{CLUSTERS.format(org=owner.org_id)}/{mine[0]['id']}/scale",
                        token=owner.access_token, json={"instances": 2})
    assert scaled.status_code == 202, scaled.text

    listed = resync(stack, agent("sgp1"), limit=2)
    ids = [item["id"] for item in listed]
    assert len(ids) == len(set(ids)), "a cluster appeared on two pages"
    by_id = {item["id"]: item for item in listed}
    assert elsewhere["id"] not in by_id
    assert {c["id"] for c in mine} <= set(by_id)
    assert by_id[mine[0]["id"]]["generation"] == 2
    for cluster in mine[1:]:
        assert by_id[cluster["id"]] == {
            "id": cluster["id"], "org_id": owner.org_id, "generation": 1, "status": "pending"}

    assert elsewhere["id"] in {item["id"] for item in resync(stack, agent("fra1"), limit=100)}


def test_desired_state_carries_decrypted_secrets_and_the_catalog_image(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    s3_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    cold = {"endpoint": "https://s3.example.com", "bucket": "orochi-cold", "region": "us-east-1",
            "prefix": "pg/", "access_key_id": "AKIAEXAMPLE", "secret_access_key": s3_secret}
    cluster = create_cluster(stack, owner, "nyc1", postgres_version="16", instances=3, storage_gb=20,
                             storage_tiers={"cold": cold}, ip_allowlist=["203.0.113.0/24"])
    assert s3_secret not in repr(public_cluster(stack, owner, cluster["id"]))

    response = stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=agent("nyc1"))
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers.get("Cache-Control", "")
    desired = response.json()
    images = {v["version"]: v["image"] for v in stack.call("GET", "/v1/catalog").json()["postgres_versions"]}
    assert desired["image"] == images["16"]
    assert desired["storage_tiers"]["cold"] == cold
    assert desired["deleting"] is False
    assert (desired["generation"], desired["instances"], desired["storage_gb"], desired["region"]) == (1, 3, 20, "nyc1")
    assert desired["ip_allowlist"] == ["203.0.113.0/24"]
    assert isinstance(desired["password"], str) and len(desired["password"]) >= 32

    report = stack.call("POST", f"/v1/agent/clusters/{cluster['id']}/status", token=agent("nyc1"), json={
        "observed_generation": 1, "phase": "ready", "ready_instances": 3,
        "endpoint": {"host": "db.nyc1.example.net", "port": 5432},
    })
    assert report.status_code == 200, report.text
    credentials = stack.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}/credentials",
                             token=owner.access_token)
    assert credentials.status_code == 200, credentials.text
    assert credentials.json()["password"] == desired["password"]

    deleted = stack.call("DELETE", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}", token=owner.access_token)
    assert deleted.status_code == 202, deleted.text
    again = stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=agent("nyc1")).json()
    assert again["deleting"] is True and again["generation"] == 2


def test_agent_cannot_see_or_report_for_another_region(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    other = agent("fra1")

    assert stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=other).status_code == 404
    report = stack.call("POST", f"/v1/agent/clusters/{cluster['id']}/status", token=other,
                        json={"observed_generation": 1, "phase": "ready", "ready_instances": 1})
    assert report.status_code == 404, report.text
    metrics = stack.call("POST", "/v1/agent/metrics", token=other,
                         json={"samples": [{"cluster_id": cluster["id"], "at": int(time.time()) - 5,
                                            "values": {"cpu_percent": 10.0}}]})
    assert metrics.status_code == 404, metrics.text
    assert cluster["id"] not in {item["id"] for item in resync(stack, other, limit=100)}

    after = public_cluster(stack, owner, cluster["id"])
    assert (after["status"], after["observed_generation"], after["ready_instances"]) == ("pending", 0, 0)
    # The region's own agent does see it: the 404s above are about the region, not the cluster.
    assert stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=agent("nyc1")).status_code == 200


def test_unknown_cluster_is_not_found_for_the_agent(stack: Stack, agent: Callable[[str], str]) -> None:
    response = stack.call("GET", "/v1/agent/clusters/cls_doesnotexist", token=agent("nyc1"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_metrics_batch_is_stored_with_a_retention_ttl_and_shown_to_users(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    at = int(time.time())
    samples = [
        {"cluster_id": cluster["id"], "at": at - 120, "values": {"cpu_percent": 12.5, "connections": 4}},
        {"cluster_id": cluster["id"], "at": at - 60, "values": {"cpu_percent": 55.0, "storage_used_gb": 1.5}},
    ]
    response = stack.call("POST", "/v1/agent/metrics", token=agent("nyc1"), json={"samples": samples})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2}

    for sample in samples:
        item = raw_item(stack.env, f"METRICS#{cluster['id']}", f"{sample['at']:010d}")
        assert item is not None
        assert int(item["expires_ttl"]) == sample["at"] + RETENTION_DEFAULT

    shown = stack.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}/metrics", token=owner.access_token)
    assert shown.status_code == 200, shown.text
    assert shown.json()["items"] == [{"at": s["at"], "values": s["values"]} for s in reversed(samples)]


def test_metrics_batch_naming_another_region_cluster_stores_nothing(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    mine, foreign = create_cluster(stack, owner, "nyc1"), create_cluster(stack, owner, "sfo3")
    at = int(time.time()) - 30
    response = stack.call("POST", "/v1/agent/metrics", token=agent("nyc1"), json={"samples": [
        {"cluster_id": mine["id"], "at": at, "values": {"cpu_percent": 20.0}},
        {"cluster_id": foreign["id"], "at": at, "values": {"cpu_percent": 30.0}},
    ]})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["details"][0]["field"] == "samples.1.cluster_id"

    assert raw_item(stack.env, f"METRICS#{mine['id']}", f"{at:010d}") is None
    assert raw_item(stack.env, f"METRICS#{foreign['id']}", f"{at:010d}") is None
    for cluster in (mine, foreign):
        shown = stack.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}/metrics",
                           token=owner.access_token)
        assert shown.json()["items"] == []


def test_metrics_sample_outside_the_retention_window_is_refused(
    stack: Stack, owner: Account, agent: Callable[[str], str],
) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    for at in (int(time.time()) - RETENTION_DEFAULT - 60, int(time.time()) + 3600):
        response = stack.call("POST", "/v1/agent/metrics", token=agent("nyc1"), json={"samples": [
            {"cluster_id": cluster["id"], "at": at, "values": {"cpu_percent": 1.0}}]})
        assert response.status_code == 400, response.text
        assert raw_item(stack.env, f"METRICS#{cluster['id']}", f"{at:010d}") is None


def _agent_routes(cluster_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/v1/agent/heartbeat", {"agent_version": "1.0.0"}),
        ("GET", "/v1/agent/clusters", None),
        ("GET", f"/v1/agent/clusters/{cluster_id}", None),
        ("POST", f"/v1/agent/clusters/{cluster_id}/status",
         {"observed_generation": 1, "phase": "ready", "ready_instances": 1}),
        ("POST", "/v1/agent/metrics", {"samples": [{"cluster_id": cluster_id, "at": int(time.time()), "values": {}}]}),
    ]


def test_user_access_token_is_refused_on_agent_routes(stack: Stack, owner: Account) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    for method, path, body in _agent_routes(cluster["id"]):
        response = stack.call(method, path, token=owner.access_token, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    assert public_cluster(stack, owner, cluster["id"])["status"] == "pending"


def test_agent_token_is_refused_on_user_routes(stack: Stack, owner: Account, agent: Callable[[str], str]) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    clusters = CLUSTERS.format(org=owner.org_id)
    for method, path in (("GET", "/v1/auth/me"), ("GET", "/v1/orgs"), ("GET", clusters),
                         ("GET", f"{clusters}/{cluster['id']}"), ("GET", f"{clusters}/{cluster['id']}/credentials"),
                         ("DELETE", f"{clusters}/{cluster['id']}")):
        response = stack.call(method, path, token=agent("nyc1"))
        assert response.status_code == 401, (method, path, response.text)
    assert public_cluster(stack, owner, cluster["id"])["status"] == "pending"


def test_garbage_or_forged_agent_tokens_are_refused(stack: Stack, owner: Account) -> None:
    cluster = create_cluster(stack, owner, "nyc1")
    token_id, token = create_agent_token(stack.env, "nyc1")
    forged = f"{token_id}.{'A' * len(token.partition('.')[2])}"
    for bearer in ("garbage", "agt_nothing.secret", forged, token_id, f"{token_id}."):
        for method, path, body in _agent_routes(cluster["id"]):
            response = stack.call(method, path, token=bearer, json=body)
            assert response.status_code == 401, (bearer, method, path, response.text)
    response = stack.call("GET", "/v1/agent/clusters", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401
    assert stack.call("GET", "/v1/agent/clusters").status_code == 401
    assert stack.call("GET", "/v1/agent/clusters", token=token).status_code == 200
