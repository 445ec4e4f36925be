"""DynamoDB over its capacity: a request it throttles (after the client's retries) is a 503 with Retry-After in the
documented error shape, never a 500, and loses nothing: a throttled create wrote nothing and its Idempotency-Key is
free for the retry. A proxy in front of moto answers DynamoDB's throttling errors for the calls a test picks."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import requests

from aws_proxy import Answer, aws_proxy
from conftest import Stack, cluster_body, clusters_path, new_stack

PREFIX = "DynamoDB_20120810."


class Throttling:
    """Answers the chosen DynamoDB operations as DynamoDB does when over capacity, while `on`."""

    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, target: str, body: bytes) -> Answer | None:
        operation = target.removeprefix(PREFIX)
        if operation not in self.operations:
            return None
        with self._lock:
            self.refused += 1
        if operation == "TransactWriteItems":  # the whole transaction cancelled, each item for want of capacity
            items = json.loads(body)["TransactItems"]
            return _error("TransactionCanceledException", "Transaction cancelled, please refer cancellation reasons",
                          CancellationReasons=[{"Code": "ThrottlingError", "Message": "Throughput exceeds the current "
                                                "capacity for one or more global secondary indexes."}] * len(items))
        return _error("ProvisionedThroughputExceededException",
                      "The level of configured provisioned throughput for the table was exceeded.")


def _error(code: str, message: str, **more: object) -> Answer:
    return Answer(400, json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message,
                                   **more}).encode())


@pytest.fixture(scope="module")
def throttling() -> Throttling:
    return Throttling()


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str], throttling: Throttling) -> Iterator[Stack]:
    with aws_proxy(stack_env["AWS_ENDPOINT_URL"], throttling) as proxy:
        stack = new_stack({**stack_env, "AWS_ENDPOINT_URL": proxy.url})
        yield stack
        stack.close()


@pytest.fixture
def throttle(throttling: Throttling) -> Iterator[set[str]]:
    """The DynamoDB operations to throttle in this test (none again after it)."""
    throttling.refused = 0
    yield throttling.operations
    throttling.operations.clear()


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable" and "retry" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert int(response.headers["Retry-After"]) >= 1


def test_a_throttled_read_is_a_503_to_retry(stack: Stack, throttle: set[str], throttling: Throttling) -> None:
    owner = stack.register()
    throttle.add("Query")
    refused = stack.call("GET", clusters_path(owner.org_id), token=owner.access_token)
    assert_unavailable(refused)
    assert throttling.refused > 1  # the client retried before giving up
    throttle.clear()
    assert stack.call("GET", clusters_path(owner.org_id), token=owner.access_token).status_code == 200


def test_a_throttled_sign_in_lookup_is_a_503(stack: Stack, throttle: set[str]) -> None:
    owner = stack.register()
    throttle.update({"GetItem", "BatchGetItem"})
    assert_unavailable(stack.call("GET", "/v1/auth/me", token=owner.access_token))


def test_a_throttled_create_writes_nothing_and_frees_its_idempotency_key(stack: Stack, throttle: set[str]) -> None:
    owner = stack.register()
    body, key = cluster_body(), {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    throttle.add("TransactWriteItems")
    assert_unavailable(stack.post_cluster(owner, body, key))
    throttle.clear()
    assert stack.listing(clusters_path(owner.org_id), owner.access_token) == []
    retried = stack.post_cluster(owner, body, key)
    assert retried.status_code == 202, retried.text
    assert [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == [
        retried.json()["cluster"]["id"]]

