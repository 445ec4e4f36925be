"""No secret in the logs: what this module's own requests send and receive never reaches its API's log.

The same check runs over every API log of a whole run when the run ends (tests/conftest.py, `pytest_sessionfinish`);
this module exercises it on one stack even when run alone, and shows the scanner does find a secret.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SECRETS, Stack, cluster_path, leaked_secrets

S3_SECRET = "s3-secret-key-for-the-log-test-0123456789"


def test_a_full_round_of_requests_leaves_no_secret_in_the_log(stack: Stack) -> None:
    owner = stack.register(password="a password nobody should log")
    login = stack.call("POST", "/v1/auth/login", json={"email": owner.email, "password": owner.password})
    refreshed = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]})
    assert (login.status_code, refreshed.status_code) == (200, 200)
    invitation = stack.invite(owner)
    target = {"endpoint": "https://s3.example.com", "bucket": "orochi-archive", "region": "us-east-1",
              "access_key_id": "AKIAEXAMPLE", "secret_access_key": S3_SECRET}
    cluster = stack.create_cluster(owner, storage_tiers={"cold": target})["cluster"]
    stack.report(cluster["id"], observed_generation=1, phase="ready", ready_instances=1,
                 endpoint={"host": "pg.example.com", "port": 5432})
    credentials = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + "/credentials", token=owner.access_token)
    desired = stack.call("GET", f"/v1/agent/clusters/{cluster['id']}", token=stack.agent("nyc1"))
    assert (credentials.status_code, desired.status_code) == (200, 200)

    seen = {owner.password, owner.access_token, owner.refresh_token, refreshed.json()["access_token"],
            invitation["token"], S3_SECRET, credentials.json()["password"], stack.agent("nyc1")}
    assert seen <= SECRETS, "the helpers remember every secret they see"
    log = stack.log.read_text()
    assert credentials.headers["X-Request-ID"] in log, "the log has this module's requests"
    assert leaked_secrets([stack.log], SECRETS) == {}


def test_the_scanner_finds_a_secret_in_a_log(tmp_path: Path) -> None:
    token, jwt, password = "a-known-secret-0123456789", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl", "two words/+"
    clean, leaky = tmp_path / "clean.log", tmp_path / "leaky.log"
    clean.write_text(json.dumps({"message": "request", "route": "/v1/auth/login", "near": token[:-1]}) + "\n")
    leaky.write_text(json.dumps({"message": "debugging", "body": {"password": password, "token": token}}) + "\n"
                     + f"Authorization: Bearer {jwt}\n")
    secrets = {token, jwt, password, "another-secret-never-logged", "never logged either"}
    assert leaked_secrets([clean, leaky], secrets) == {"leaky.log": 3}
