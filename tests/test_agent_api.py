"""The agent API over HTTP: region-scoped agent tokens from the admin command, heartbeat, resync,
desired state with secrets, status reports and metrics batches, and who may call what."""

from __future__ import annotations

import re
import time
from typing import Any

from chalicelib.store import keys
from conftest import Account, Stack, cluster_path, clusters_path, raw_key

RETENTION_DEFAULT = 7 * 86400


def agent_list(stack: Stack, *args: str) -> dict[str, dict[str, str]]:
    """`agent list *args` parsed: each row by its token id, cells by their column header."""
    done = stack.admin("agent", "list", *args)
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    columns = re.split(r"\s{2,}", header.strip())
    rows = [dict(zip(columns, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines]
    return {row["TOKEN ID"]: row for row in rows}


def heartbeat(stack: Stack, token: str, **body: Any) -> None:
    response = stack.call("POST", "/v1/agent/heartbeat", token=token, json=body)
    assert response.status_code == 200, response.text


def test_agent_token_is_printed_once_and_stored_only_as_a_hash(stack: Stack) -> None:
    token_id, token = stack.agent_token("nyc1")
    secret = token.partition(".")[2]
    assert token_id.startswith("agt_") and token.startswith(f"{token_id}.") and len(secret) >= 32

    item = stack.raw_item(keys.agent_token(token_id))
    assert item is not None and item["region"]["S"] == "nyc1"
    stored = repr(item)
    assert secret not in stored and token not in stored
    assert item["token_hash"]["S"] and item["token_hash"]["S"] != secret

    heartbeat = stack.call("POST", "/v1/agent/heartbeat", token=token, json={"agent_version": "1.2.3"})
    assert heartbeat.status_code == 200, heartbeat.text
    assert heartbeat.json()["region"] == "nyc1"


def test_revoked_agent_token_is_refused(stack: Stack) -> None:
    token_id, token = stack.agent_token("sfo3")
    assert stack.call("GET", "/v1/agent/clusters", token=token).status_code == 200

    done = stack.admin("agent-token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    assert token_id in done.stdout

    for method, path, body in (("GET", "/v1/agent/clusters", None),
                               ("POST", "/v1/agent/heartbeat", {"agent_version": "1.2.3"})):
        response = stack.call(method, path, token=token, json=body)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"


def test_agent_token_command_refuses_unknown_region_and_unknown_token(stack: Stack) -> None:
    done = stack.admin("agent-token", "create", "--region", "mars1")
    assert done.returncode != 0
    assert "unknown region" in done.stderr and "mars1" in done.stderr
    assert "agt_" not in done.stdout

    done = stack.admin("agent-token", "revoke", "agt_doesnotexist")
    assert done.returncode != 0
    assert "not found" in done.stderr


def test_heartbeat_answers_the_token_region_and_records_the_agent(stack: Stack) -> None:
    token_id, token = stack.agent_token("ams3")
    response = stack.call("POST", "/v1/agent/heartbeat", token=token,
                          json={"agent_version": "0.9.1", "driver": "local", "clusters": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["region"] == "ams3"
    assert abs(body["server_time"] - stack.now()) < 60

    item = stack.raw_item(keys.agent_token(token_id))
    assert item is not None
    assert item["agent_version"]["S"] == "0.9.1" and int(item["last_seen_at"]["N"]) == body["server_time"]


def test_heartbeat_driver_and_cluster_count_are_kept_and_shown_by_agent_list(stack: Stack) -> None:
    token_id, token = stack.agent_token("fra1")
    heartbeat(stack, token, agent_version="2.0.1", driver="cnpg", clusters=3)

    row = agent_list(stack, "--region", "fra1")[token_id]
    assert (row["REGION"], row["VERSION"], row["DRIVER"], row["CLUSTERS"], row["STATE"]) == ("fra1", "2.0.1", "cnpg", "3", "live")
    assert re.fullmatch(r"\d+s ago", row["HEARTBEAT"]) and int(row["HEARTBEAT"][:-5]) < 30

    heartbeat(stack, token, agent_version="2.0.2")
    row = agent_list(stack, "--region", "fra1")[token_id]
    assert (row["VERSION"], row["DRIVER"], row["CLUSTERS"]) == ("2.0.2", "-", "-")


def test_heartbeat_with_an_invalid_body_is_a_validation_error(stack: Stack) -> None:
    response = stack.call("POST", "/v1/agent/heartbeat", token=stack.agent("nyc1"), json={"agent_version": ""})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "agent_version"


def test_resync_lists_region_clusters_with_generations_across_pages(stack: Stack, owner: Account) -> None:
    mine = [stack.create_cluster(owner, region="sgp1")["cluster"] for _ in range(3)]
    elsewhere = stack.create_cluster(owner, region="fra1")["cluster"]
    scaled = stack.call("POST", cluster_path(owner.org_id, mine[0]["id"]) + "/scale",
                        token=owner.access_token, json={"instances": 2})
    assert scaled.status_code == 202, scaled.text

    listed = stack.listing("/v1/agent/clusters", stack.agent("sgp1"), limit=2)
    ids = [item["id"] for item in listed]
    assert len(ids) == len(set(ids)), "a cluster appeared on two pages"
    by_id = {item["id"]: item for item in listed}
    assert elsewhere["id"] not in by_id
    assert {c["id"] for c in mine} <= set(by_id)
    assert by_id[mine[0]["id"]]["generation"] == 2
    for cluster in mine[1:]:
        assert by_id[cluster["id"]] == {
            "id": cluster["id"], "org_id": owner.org_id, "generation": 1, "status": "pending"}

    assert elsewhere["id"] in {item["id"] for item in stack.listing("/v1/agent/clusters", stack.agent("fra1"))}


def test_desired_state_carries_decrypted_secrets_and_the_catalog_image(stack: Stack, owner: Account) -> None:
    s3_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    cold = {"endpoint": "https://s3.example.com", "bucket": "orochi-cold", "region": "us-east-1",
            "prefix": "pg/", "access_key_id": "AKIAEXAMPLE", "secret_access_key": s3_secret}
    cluster = stack.create_cluster(owner, region="nyc1", postgres_version="16", instances=3, storage_gb=20,
                                   storage_tiers={"cold": cold}, ip_allowlist=["203.0.113.0/24"])["cluster"]
    assert s3_secret not in repr(stack.get_cluster(owner, cluster["id"]))

    response = stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=stack.agent("nyc1"))
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

    stack.report(cluster["id"], region="nyc1", observed_generation=1, phase="ready", ready_instances=3,
                 endpoint={"host": "db.nyc1.example.net", "port": 5432})
    credentials = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "/credentials",
                             token=owner.access_token)
    assert credentials.status_code == 200, credentials.text
    assert credentials.json()["password"] == desired["password"]

    deleted = stack.call("DELETE", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token)
    assert deleted.status_code == 202, deleted.text
    again = stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=stack.agent("nyc1")).json()
    assert again["deleting"] is True and again["generation"] == 2


def test_agent_cannot_see_or_report_for_another_region(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    other = stack.agent("fra1")

    assert stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=other).status_code == 404
    report = stack.call("POST", f"/v1/agent/clusters/{cluster['id']}/status", token=other,
                        json={"observed_generation": 1, "phase": "ready", "ready_instances": 1})
    assert report.status_code == 404, report.text
    metrics = stack.call("POST", "/v1/agent/metrics", token=other,
                         json={"samples": [{"cluster_id": cluster["id"], "at": stack.now() - 5,
                                            "values": {"cpu_percent": 10.0}}]})
    assert metrics.status_code == 404, metrics.text
    assert cluster["id"] not in {item["id"] for item in stack.listing("/v1/agent/clusters", other)}

    after = stack.get_cluster(owner, cluster["id"])
    assert (after["status"], after["observed_generation"], after["ready_instances"]) == ("pending", 0, 0)
    # The region's own agent does see it: the 404s above are about the region, not the cluster.
    assert stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=stack.agent("nyc1")).status_code == 200


def test_unknown_cluster_is_not_found_for_the_agent(stack: Stack) -> None:
    response = stack.call("GET", "/v1/agent/clusters/cls_doesnotexist", token=stack.agent("nyc1"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def rollup(stack: Stack, cluster_id: str, at: int, bucket: int = 60) -> dict[str, Any] | None:
    """The stored rollup of the cluster's `bucket`-second bucket that `at` falls in."""
    return stack.raw_item(keys.metric_rollup(cluster_id, bucket, at - at % bucket))


def test_metrics_batch_folds_into_rollups_that_expire_with_their_window_and_are_shown_to_users(
        stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now()
    samples = [
        {"cluster_id": cluster["id"], "at": at - 120, "values": {"cpu_percent": 12.5, "connections": 4}},
        {"cluster_id": cluster["id"], "at": at - 60, "values": {"cpu_percent": 55.0, "storage_used_gb": 1.5}},
    ]
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": samples})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2}

    for sample in samples:
        for bucket, window in ((60, 3600), (900, 86400), (3600, 7 * 86400)):
            item = rollup(stack, cluster["id"], sample["at"], bucket)
            assert item is not None, (sample, bucket)
            start = sample["at"] - sample["at"] % bucket
            assert int(item["expires_ttl"]["N"]) == start + window + bucket
    assert stack.raw_item(("METRICS#" + cluster["id"], f"{samples[0]['at']:010d}")) is None  # raw samples: not kept

    shown = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "/metrics", token=owner.access_token)
    assert shown.status_code == 200, shown.text
    assert shown.json()["latest"] == {"at": samples[1]["at"], "values": samples[1]["values"]}
    cpu = {p["start"]: p["cpu_percent"]["max"] for p in shown.json()["points"] if p["cpu_percent"]["max"] is not None}
    assert cpu == {s["at"] - s["at"] % 60: s["values"]["cpu_percent"] for s in samples}


def test_metrics_batch_with_connection_limit_and_database_size_is_shown_to_users(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now() - 30
    values = {"connections": 40, "max_connections": 100, "database_size_gb": 2.5}
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
        {"cluster_id": cluster["id"], "at": at, "values": values}]})
    assert response.status_code == 200, response.text

    shown = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "/metrics", token=owner.access_token)
    assert shown.status_code == 200, shown.text
    assert shown.json()["latest"] == {"at": at, "values": {**values, "connections_percent": 40.0}}
    shown_types = {name: type(value) for name, value in shown.json()["latest"]["values"].items()}
    assert shown_types == {"connections": int, "max_connections": int, "database_size_gb": float,
                           "connections_percent": float}
    assert shown.json()["max_connections"] == 100


