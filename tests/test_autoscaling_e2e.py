"""The autoscaler end to end, for real: the local agent's metrics of real PostgreSQL servers → the scheduled
autoscaler → a job → the agent applies the change → `running` with it.

Time is moved on the API's clock (`advance_clock`); the agent stamps its samples on the API's clock (from its
heartbeats), so the samples cover the policy's window without the test waiting for it. Storage is counted at
OROCHI_LOCAL_STORAGE_BYTES_PER_GB = 1 MiB: one GB of `storage_gb` is one MiB on the local disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Account, Stack, cluster_path, new_stack, until
from test_agent_e2e import System, credentials

MIB = 2**20


@pytest.fixture
def system(stack_env: dict[str, str]) -> Iterator[System]:
    system = System(new_stack(stack_env, own_clock=True, ACCESS_TOKEN_TTL_SECONDS="7200"))
    yield system
    system.close()


def fire_autoscaler(stack: Stack) -> None:
    """One tick of the scheduled autoscaler, as `make run`'s scheduler fires it, on the stack's clock."""
    stack.run("devstack.scheduler", "--once", "--only", "autoscaler")


def newest_sample(stack: Stack, owner: Account, cluster_id: str) -> dict[str, Any] | None:
    """The newest sample of the last hour (`{at, values}`), as the metrics series show it."""
    response = stack.call("GET", cluster_path(owner.org_id, cluster_id) + "/metrics", token=owner.access_token)
    assert response.status_code == 200, response.text
    latest = response.json().get("latest")
    return dict(latest) if latest else None


def sample_after(stack: Stack, owner: Account, cluster_id: str, at: int) -> dict[str, Any]:
    """The newest sample once one taken after `at` (on the API's clock) has arrived."""
    def arrived() -> dict[str, Any] | None:
        sample = newest_sample(stack, owner, cluster_id)
        return sample if sample is not None and sample["at"] > at else None

    return until(arrived, timeout=60, what=f"a metrics sample of {cluster_id} taken after {at}")


def autoscaler_operation(stack: Stack, owner: Account, cluster_id: str) -> dict[str, Any]:
    response = stack.call("GET", cluster_path(owner.org_id, cluster_id) + "/operations", token=owner.access_token)
    assert response.status_code == 200, response.text
    operation = response.json()["items"][0]
    assert operation["actor"] == "autoscaler", operation
    return dict(operation)


def test_connections_beyond_the_threshold_add_a_replica_that_the_agent_brings_up(system: System) -> None:
    stack, agent = system.stack, system.agent()
    owner = stack.register()
    policy = {"min_instances": 1, "max_instances": 2, "cooldown_seconds": 60,
              "scale_up": {"cpu_percent": 95, "connections_percent": 10, "for_seconds": 60},
              "scale_down": {"cpu_percent": 5, "connections_percent": 5, "for_seconds": 600}}
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=1, autoscaling=policy)["cluster"]["id"]
    stack.until_status(owner, cluster_id, "running", ready=1)
    uri = credentials(stack, owner, cluster_id)["uri"]

    opened = [psycopg.connect(uri) for _ in range(15)]  # 15 of max_connections 100 (db-s-1vcpu-2gb)
    try:
        def busy() -> dict[str, Any] | None:
            sample = newest_sample(stack, owner, cluster_id)
            return sample if sample is not None and sample["values"].get("connections", 0) >= 15 else None

        first = until(busy, what="a sample counting the open connections")
        fire_autoscaler(stack)
        assert stack.get_cluster(owner, cluster_id)["instances"] == 1, "not before the window is covered"

        stack.advance_clock(65)
        later = sample_after(stack, owner, cluster_id, first["at"] + 60)
        assert later["values"]["connections"] >= 15
        fire_autoscaler(stack)

        scaled = stack.get_cluster(owner, cluster_id)
        assert scaled["instances"] == 2, scaled
        operation = autoscaler_operation(stack, owner, cluster_id)
        assert operation["reason"].startswith("connections_percent "), operation
        assert "≥ 10 for " in operation["reason"] and operation["reason"].endswith("1 → 2 instances"), operation
        stack.until_status(owner, cluster_id, "running", ready=2)
        assert len(agent.servers(cluster_id)) == 2
    finally:
        for connection in opened:
            connection.close()


def test_filling_the_database_past_the_threshold_grows_storage(system: System) -> None:
    stack = system.stack
    system.agent(OROCHI_LOCAL_STORAGE_BYTES_PER_GB=str(MIB))
    owner = stack.register()
    policy = {"min_instances": 1, "max_instances": 1, "cooldown_seconds": 60,
              "storage": {"enabled": True, "threshold_percent": 80, "increment_percent": 25, "max_gb": 1000}}
    cluster_id = stack.create_cluster(owner, postgres_version="18", instances=1, storage_gb=200,
                                      autoscaling=policy)["cluster"]["id"]
    stack.until_status(owner, cluster_id, "running", ready=1)
    sample = sample_after(stack, owner, cluster_id, 0)
    assert sample["values"]["storage_used_percent"] < 80, sample

    with psycopg.connect(credentials(stack, owner, cluster_id)["uri"], autocommit=True) as connection:
        connection.execute("CREATE TABLE fill (body text)")
        for _ in range(60):
            if sample["values"]["storage_used_percent"] >= 80:
                break
            # ~10 MB of rows just under the TOAST threshold (stored uncompressed), and as much WAL
            connection.execute("INSERT INTO fill SELECT repeat(md5(g::text), 60) FROM generate_series(1, 5000) g")
            sample = sample_after(stack, owner, cluster_id, sample["at"])
        else:
            raise AssertionError(f"storage never passed 80 %: {sample}")

    fire_autoscaler(stack)
    grown = stack.get_cluster(owner, cluster_id)
    assert grown["storage_gb"] == 250, grown
    operation = autoscaler_operation(stack, owner, cluster_id)
    assert operation["reason"].startswith("storage_used_percent ") and operation["reason"].endswith("200 → 250 GB")
    stack.until_status(owner, cluster_id, "running", ready=1)

    def counted_against_the_new_size() -> dict[str, Any] | None:
        newest = newest_sample(stack, owner, cluster_id)
        used = newest["values"] if newest else {}
        return newest if used and used["storage_used_percent"] < sample["values"]["storage_used_percent"] else None

    until(counted_against_the_new_size, what="samples counting storage against 250 GB")
