"""The autoscaling policy through the API, and the scheduled autoscaler: metrics posted as the agent of the region,
then the schedule fired (devstack.scheduler, on the API's clock) → the operation with actor `autoscaler`, its
reason, and the job."""

from __future__ import annotations

from collections.abc import Iterator

import json
from typing import Any

import pytest

from chalicelib.store import keys
from conftest import Account, Stack, aws_client, cluster_body, cluster_path, new_stack

POLICY = {"min_instances": 1, "max_instances": 3, "cooldown_seconds": 300,
          "storage": {"enabled": True, "max_gb": 100}}


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """This module's own API (its tests move its clock), with access tokens that outlive the hours they move it."""
    made = new_stack(stack_env, own_clock=True, ACCESS_TOKEN_TTL_SECONDS=str(24 * 3600))
    yield made
    made.close()


def error_fields(response: Any) -> list[str]:
    return [d["field"] for d in response.json()["error"].get("details", [])]


# --- the policy -------------------------------------------------------------------------------------------------

BAD_POLICIES = [
    ({"scale_down": {"cpu_percent": 75}}, "autoscaling.scale_down.cpu_percent"),
    ({"scale_up": {"connections_percent": 30}}, "autoscaling.scale_down.connections_percent"),
    ({"scale_up": {"for_seconds": 30}}, "autoscaling.scale_up.for_seconds"),
    ({"scale_down": {"for_seconds": 59}}, "autoscaling.scale_down.for_seconds"),
    ({"cooldown_seconds": 10}, "autoscaling.cooldown_seconds"),
    ({"min_instances": 3, "max_instances": 2}, "autoscaling.min_instances"),
    ({"min_instances": 0}, "autoscaling.min_instances"),
    ({"max_instances": 10}, "autoscaling.max_instances"),
    ({"scale_up": {"cpu_percent": 101}}, "autoscaling.scale_up.cpu_percent"),
    ({"scale_up": {"cpu_percent": "high"}}, "autoscaling.scale_up.cpu_percent"),
    ({"scale_up": {"memory_percent": 80}}, "autoscaling.scale_up.memory_percent"),
    ({"storage": {"enabled": True}}, "autoscaling.storage.max_gb"),
    ({"storage": {"max_gb": 5000}}, "autoscaling.storage.max_gb"),
    ({"storage": {"max_gb": 5}}, "autoscaling.storage.max_gb"),
    ({"storage": {"max_gb": 100, "threshold_percent": 120}}, "autoscaling.storage.threshold_percent"),
    ({"storage": {"max_gb": 100, "increment_percent": 0}}, "autoscaling.storage.increment_percent"),
    ({"target_cpu_percent": 70}, "autoscaling.target_cpu_percent"),
]


@pytest.mark.parametrize(("change", "field"), BAD_POLICIES, ids=[f for _, f in BAD_POLICIES])
def test_a_bad_policy_is_400_naming_the_field_on_create_and_on_patch(
    stack: Stack, owner: Account, change: dict[str, Any], field: str,
) -> None:
    policy = {**POLICY, **change}
    created = stack.post_cluster(owner, cluster_body(autoscaling=policy))
    assert created.status_code == 400, created.text
    assert field in error_fields(created), created.text

    cluster = stack.create_cluster(owner)["cluster"]
    patched = stack.call("PATCH", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token,
                         json={"autoscaling": policy})
    assert patched.status_code == 400, patched.text
    assert field in error_fields(patched), patched.text
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 1


def test_omitted_parts_of_the_policy_take_their_documented_defaults(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, autoscaling={"min_instances": 1, "max_instances": 2})["cluster"]
    assert cluster["autoscaling"] == {
        "enabled": True, "min_instances": 1, "max_instances": 2,
        "scale_up": {"cpu_percent": 75, "connections_percent": 80, "for_seconds": 120},
        "scale_down": {"cpu_percent": 25, "connections_percent": 30, "for_seconds": 600},
        "cooldown_seconds": 300,
        "storage": {"enabled": False, "threshold_percent": 80, "increment_percent": 25},
    }


@pytest.mark.parametrize(("policy", "field"), [
    ({"min_instances": 2, "max_instances": 3}, "autoscaling.min_instances"),
    ({"min_instances": 1, "max_instances": 3, "storage": {"max_gb": 15}}, "autoscaling.storage.max_gb"),
])
def test_a_policy_that_excludes_the_cluster_as_it_is_is_422(
    stack: Stack, owner: Account, policy: dict[str, Any], field: str,
) -> None:
    cluster = stack.create_cluster(owner, instances=1, storage_gb=20)["cluster"]
    patched = stack.call("PATCH", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token,
                         json={"autoscaling": policy})
    assert patched.status_code == 422, patched.text
    assert error_fields(patched) == [field]


