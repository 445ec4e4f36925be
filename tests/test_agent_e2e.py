"""The whole loop, for real: API → queue → agent (local driver) → PostgreSQL servers → status and metrics back.

Only the public API is used to act; the servers are inspected as PostgreSQL lists them (postmaster.pid) and
reached with the credentials the API hands out.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Account, Stack, cluster_path, new_stack, until
from local_agent import LocalAgent, data_folder, kill_servers_under


class System:
    """A fresh API (its own table and queues) and local agents for it, each folder cleaned up afterwards."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.folders: list[Path] = []
        self.agents: list[LocalAgent] = []

    def agent(self, data_dir: Path | None = None, **overrides: str) -> LocalAgent:
        if data_dir is None:
            data_dir = data_folder()
            self.folders.append(data_dir)
        agent = LocalAgent(self.stack, data_dir, **overrides)
        self.agents.append(agent)
        return agent.start()

    def close(self) -> None:
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.stop(signal.SIGKILL)
        for folder in self.folders:
            kill_servers_under(folder)
        self.stack.close()


@pytest.fixture
def system(stack_env: dict[str, str]) -> Iterator[System]:
    system = System(new_stack(stack_env))
    yield system
    system.close()



def credentials(stack: Stack, account: Account, cluster_id: str) -> dict[str, Any]:
    response = stack.call("GET", cluster_path(account.org_id, cluster_id) + "/credentials", token=account.access_token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def operation(stack: Stack, account: Account, cluster_id: str, operation_id: str) -> dict[str, Any]:
    response = stack.call("GET", cluster_path(account.org_id, cluster_id) + f"/operations/{operation_id}",
                          token=account.access_token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def replica_conninfo(creds: dict[str, Any], port: int) -> str:
    return psycopg.conninfo.make_conninfo(host=creds["host"], port=port, dbname=creds["database"],
                                          user=creds["username"], password=creds["password"])


def test_a_user_gets_a_real_replicated_cluster_scales_it_and_deletes_it(system: System) -> None:
    stack, agent = system.stack, system.agent()
    owner = stack.register()
    created = stack.create_cluster(owner, postgres_version="18", instances=2)
    cluster_id = created["cluster"]["id"]

    running = stack.until_status(owner, cluster_id, "running", ready=2)
    assert running["observed_generation"] == running["generation"]
    assert operation(stack, owner, cluster_id, created["operation"]["id"])["status"] == "succeeded"
    creds = credentials(stack, owner, cluster_id)
    assert (running["endpoint"]["host"], running["endpoint"]["port"]) == (creds["host"], creds["port"])
    with psycopg.connect(creds["uri"], autocommit=True) as primary:
        assert primary.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        primary.execute("CREATE TABLE notes (body text)")
        primary.execute("INSERT INTO notes VALUES ('written on the primary')")
    replicas = [port for port in agent.servers(cluster_id) if port != creds["port"]]
    assert len(replicas) == 1
    with psycopg.connect(replica_conninfo(creds, replicas[0]), autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        until(lambda: replica.execute("SELECT to_regclass('notes')").fetchone() != (None,), what="the table replicated")
        assert replica.execute("SELECT body FROM notes").fetchall() == [("written on the primary",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO notes VALUES ('refused')")

    scaled = stack.call("POST", cluster_path(owner.org_id, cluster_id) + "/scale", token=owner.access_token,
                        json={"instances": 3})
    assert scaled.status_code == 202, scaled.text
    stack.until_status(owner, cluster_id, "running", ready=3)
    assert len(agent.servers(cluster_id)) == 3
    with psycopg.connect(creds["uri"], autocommit=True) as primary:
        assert primary.execute("SELECT count(*) FROM pg_stat_replication").fetchone() == (2,)
        assert primary.execute("SELECT body FROM notes").fetchall() == [("written on the primary",)]

    deleting = stack.call("DELETE", cluster_path(owner.org_id, cluster_id), token=owner.access_token)
    assert deleting.status_code == 202, deleting.text
    until(lambda: stack.find_cluster(owner, cluster_id) is None, what="the cluster to be deleted")
    assert agent.servers(cluster_id) == {}
    assert not agent.cluster_dir(cluster_id).exists()
    assert creds["password"] not in agent.log_text()


def test_metrics_of_the_real_servers_reach_the_user_and_the_agent_heartbeats(system: System) -> None:
    stack, agent = system.stack, system.agent()
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=2)["cluster"]["id"]
    stack.until_status(owner, cluster_id, "running", ready=2)
    uri = credentials(stack, owner, cluster_id)["uri"]
    extra = [psycopg.connect(uri) for _ in range(3)]
    try:
        def sample_with_connections() -> dict[str, Any] | None:
            response = stack.call("GET", cluster_path(owner.org_id, cluster_id) + "/metrics",
                                  token=owner.access_token)
            assert response.status_code == 200, response.text
            latest = response.json().get("latest")
            return latest["values"] if latest and latest["values"].get("connections", 0) >= 3 else None

        values = until(sample_with_connections, what="a metrics sample counting the open connections")
    finally:
        for connection in extra:
            connection.close()
    assert values["max_connections"] >= values["connections"]
    assert values["database_size_gb"] > 0 and values["storage_used_gb"] > 0
    assert 0 <= values["storage_used_percent"] <= 100 and 0 <= values["memory_percent"] <= 100
    assert values["replication_lag_seconds"] >= 0

    def listed() -> str | None:
        done = stack.admin("agent", "list", "--region", "nyc1")
        assert done.returncode == 0, done.stderr
        line = next((line for line in done.stdout.splitlines() if " local " in line), None)
        return line if line and line.split()[4] == "1" else None

    line = until(listed, what="agent list to show the local agent with its cluster")
    assert "ago" in line and "live" in line
    ready = agent.health("/readyz")
    assert ready.status_code == 200, ready.text
    assert agent.metric("orochi_agent_jobs_processed_total", outcome="applied") >= 1
    assert agent.metric("orochi_agent_last_resync_age_seconds") >= 0


def test_an_agent_killed_mid_provisioning_converges_when_it_starts_again(system: System) -> None:
    stack, first = system.stack, system.agent()
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=2)["cluster"]["id"]
    until(lambda: first.cluster_dir(cluster_id).exists(), what="the agent to start provisioning")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    again = system.agent(first.data_dir)
    stack.until_status(owner, cluster_id, "running", ready=2)
    assert len(again.servers(cluster_id)) == 2
    with psycopg.connect(credentials(stack, owner, cluster_id)["uri"]) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_sigterm_finishes_or_hands_back_the_work_in_flight_and_exits_0(system: System) -> None:
    stack, first = system.stack, system.agent()
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=2)["cluster"]["id"]
    until(lambda: first.cluster_dir(cluster_id).exists(), what="the agent to start provisioning")
    assert first.stop(signal.SIGTERM) == 0
    assert "drained" in first.log_text()

    system.agent(first.data_dir)
    stack.until_status(owner, cluster_id, "running", ready=2)


def test_a_job_lost_before_the_agent_saw_it_is_healed_by_the_resync(system: System) -> None:
    stack = system.stack
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=1)["cluster"]["id"]
    sqs, queue = stack.sqs(), stack.queue_url("nyc1")
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["cluster_id"] for m in received] == [cluster_id]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=received[0]["ReceiptHandle"])

    system.agent()
    stack.until_status(owner, cluster_id, "running", ready=1)


