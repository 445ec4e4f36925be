"""The region's FIFO job queue (SQS): receive, extend, hand back, delete. The only importer of boto3."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:  # boto3-stubs' SQS types, a development dependency only
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestTypeDef, ChangeMessageVisibilityBatchResultTypeDef,
        DeleteMessageBatchRequestTypeDef, DeleteMessageBatchResultTypeDef, GetQueueAttributesRequestTypeDef,
        GetQueueAttributesResultTypeDef, ReceiveMessageRequestTypeDef, ReceiveMessageResultTypeDef,
    )

MAX_BATCH = 10


class QueueError(Exception):
    """SQS could not be reached or refused a call; always worth retrying later."""


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str
    receive_count: int
    received_at: float  # time.monotonic() at receipt


class Queue:
    def __init__(self, *, url: str, wait_seconds: int, visibility_timeout: int) -> None:
        self.url = url
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self._sqs: SQSClient = boto3.client("sqs", config=Config(
            retries={"mode": "standard", "max_attempts": 3},
            read_timeout=wait_seconds + 10, connect_timeout=5,
        ))

    def receive(self, limit: int) -> list[Message]:
        """Up to `limit` (≤ 10) messages, long-polling up to the configured wait; hidden for the visibility timeout."""
        answer = self._call("receive_message", QueueUrl=self.url, MaxNumberOfMessages=min(limit, MAX_BATCH),
                            WaitTimeSeconds=self.wait_seconds, VisibilityTimeout=self.visibility_timeout,
                            MessageSystemAttributeNames=["ApproximateReceiveCount"])
        at = time.monotonic()
        return [
            Message(id=m["MessageId"], receipt=m["ReceiptHandle"], body=m["Body"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")), received_at=at)
            for m in answer.get("Messages", [])
        ]

    def delete(self, messages: list[Message]) -> None:
        for chunk in _chunks(messages):
            answer = self._call("delete_message_batch", QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)])
            _raise_failed(answer, "delete")

    def extend(self, messages: list[Message], seconds: int) -> None:
        """Keep `messages` hidden for `seconds` more from now (work on them goes on)."""
        for chunk in _chunks(messages):
            answer = self._call("change_message_visibility_batch", QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds} for i, m in enumerate(chunk)])
            _raise_failed(answer, "extend")

    def release(self, messages: list[Message], *, after: float = 0) -> None:
        """Hand `messages` back: visible again after `after` seconds (rounded up), for this or another agent."""
        self.extend(messages, min(43200, int(-(-after // 1))))

    def max_receive_count(self) -> int | None:
        """The redrive policy's maxReceiveCount: how many receives before SQS moves a message to the DLQ."""
        answer = self._call("get_queue_attributes", QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
        policy = answer.get("Attributes", {}).get("RedrivePolicy")
        return int(json.loads(policy)["maxReceiveCount"]) if policy else None

    # One overload per operation called, so that each call is checked against SQS's own request and answer types.
    @overload
    def _call(self, operation: Literal["receive_message"],
              **arguments: Unpack[ReceiveMessageRequestTypeDef]) -> ReceiveMessageResultTypeDef: ...
    @overload
    def _call(self, operation: Literal["delete_message_batch"],
              **arguments: Unpack[DeleteMessageBatchRequestTypeDef]) -> DeleteMessageBatchResultTypeDef: ...
    @overload
    def _call(self, operation: Literal["change_message_visibility_batch"],
              **arguments: Unpack[ChangeMessageVisibilityBatchRequestTypeDef]
              ) -> ChangeMessageVisibilityBatchResultTypeDef: ...
    @overload
    def _call(self, operation: Literal["get_queue_attributes"],
              **arguments: Unpack[GetQueueAttributesRequestTypeDef]) -> GetQueueAttributesResultTypeDef: ...

    def _call(self, operation: str, **arguments: Any) -> Any:
        try:
            return getattr(self._sqs, operation)(**arguments)
        except (BotoCoreError, ClientError) as e:
            raise QueueError(f"SQS {operation} failed: {e}") from e


def _chunks(messages: list[Message]) -> list[list[Message]]:
    return [messages[i:i + MAX_BATCH] for i in range(0, len(messages), MAX_BATCH)]


def _raise_failed(answer: DeleteMessageBatchResultTypeDef | ChangeMessageVisibilityBatchResultTypeDef,
                  what: str) -> None:
    failed = answer.get("Failed") or []
    if failed:
        raise QueueError(f"SQS {what} refused {len(failed)} message(s): {failed[0].get('Code')}")
