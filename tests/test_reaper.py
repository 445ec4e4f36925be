"""No stranded clusters: the scheduled reaper (fired through devstack.scheduler, as the local stack
does) re-enqueues generations nobody observed and fails operations past their deadline."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import boto3
import pytest

from conftest import ROOT, Account, Stack

CLUSTERS = "/v1/orgs/{org}/clusters"
REGIONS = ("nyc1", "sfo3", "fra1", "ams3", "sgp1")


def sqs(env: dict[str, str]) -> Any:
    return boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id="test", aws_secret_access_key="test")


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def fire_reaper(env: dict[str, str]) -> None:
    run("devstack.scheduler", env, "--once")


def agent_token(env: dict[str, str], region: str) -> str:
    return run("chalicelib.admin", env, "agent-token", "create", "--region", region).stdout.split()[-1]


def jobs_on(env: dict[str, str], region: str) -> list[dict[str, Any]]:
    """Every job waiting on the region's queue of `env`, consumed."""
    client, url = sqs(env), env["JOB_QUEUE_URL_TEMPLATE"].format(region=region)
    jobs: list[dict[str, Any]] = []
    while True:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          AttributeNames=["MessageGroupId"]).get("Messages", [])
        if not messages:
            return jobs
        for message in messages:
            jobs.append({**json.loads(message["Body"]), "group": message["Attributes"]["MessageGroupId"]})
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def create_cluster(stack: Stack, owner: Account, region: str = "nyc1") -> dict[str, Any]:
    response = stack.call("POST", CLUSTERS.format(org=owner.org_id), token=owner.access_token, json={
        "name": f"c-{uuid.uuid4().hex[:10]}", "region": region, "postgres_version": "17",
        "size": "db-s-1vcpu-2gb", "instances": 1, "storage_gb": 10,
    })
    assert response.status_code == 202, response.text
    return response.json()


def wait_until(epoch_second: int) -> None:
    """Sleep until the wall clock reaches `epoch_second` (the store keeps whole seconds)."""
    time.sleep(max(0.0, epoch_second - time.time()) + 0.05)


@pytest.fixture(scope="module")
def broken(stack_factory: Any, stack_env: dict[str, str]) -> Stack:
    """A stack whose job queues do not exist: every enqueue fails, as in an SQS outage."""
    template = f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/missing-{uuid.uuid4().hex[:8]}-{{region}}.fifo"
    stack = stack_factory(JOB_QUEUE_URL_TEMPLATE=template)
    client = sqs(stack.env)
    for region in REGIONS:  # the stack's bootstrap created them; take them away
        url = template.format(region=region)
        client.delete_queue(QueueUrl=url)
        client.delete_queue(QueueUrl=url.replace(".fifo", "-dlq.fifo"))
    return stack


@pytest.fixture(scope="module")
def restored(broken: Stack, stack_env: dict[str, str]) -> dict[str, str]:
    """The broken stack's deployment (same table) once its queues work again, with a 1 s staleness threshold."""
    template = f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/restored-{uuid.uuid4().hex[:8]}-{{region}}.fifo"
    env = {**broken.env, "JOB_QUEUE_URL_TEMPLATE": template, "RECONCILE_STALE_AFTER_SECONDS": "1"}
    run("devstack.bootstrap", env)
    return env


def test_failed_enqueue_still_creates_the_cluster_and_the_reaper_requeues_it(
    broken: Stack, restored: dict[str, str],
) -> None:
    owner = broken.register()
    created = create_cluster(broken, owner, "fra1")
    cluster = created["cluster"]
    assert (cluster["status"], cluster["generation"]) == ("pending", 1)
    assert created["operation"]["status"] == "pending"
    client, queue_name = sqs(broken.env), broken.env["JOB_QUEUE_URL_TEMPLATE"].format(region="fra1").rsplit("/", 1)[1]
    with pytest.raises(client.exceptions.QueueDoesNotExist):
        client.get_queue_url(QueueName=queue_name)

    observed = create_cluster(broken, owner, "fra1")["cluster"]
    report = broken.call("POST", f"/v1/agent/clusters/{observed['id']}/status", token=agent_token(broken.env, "fra1"),
                         json={"observed_generation": 1, "phase": "provisioning", "ready_instances": 0})
    assert report.status_code == 200, report.text
    assert jobs_on(restored, "fra1") == []

    wait_until(max(cluster["created_at"], observed["created_at"]) + 2)
    fire_reaper(restored)

    jobs = jobs_on(restored, "fra1")
    requeued = [job for job in jobs if job["cluster_id"] == cluster["id"]]
    assert len(requeued) == 1, jobs
    job = requeued[0]
    assert (job["v"], job["kind"], job["generation"], job["org_id"], job["region"], job["group"]) == (
        1, "reconcile", 1, owner.org_id, "fra1", cluster["id"])
    assert observed["id"] not in {job["cluster_id"] for job in jobs}, "an observed generation was re-enqueued"
    assert {"password", "db_password"}.isdisjoint(job)

    still = broken.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}", token=owner.access_token).json()
    assert (still["status"], still["generation"]) == ("pending", 1)
    operation = broken.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{cluster['id']}/operations/"
                                   f"{created['operation']['id']}", token=owner.access_token).json()
    assert (operation["status"], operation.get("error")) == ("pending", None), "within its deadline: not failed"


def test_operation_past_its_deadline_is_failed_with_a_reason(stack_factory: Any) -> None:
    short = stack_factory(OPERATION_DEADLINE_SECONDS="1")
    owner = short.register()
    stalled = create_cluster(short, owner)
    settled = create_cluster(short, owner)
    agent = agent_token(short.env, "nyc1")
    done = short.call("POST", f"/v1/agent/clusters/{settled['cluster']['id']}/status", token=agent,
                      json={"observed_generation": 1, "phase": "ready", "ready_instances": 1,
                            "endpoint": {"host": "db.example.net", "port": 5432}})
    assert done.status_code == 200 and done.json()["status"] == "running", done.text

    operation_path = (f"{CLUSTERS.format(org=owner.org_id)}/{stalled['cluster']['id']}"
                      f"/operations/{stalled['operation']['id']}")
    assert short.call("GET", operation_path, token=owner.access_token).json()["status"] == "pending"

    wait_until(stalled["cluster"]["created_at"] + 2)
    fire_reaper(short.env)

    operation = short.call("GET", operation_path, token=owner.access_token).json()
    assert operation["status"] == "failed"
    assert "not completed within 1 seconds" in operation["error"]
    cluster = short.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{stalled['cluster']['id']}",
                         token=owner.access_token).json()
    assert stalled["operation"]["id"] in cluster["status_message"] and "timed out" in cluster["status_message"]

    finished = short.call("GET", f"{CLUSTERS.format(org=owner.org_id)}/{settled['cluster']['id']}"
                                 f"/operations/{settled['operation']['id']}", token=owner.access_token).json()
    assert (finished["status"], finished.get("error")) == ("succeeded", None)