def test_duplicate_and_out_of_order_jobs_restart_nothing_and_change_nothing(system: System) -> None:
    stack, agent = system.stack, system.agent()
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=1)["cluster"]["id"]
    scaled = stack.call("POST", cluster_path(owner.org_id, cluster_id) + "/scale", token=owner.access_token,
                        json={"instances": 2})
    assert scaled.status_code == 202, scaled.text
    before = stack.until_status(owner, cluster_id, "running", ready=2)
    servers = agent.servers(cluster_id)
    done = agent.metric("orochi_agent_jobs_processed_total", outcome="applied")

    job = {"v": 1, "kind": "reconcile", "cluster_id": cluster_id, "org_id": owner.org_id, "region": "nyc1"}
    for generation, dedup in ((before["generation"], "duplicate"), (1, "stale")):
        stack.sqs().send_message(QueueUrl=stack.queue_url("nyc1"), MessageGroupId=cluster_id,
                                 MessageDeduplicationId=f"{cluster_id}:{dedup}",
                                 MessageBody=json.dumps({**job, "generation": generation, "enqueued_at": 0}))
    until(lambda: agent.metric("orochi_agent_jobs_processed_total", outcome="applied") >= done + 2,
          what="both jobs to be processed")

    assert agent.servers(cluster_id) == servers
    after = stack.get_cluster(owner, cluster_id)
    assert {k: after[k] for k in ("status", "generation", "observed_generation", "ready_instances", "instances")} == {
        "status": "running", "generation": before["generation"], "observed_generation": before["generation"],
        "ready_instances": 2, "instances": 2}


def test_a_version_the_driver_cannot_serve_fails_the_cluster_with_the_reason_and_ends_in_the_dlq(system: System) -> None:
    stack = system.stack
    system.agent()
    owner = stack.register()
    created = stack.create_cluster(owner, postgres_version="17", instances=1)
    cluster_id = created["cluster"]["id"]

    failed = stack.until_status(owner, cluster_id, "failed")
    assert "17" in failed["status_message"] and "18" in failed["status_message"]
    assert operation(stack, owner, cluster_id, created["operation"]["id"])["status"] == "failed"
    assert "17" in operation(stack, owner, cluster_id, created["operation"]["id"])["error"]

    dlq = stack.queue_url("nyc1").replace(".fifo", "-dlq.fifo")

    def dead_letter() -> list[dict[str, Any]]:
        return stack.sqs().receive_message(QueueUrl=dlq, WaitTimeSeconds=1, VisibilityTimeout=60,
                                           MessageSystemAttributeNames=["All"]).get("Messages", [])

    dead = until(dead_letter, timeout=120, what="the job in the dead-letter queue")
    assert json.loads(dead[0]["Body"])["cluster_id"] == cluster_id


def test_readiness_names_what_the_agent_cannot_reach_while_liveness_holds(system: System) -> None:
    agent = system.agent(OROCHI_API_URL="http://127.0.0.1:9")  # nothing listens there
    assert agent.health("/healthz").status_code == 200

    def names_the_api() -> str | None:
        response = agent.health("/readyz")  # "not reached yet" until the first call to the API has failed
        problem = response.json()["problems"].get("api", "") if response.status_code == 503 else ""
        return problem if "did not answer" in problem else None

    assert until(names_the_api, what="/readyz to say the API did not answer")
    assert agent.env["OROCHI_AGENT_TOKEN"].split(".")[1] not in agent.log_text()