def test_metrics_values_out_of_range_are_refused_naming_the_field(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now() - 30
    for values, field in (({"max_connections": 0}, "max_connections"), ({"max_connections": 1.5}, "max_connections"),
                          ({"database_size_gb": -0.5}, "database_size_gb")):
        response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
            {"cluster_id": cluster["id"], "at": at, "values": values}]})
        assert response.status_code == 400, (values, response.text)
        assert [d["field"] for d in response.json()["error"]["details"]] == [f"samples.0.values.{field}"]
    assert rollup(stack, cluster["id"], at) is None


def test_metrics_batch_naming_another_region_cluster_stores_nothing(stack: Stack, owner: Account) -> None:
    mine = stack.create_cluster(owner, region="nyc1")["cluster"]
    foreign = stack.create_cluster(owner, region="sfo3")["cluster"]
    at = stack.now() - 30
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
        {"cluster_id": mine["id"], "at": at, "values": {"cpu_percent": 20.0}},
        {"cluster_id": foreign["id"], "at": at, "values": {"cpu_percent": 30.0}},
    ]})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["details"][0]["field"] == "samples.1.cluster_id"

    assert rollup(stack, mine["id"], at) is None
    assert rollup(stack, foreign["id"], at) is None
    for cluster in (mine, foreign):
        shown = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "/metrics", token=owner.access_token)
        assert shown.status_code == 200 and "latest" not in shown.json(), shown.text


