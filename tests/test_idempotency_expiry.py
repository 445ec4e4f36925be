"""An Idempotency-Key whose first request died with its server: the claim expires after the function's timeout.

A Lambda killed by its timeout never releases the key it claimed. Here the API process is killed while its
create is in flight: a proxy in front of moto holds the create's transaction (the key is already claimed
by then) until the process is gone, and never lets it through. Another API process on the same table then
answers the same request 409 while the dead one could still be running, and runs it afresh, once, after
FUNCTION_TIMEOUT_SECONDS on its clock.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aws_proxy import Answer, AwsProxy, aws_proxy
from chalicelib.store import keys
from conftest import Stack, cluster_body, clusters_path, new_stack, until

HELD_TARGET = "DynamoDB_20120810.TransactWriteItems"
FUNCTION_TIMEOUT = 300  # long enough that no load makes the survivor start after the claim expired


class Holding:
    """While `holding`, DynamoDB transactions reach the proxy and never pass: they wait until `dropped`, unanswered."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.held = threading.Event()
        self.dropped = threading.Event()

    def __call__(self, target: str, body: bytes) -> Answer | None:
        if not (self.holding.is_set() and target == HELD_TARGET):
            return None
        self.held.set()
        self.dropped.wait()
        return Answer(status=0, body=None)


@pytest.fixture
def holding() -> Iterator[Holding]:
    holding = Holding()
    yield holding
    holding.dropped.set()


@pytest.fixture
def proxy(stack_env: dict[str, str], holding: Holding) -> Iterator[AwsProxy]:
    with aws_proxy(stack_env["AWS_ENDPOINT_URL"], holding) as server:
        yield server


def test_a_key_claimed_by_a_killed_server_is_free_again_after_the_function_timeout(
    stack_env: dict[str, str], proxy: AwsProxy, holding: Holding,
) -> None:
    doomed = new_stack({**stack_env, "AWS_ENDPOINT_URL": proxy.url}, FUNCTION_TIMEOUT_SECONDS=str(FUNCTION_TIMEOUT))
    survivor: Stack | None = None
    try:
        owner = doomed.register()
        body, key = cluster_body(), {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
        holding.holding.set()
        in_flight = threading.Thread(target=lambda: _ignore_errors(lambda: doomed.post_cluster(owner, body, key)),
                                     daemon=True)
        in_flight.start()
        until(holding.held.is_set, timeout=60, what="the create's transaction to reach DynamoDB (the key claimed)")
        doomed.process.kill()
        doomed.process.wait(timeout=30)
        holding.dropped.set()

        survivor = Stack({**doomed.env, "AWS_ENDPOINT_URL": stack_env["AWS_ENDPOINT_URL"]}, own_clock=True)
        assert survivor.call("GET", clusters_path(owner.org_id), token=owner.access_token).json()["items"] == []
        while_it_could_run = survivor.post_cluster(owner, body, key)
        assert while_it_could_run.status_code == 409, while_it_could_run.text
        assert "in progress" in while_it_could_run.json()["error"]["message"]

        # The dead request's claim holds until its start plus the function timeout, on the clock that wrote it.
        claim = survivor.raw_item(keys.idempotency(f"user:{owner.user_id}", key["Idempotency-Key"]))
        assert claim is not None
        held_until = int(claim["in_progress_until"]["N"])
        survivor.advance_clock(held_until - survivor.now() - 10)
        assert survivor.post_cluster(owner, body, key).status_code == 409

        survivor.advance_clock(held_until - survivor.now() + 1)
        retried = survivor.post_cluster(owner, body, key)
        assert retried.status_code == 202, retried.text
        replayed = survivor.post_cluster(owner, body, key)
        assert replayed.status_code == 202 and replayed.headers.get("Idempotent-Replayed") == "true"
        assert replayed.json()["cluster"]["id"] == retried.json()["cluster"]["id"]
        names = [c["name"] for c in survivor.listing(clusters_path(owner.org_id), owner.access_token)]
        assert names == [body["name"]]
    finally:
        doomed.close()
        if survivor is not None:
            survivor.close()


def _ignore_errors(send: Any) -> None:
    try:
        send()
    except Exception:  # noqa: BLE001 - the server is killed under this request on purpose
        pass
