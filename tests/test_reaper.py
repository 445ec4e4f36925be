"""No stranded clusters: the scheduled reaper (fired through devstack.scheduler, as the local stack
does) re-enqueues generations nobody observed and fails operations past their deadline."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from conftest import Stack, aws_client, cluster_path

REGIONS = ("nyc1", "sfo3", "fra1", "ams3", "sgp1")


def fire_reaper(stack: Stack, env: dict[str, str] | None = None) -> None:
    """One sweep, as the scheduler fires it, on `stack`'s clock (with `env`, another deployment of its table)."""
    stack.run("devstack.scheduler", "--once", env=env)


def jobs_on(env: dict[str, str], region: str) -> list[dict[str, Any]]:
    """Every job waiting on the region's queue of `env`, consumed."""
    client, url = aws_client(env, "sqs"), env["JOB_QUEUE_URL_TEMPLATE"].format(region=region)
    jobs: list[dict[str, Any]] = []
    while True:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          AttributeNames=["MessageGroupId"]).get("Messages", [])
        if not messages:
            return jobs
        for message in messages:
            jobs.append({**json.loads(message["Body"]), "group": message["Attributes"]["MessageGroupId"]})
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def broken(own_stack: Any, stack_env: dict[str, str]) -> Stack:
    """A stack whose job queues do not exist: every enqueue fails, as in an SQS outage."""
    template = f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/missing-{uuid.uuid4().hex[:8]}-{{region}}.fifo"
    stack = own_stack(JOB_QUEUE_URL_TEMPLATE=template)
    client = stack.sqs()
    for region in REGIONS:  # the stack's bootstrap created them; take them away
        url = stack.queue_url(region)
        client.delete_queue(QueueUrl=url)
        client.delete_queue(QueueUrl=url.replace(".fifo", "-dlq.fifo"))
    return stack


@pytest.fixture
def restored(broken: Stack, stack_env: dict[str, str]) -> dict[str, str]:
    """The broken stack's deployment (same table) once its queues work again."""
    template = f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/restored-{uuid.uuid4().hex[:8]}-{{region}}.fifo"
    env = {**broken.env, "JOB_QUEUE_URL_TEMPLATE": template}
    broken.run("devstack.bootstrap", env=env)
    return env


def test_failed_enqueue_still_creates_the_cluster_and_the_reaper_requeues_it(
    broken: Stack, restored: dict[str, str],
) -> None:
    owner = broken.register()
    created = broken.create_cluster(owner, region="fra1")
    cluster = created["cluster"]
    assert (cluster["status"], cluster["generation"]) == ("pending", 1)
    assert created["operation"]["status"] == "pending"
    client, queue_name = broken.sqs(), broken.queue_url("fra1").rsplit("/", 1)[1]
    with pytest.raises(client.exceptions.QueueDoesNotExist):
        client.get_queue_url(QueueName=queue_name)

    observed = broken.create_cluster(owner, region="fra1")["cluster"]
    broken.report(observed["id"], region="fra1", observed_generation=1, phase="provisioning", ready_instances=0)
    assert jobs_on(restored, "fra1") == []

    broken.advance_clock(4 * 60)
    fire_reaper(broken, restored)
    assert jobs_on(restored, "fra1") == [], "re-enqueued within RECONCILE_STALE_AFTER_SECONDS (5 minutes)"

    broken.advance_clock(2 * 60)
    fire_reaper(broken, restored)

    jobs = jobs_on(restored, "fra1")
    requeued = [job for job in jobs if job["cluster_id"] == cluster["id"]]
    assert len(requeued) == 1, jobs
    job = requeued[0]
    assert (job["v"], job["kind"], job["generation"], job["org_id"], job["region"], job["group"]) == (
        1, "reconcile", 1, owner.org_id, "fra1", cluster["id"])
    assert observed["id"] not in {job["cluster_id"] for job in jobs}, "an observed generation was re-enqueued"
    assert {"password", "db_password"}.isdisjoint(job)

    still = broken.get_cluster(owner, cluster["id"])
    assert (still["status"], still["generation"]) == ("pending", 1)
    operation = broken.call("GET", f"{cluster_path(owner.org_id, cluster['id'])}/operations/"
                                   f"{created['operation']['id']}", token=owner.access_token).json()
    assert (operation["status"], operation.get("error")) == ("pending", None), "within its deadline: not failed"


def test_operation_past_its_deadline_is_failed_with_a_reason(own_stack: Any) -> None:
    stack = own_stack()  # operations have an hour
    owner = stack.register()
    stalled = stack.create_cluster(owner)
    settled = stack.create_cluster(owner)
    done = stack.report(settled["cluster"]["id"], observed_generation=1, phase="ready", ready_instances=1,
                        endpoint={"host": "db.example.net", "port": 5432})
    assert done["status"] == "running", done

    operation_path = f"{cluster_path(owner.org_id, stalled['cluster']['id'])}/operations/{stalled['operation']['id']}"
    assert stack.call("GET", operation_path, token=owner.access_token).json()["status"] == "pending"

    stack.advance_clock(3600 - 5 * 60)
    fire_reaper(stack)
    stack.refresh(owner)
    assert stack.call("GET", operation_path, token=owner.access_token).json()["status"] == "pending"

    stack.advance_clock(6 * 60)
    fire_reaper(stack)
    stack.refresh(owner)
    operation = stack.call("GET", operation_path, token=owner.access_token).json()
    assert operation["status"] == "failed"
    assert "not completed within 3600 seconds" in operation["error"]
    cluster = stack.get_cluster(owner, stalled["cluster"]["id"])
    assert stalled["operation"]["id"] in cluster["status_message"] and "timed out" in cluster["status_message"]

    finished = stack.call("GET", f"{cluster_path(owner.org_id, settled['cluster']['id'])}/operations/"
                                 f"{settled['operation']['id']}", token=owner.access_token).json()
    assert (finished["status"], finished.get("error")) == ("succeeded", None)
