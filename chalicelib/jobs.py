"""The provisioning queue: one FIFO queue per region. Jobs are hints and carry no secrets."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.settings import Settings

log = logging.getLogger("orochi.jobs")
JOB_VERSION = 1


@dataclass(frozen=True)
class ReconcileJob:
    cluster_id: str
    org_id: str
    region: str
    generation: int
    enqueued_at: int

    def body(self) -> str:
        return json.dumps({
            "v": JOB_VERSION, "kind": "reconcile", "cluster_id": self.cluster_id, "org_id": self.org_id,
            "region": self.region, "generation": self.generation, "enqueued_at": self.enqueued_at,
        }, separators=(",", ":"))


@functools.cache
def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def enqueue(settings: Settings, job: ReconcileJob) -> bool:
    """Send `job` to its region's queue. Returns False (and logs) when SQS refuses: the reaper re-enqueues."""
    try:
        _sqs().send_message(
            QueueUrl=settings.job_queue_url(job.region),
            MessageBody=job.body(),
            MessageGroupId=job.cluster_id,
            MessageDeduplicationId=f"{job.cluster_id}:{job.generation}",
        )
    except (BotoCoreError, ClientError):
        log.warning("enqueue failed; the reaper will retry", exc_info=True,
                    extra={"cluster_id": job.cluster_id, "generation": job.generation})
        return False
    return True


def create_queues(settings: Settings) -> None:
    """Create each region's FIFO queue with its dead-letter queue (local stack and tests)."""
    sqs = _sqs()
    for region in settings.region_slugs:
        name = settings.job_queue_url(region).rsplit("/", 1)[1]
        dead = sqs.create_queue(QueueName=name.replace(".fifo", "-dlq.fifo"), Attributes={"FifoQueue": "true"})
        dead_arn = sqs.get_queue_attributes(QueueUrl=dead["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(QueueName=name, Attributes={
            "FifoQueue": "true",
            "VisibilityTimeout": "120",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "5"}),
        })