def test_metrics_sample_outside_the_retention_window_is_refused(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    for at in (stack.now() - RETENTION_DEFAULT - 60, stack.now() + 3600):
        response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
            {"cluster_id": cluster["id"], "at": at, "values": {"cpu_percent": 1.0}}]})
        assert response.status_code == 400, response.text
        assert rollup(stack, cluster["id"], at) is None


def test_metrics_for_a_deleted_cluster_are_refused(stack: Stack, owner: Account) -> None:
    created = stack.create_cluster(owner, region="nyc1")
    cluster_id = created["cluster"]["id"]
    deleting = stack.call("DELETE", cluster_path(owner.org_id, cluster_id), token=owner.access_token)
    assert deleting.status_code == 202, deleting.text
    stack.report(cluster_id, observed_generation=deleting.json()["cluster"]["generation"], phase="deleted", ready_instances=0)
    at = stack.now() - 10
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
        {"cluster_id": cluster_id, "at": at, "values": {"cpu_percent": 5.0}}]})
    assert response.status_code == 404, response.text
    assert rollup(stack, cluster_id, at) is None


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
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    for method, path, body in _agent_routes(cluster["id"]):
        response = stack.call(method, path, token=owner.access_token, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    assert stack.get_cluster(owner, cluster["id"])["status"] == "pending"


def test_agent_token_is_refused_on_user_routes(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    clusters = clusters_path(owner.org_id)
    for method, path in (("GET", "/v1/auth/me"), ("GET", "/v1/orgs"), ("GET", clusters),
                         ("GET", f"{clusters}/{cluster['id']}"), ("GET", f"{clusters}/{cluster['id']}/credentials"),
                         ("DELETE", f"{clusters}/{cluster['id']}")):
        response = stack.call(method, path, token=stack.agent("nyc1"))
        assert response.status_code == 401, (method, path, response.text)
    assert stack.get_cluster(owner, cluster["id"])["status"] == "pending"


def test_garbage_or_forged_agent_tokens_are_refused(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    token_id, token = stack.agent_token("nyc1")
    forged = f"{token_id}.{'A' * len(token.partition('.')[2])}"
    for bearer in ("garbage", "agt_nothing.secret", forged, token_id, f"{token_id}."):
        for method, path, body in _agent_routes(cluster["id"]):
            response = stack.call(method, path, token=bearer, json=body)
            assert response.status_code == 401, (bearer, method, path, response.text)
    response = stack.call("GET", "/v1/agent/clusters", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401
    assert stack.call("GET", "/v1/agent/clusters").status_code == 401
    assert stack.call("GET", "/v1/agent/clusters", token=token).status_code == 200


def test_agent_list_shows_every_region_with_heartbeat_ages_and_revoked_tokens(stack_factory: Any) -> None:
    regional = stack_factory(REGIONS="nyc1:New York 1,lon1:London 1")
    new_york, london, revoked = regional.agent_token("nyc1"), regional.agent_token("lon1"), regional.agent_token("lon1")
    heartbeat(regional, new_york.token, agent_version="1.4.0", driver="local", clusters=2)
    heartbeat(regional, revoked.token, agent_version="1.3.9", driver="cnpg", clusters=0)
    two_hours_ago = regional.now() - 2 * 3600 - 30
    regional.dynamodb().update_item(
        TableName=regional.env["TABLE_NAME"], Key=raw_key(keys.agent_token(revoked.id)),
        UpdateExpression="SET last_seen_at = :at", ExpressionAttributeValues={":at": {"N": str(two_hours_ago)}},
    )
    done = regional.admin("agent-token", "revoke", revoked.id)
    assert done.returncode == 0, done.stderr

    rows = agent_list(regional)
    assert set(rows) == {new_york.id, london.id, revoked.id}
    assert rows[new_york.id]["REGION"] == "nyc1" and rows[new_york.id]["STATE"] == "live"
    assert (rows[new_york.id]["DRIVER"], rows[new_york.id]["CLUSTERS"]) == ("local", "2")
    assert re.fullmatch(r"\d+s ago", rows[new_york.id]["HEARTBEAT"])
    assert rows[london.id] == {"TOKEN ID": london.id, "REGION": "lon1", "VERSION": "-", "DRIVER": "-", "CLUSTERS": "-",
                               "HEARTBEAT": "never", "STATE": "live"}
    assert (rows[revoked.id]["REGION"], rows[revoked.id]["HEARTBEAT"], rows[revoked.id]["STATE"]) == ("lon1", "2h ago", "revoked")
    assert list(rows) == [new_york.id, *sorted([london.id, revoked.id])]

    assert set(agent_list(regional, "--region", "lon1")) == {london.id, revoked.id}
    assert set(agent_list(regional, "--region", "nyc1")) == {new_york.id}
    done = regional.admin("agent", "list", "--region", "mars1")
    assert done.returncode != 0 and "unknown region" in done.stderr and "mars1" in done.stderr
