"""An Idempotency-Key whose first request died with its server: the claim expires after the function's timeout.

A Lambda killed by its timeout never releases the key it claimed. Here the API process is killed while its
create is in flight: a proxy in front of moto holds the create's transaction (the key is already claimed
by then) until the process is gone, and never lets it through. Another API process on the same table then
answers the same request 409 while the dead one could still be running, and runs it afresh, once, after
FUNCTION_TIMEOUT_SECONDS on its clock.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from chalicelib.store import keys
from conftest import Stack, cluster_body, clusters_path, new_stack, until

HELD_TARGET = "DynamoDB_20120810.TransactWriteItems"
FUNCTION_TIMEOUT = 300  # long enough that no load makes the survivor start after the claim expired


class HoldingProxy(ThreadingHTTPServer):
    """Forwards every AWS request to moto, except that while `holding`, DynamoDB transactions wait and never pass."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream)
        self.holding = threading.Event()
        self.held = threading.Event()
        self.dropped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: HoldingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.holding.is_set() and self.headers.get("X-Amz-Target") == HELD_TARGET:
            self.server.held.set()
            self.server.dropped.wait()
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request("POST", self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST


@pytest.fixture
def proxy(stack_env: dict[str, str]) -> Iterator[HoldingProxy]:
    server = HoldingProxy(stack_env["AWS_ENDPOINT_URL"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.dropped.set()
    server.shutdown()
    server.server_close()


def test_a_key_claimed_by_a_killed_server_is_free_again_after_the_function_timeout(
    stack_env: dict[str, str], proxy: HoldingProxy,
) -> None:
    doomed = new_stack({**stack_env, "AWS_ENDPOINT_URL": proxy.url}, FUNCTION_TIMEOUT_SECONDS=str(FUNCTION_TIMEOUT))
    survivor: Stack | None = None
    try:
        owner = doomed.register()
        body, key = cluster_body(), {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
        proxy.holding.set()
        in_flight = threading.Thread(target=lambda: _ignore_errors(lambda: doomed.post_cluster(owner, body, key)),
                                     daemon=True)
        in_flight.start()
        until(proxy.held.is_set, timeout=60, what="the create's transaction to reach DynamoDB (the key claimed)")
        doomed.process.kill()
        doomed.process.wait(timeout=30)
        proxy.dropped.set()

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