# --- the scheduled autoscaler -----------------------------------------------------------------------------------


def fire_autoscaler(stack: Stack) -> None:
    """One tick of the scheduled autoscaler, as `make run`'s scheduler fires it, on the stack's clock."""
    stack.run("devstack.scheduler", "--once", "--only", "autoscaler")


def running_cluster(stack: Stack, owner: Account, **fields: Any) -> dict[str, Any]:
    cluster = stack.create_cluster(owner, **fields)["cluster"]
    return settle(stack, owner, cluster)


def settle(stack: Stack, owner: Account, cluster: dict[str, Any]) -> dict[str, Any]:
    """Report the cluster's latest generation applied and ready, as the agent would."""
    stack.report(cluster["id"], observed_generation=cluster["generation"], phase="ready",
                 ready_instances=cluster["instances"], endpoint={"host": "db.example.net", "port": 5432})
    settled = stack.get_cluster(owner, cluster["id"])
    assert settled["status"] == "running", settled
    return settled


def post_samples(stack: Stack, cluster_id: str, values: list[dict[str, float] | None], *, every: int = 30) -> None:
    """One sample per entry (None: no sample there), the last one taken now on the API's clock."""
    end = stack.now()
    samples = [{"cluster_id": cluster_id, "at": end - (len(values) - 1 - i) * every, "values": v}
               for i, v in enumerate(values) if v is not None]
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": samples})
    assert response.status_code == 200, response.text


def values(cpu: float | None = 10, connections: int | None = 10, used_gb: float = 5) -> dict[str, float]:
    raw = {"cpu_percent": cpu, "connections": connections, "max_connections": 100, "storage_used_gb": used_gb}
    return {k: v for k, v in raw.items() if v is not None}


def operations(stack: Stack, owner: Account, cluster_id: str) -> list[dict[str, Any]]:
    return stack.listing(cluster_path(owner.org_id, cluster_id) + "/operations", owner.access_token)


def jobs_of(stack: Stack, cluster_id: str) -> list[dict[str, Any]]:
    """The jobs of the cluster waiting on nyc1's queue, consumed (other clusters' jobs are consumed too)."""
    client, url, found = aws_client(stack.env, "sqs"), stack.queue_url("nyc1"), []
    while messages := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        for message in messages:
            job = json.loads(message["Body"])
            if job["cluster_id"] == cluster_id:
                found.append(job)
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_sustained_cpu_scales_up_one_instance_as_the_autoscaler_with_its_reason_then_cooldown_then_max(
    stack: Stack, owner: Account,
) -> None:
    cluster = running_cluster(stack, owner, instances=1, autoscaling=POLICY)
    jobs_of(stack, cluster["id"])
    post_samples(stack, cluster["id"], [values(cpu=91)] * 6)
    state = stack.raw_item(keys.autoscale_state(cluster["id"]))
    assert state is not None and state["gsi3pk"]["S"] == "AUTOSCALE#nyc1", "a candidate, in the index"

    fire_autoscaler(stack)

    scaled = stack.get_cluster(owner, cluster["id"])
    assert (scaled["instances"], scaled["generation"], scaled["status"]) == (2, 2, "updating")
    operation = operations(stack, owner, cluster["id"])[0]
    assert (operation["actor"], operation["kind"], operation["status"], operation["generation"]) == (
        "autoscaler", "scale", "pending", 2)
    assert operation["reason"].startswith("cpu_percent 91.0 ≥ 75 for 150 s (samples "), operation["reason"]
    assert operation["reason"].endswith(": 1 → 2 instances"), operation["reason"]
    assert [(j["kind"], j["generation"]) for j in jobs_of(stack, cluster["id"])] == [("reconcile", 2)]
    assert "gsi3pk" not in stack.raw_item(keys.autoscale_state(cluster["id"])), "out of the index once acted on"

    settle(stack, owner, scaled)
    post_samples(stack, cluster["id"], [values(cpu=95)] * 6)
    fire_autoscaler(stack)
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 2, "not inside the cooldown"

    stack.advance_clock(301)
    post_samples(stack, cluster["id"], [values(cpu=95)] * 6)
    fire_autoscaler(stack)
    third = stack.get_cluster(owner, cluster["id"])
    assert third["instances"] == 3
    settle(stack, owner, third)

    stack.advance_clock(301)
    post_samples(stack, cluster["id"], [values(cpu=99)] * 6)
    assert "gsi3pk" not in stack.raw_item(keys.autoscale_state(cluster["id"])), "at max_instances: no candidate"
    fire_autoscaler(stack)
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 3
    assert [op["actor"] for op in operations(stack, owner, cluster["id"])] == ["autoscaler", "autoscaler", f"user:{owner.user_id}"]


def test_quiet_load_scales_down_but_never_on_partial_or_missing_samples(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, instances=2, autoscaling=POLICY)
    quiet = [values(cpu=5, connections=3)] * 22
    post_samples(stack, cluster["id"], [*quiet[:10], values(cpu=None), *quiet[:11]])
    fire_autoscaler(stack)
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 2, "a sample without cpu breaks the run"

    stack.advance_clock(800)
    post_samples(stack, cluster["id"], [*quiet[:10], None, None, None, *quiet[:9]])
    fire_autoscaler(stack)
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 2, "a gap breaks the run"

    stack.advance_clock(800)
    post_samples(stack, cluster["id"], quiet)
    fire_autoscaler(stack)
    down = stack.get_cluster(owner, cluster["id"])
    assert down["instances"] == 1
    reason = operations(stack, owner, cluster["id"])[0]["reason"]
    assert reason.startswith("cpu_percent 5.0 < 25 and connections_percent 3.0 < 30 for 630 s"), reason


def test_storage_over_the_threshold_grows_by_the_increment(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, storage_gb=20, autoscaling=POLICY)
    post_samples(stack, cluster["id"], [values(cpu=50, connections=50, used_gb=17)])
    fire_autoscaler(stack)
    grown = stack.get_cluster(owner, cluster["id"])
    assert (grown["storage_gb"], grown["instances"]) == (25, 1)
    operation = operations(stack, owner, cluster["id"])[0]
    assert operation["actor"] == "autoscaler"
    assert operation["reason"].startswith("storage_used_percent 85.0 ≥ 80"), operation["reason"]
    assert operation["reason"].endswith("20 → 25 GB"), operation["reason"]
    assert [j["generation"] for j in jobs_of(stack, cluster["id"])][-1] == 2


def test_a_cluster_with_an_operation_in_progress_is_left_alone(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, instances=1, autoscaling=POLICY)["cluster"]  # pending: never applied
    post_samples(stack, cluster["id"], [values(cpu=99)] * 6)
    fire_autoscaler(stack)
    after = stack.get_cluster(owner, cluster["id"])
    assert (after["instances"], after["generation"]) == (1, 1)
    assert [op["actor"] for op in operations(stack, owner, cluster["id"])] == [f"user:{owner.user_id}"]


def test_a_user_scale_starts_the_cooldown_too(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, instances=1, autoscaling=POLICY)
    scaled = stack.call("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", token=owner.access_token,
                        json={"instances": 2})
    assert scaled.status_code == 202, scaled.text
    settle(stack, owner, scaled.json()["cluster"])
    stack.advance_clock(200)
    post_samples(stack, cluster["id"], [values(cpu=99)] * 6)
    fire_autoscaler(stack)
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 2


def test_storage_trending_to_full_within_the_cooldown_grows_before_the_threshold(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, storage_gb=20, autoscaling=POLICY)
    growing = [values(cpu=50, connections=50, used_gb=10 + i * 0.55) for i in range(11)]  # 15.5 GB: 77.5 %, 1.1 GB/min
    post_samples(stack, cluster["id"], growing)
    fire_autoscaler(stack)
    grown = stack.get_cluster(owner, cluster["id"])
    assert grown["storage_gb"] == 25
    reason = operations(stack, owner, cluster["id"])[0]["reason"]
    assert reason.startswith("storage_used_gb 15.50 of 20 growing 1.100 GB/min: full in "), reason
    assert "within the cooldown of 300 s" in reason and reason.endswith("20 → 25 GB"), reason


def test_a_candidate_whose_samples_stopped_leaves_the_index_without_a_change(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, instances=1, autoscaling=POLICY)
    post_samples(stack, cluster["id"], [values(cpu=91)] * 3)  # a run of 60 s: due when it reaches 120 s
    assert stack.raw_item(keys.autoscale_state(cluster["id"]))["gsi3pk"]["S"] == "AUTOSCALE#nyc1"
    stack.advance_clock(200)  # no sample since: the run is stale
    fire_autoscaler(stack)
    assert "gsi3pk" not in stack.raw_item(keys.autoscale_state(cluster["id"]))
    assert stack.get_cluster(owner, cluster["id"])["instances"] == 1


def test_removing_the_policy_drops_the_cluster_from_the_candidates(stack: Stack, owner: Account) -> None:
    cluster = running_cluster(stack, owner, instances=1, autoscaling=POLICY)
    post_samples(stack, cluster["id"], [values(cpu=91)] * 6)
    removed = stack.call("PATCH", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token,
                         json={"autoscaling": None})
    assert removed.status_code == 202, removed.text
    settle(stack, owner, removed.json()["cluster"])
    fire_autoscaler(stack)
    assert "gsi3pk" not in stack.raw_item(keys.autoscale_state(cluster["id"]))
    after = stack.get_cluster(owner, cluster["id"])
    assert (after["instances"], after["generation"]) == (1, 2)
