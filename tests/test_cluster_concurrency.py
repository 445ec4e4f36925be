"""Cluster writes racing inside the API: the organization quota, name uniqueness, no lost update, ETags.

Every race opens all its connections first and releases the requests together (as conftest's
`send_together`, with the caller's token), so the requests really overlap inside the API.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import Account, Stack
from test_clusters import cluster_body, cluster_path, clusters_path, create, fetch, listing, post_cluster

DEFAULT_QUOTA = 10


def race(stack: Stack, account: Account, method: str, path: str, bodies: list[Any],
         headers: dict[str, str] | None = None) -> list[tuple[int, Any]]:
    """Send one request per body at the same instant as `account`; `(status, parsed body)` for each, in order."""
    connections = []
    for _ in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
        connection.connect()
        connections.append(connection)
        time.sleep(0.01)
    barrier = threading.Barrier(len(bodies))
    all_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {account.access_token}",
                   **(headers or {})}

    def send(connection: http.client.HTTPConnection, body: Any) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        barrier.wait()
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, connections, bodies))
    finally:
        for connection in connections:
            connection.close()


def test_parallel_creates_accept_exactly_the_quota(stack: Stack, owner: Account) -> None:
    bodies = [cluster_body() for _ in range(DEFAULT_QUOTA + 4)]
    answers = race(stack, owner, "POST", clusters_path(owner.org_id), bodies)

    assert Counter(status for status, _ in answers) == {202: DEFAULT_QUOTA, 409: 4}
    assert all(body["error"]["code"] == "quota_exceeded" for status, body in answers if status == 409)
    accepted = {body["cluster"]["id"] for status, body in answers if status == 202}
    assert {c["id"] for c in listing(stack, owner, clusters_path(owner.org_id))} == accepted
    assert len(accepted) == DEFAULT_QUOTA


def test_parallel_creates_of_one_name_make_one_cluster_and_keep_the_quota(stack: Stack, owner: Account) -> None:
    body = cluster_body(name="contended")
    answers = race(stack, owner, "POST", clusters_path(owner.org_id), [body] * 6)

    assert Counter(status for status, _ in answers) == {202: 1, 409: 5}
    assert all(body["error"]["code"] == "conflict" for status, body in answers if status == 409)
    assert [c["name"] for c in listing(stack, owner, clusters_path(owner.org_id))] == ["contended"]
    for _ in range(DEFAULT_QUOTA - 1):
        create(stack, owner)
    over = post_cluster(stack, owner, cluster_body())
    assert over.status_code == 409 and over.json()["error"]["code"] == "quota_exceeded"


def test_parallel_scales_lose_no_update(stack: Stack, owner: Account) -> None:
    cluster = create(stack, owner)["cluster"]
    bodies = [{"instances": i % 9 + 1} for i in range(20)]
    answers = race(stack, owner, "POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", bodies)

    accepted = [(body["cluster"]["generation"], sent["instances"], body)
                for sent, (status, body) in zip(bodies, answers) if status == 202]
    refused = [(status, body) for status, body in answers if status != 202]
    assert accepted
    assert all(status == 409 and body["error"]["code"] == "conflict" for status, body in refused), refused
    generations = [generation for generation, _, _ in accepted]
    assert len(set(generations)) == len(generations)
    assert all(body["cluster"]["instances"] == instances for _, instances, body in accepted)
    final = fetch(stack, owner, cluster["id"])
    assert final["generation"] == 1 + len(accepted) == max(generations)
    assert final["instances"] == max(accepted, key=lambda a: a[0])[1]
    operations = listing(stack, owner, cluster_path(owner.org_id, cluster["id"]) + "/operations")
    assert sorted(op["generation"] for op in operations) == list(range(1, len(accepted) + 2))


def test_parallel_renames_all_apply_and_release_the_names_they_replace(stack: Stack, owner: Account) -> None:
    cluster = create(stack, owner, name="original")["cluster"]
    names = [f"rename-{i}" for i in range(7)]
    answers = race(stack, owner, "PATCH", cluster_path(owner.org_id, cluster["id"]), [{"name": n} for n in names])

    assert [status for status, _ in answers] == [202] * len(names), answers
    by_generation = sorted((body["cluster"]["generation"], name) for name, (_, body) in zip(names, answers))
    assert [generation for generation, _ in by_generation] == list(range(2, len(names) + 2))
    final = fetch(stack, owner, cluster["id"])
    assert (final["name"], final["generation"]) == (by_generation[-1][1], len(names) + 1)

    taken = post_cluster(stack, owner, cluster_body(name=final["name"]))
    assert taken.status_code == 409, taken.text
    for _, released in by_generation[:-1] + [(1, "original")]:
        assert create(stack, owner, name=released)["cluster"]["name"] == released


def test_parallel_writes_with_one_etag_apply_once(stack: Stack, owner: Account) -> None:
    cluster = create(stack, owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    etag = stack.call("GET", path, token=owner.access_token).headers["ETag"]
    bodies = [{"ip_allowlist": [f"10.{i}.0.0/16"]} for i in range(6)]
    answers = race(stack, owner, "PATCH", path, bodies, headers={"If-Match": etag})

    assert Counter(status for status, _ in answers) == {202: 1, 412: 5}
    winner = next(sent for sent, (status, _) in zip(bodies, answers) if status == 202)
    final = fetch(stack, owner, cluster["id"])
    assert (final["ip_allowlist"], final["generation"]) == (winner["ip_allowlist"], 2)


def test_parallel_deletes_delete_once(stack: Stack, owner: Account) -> None:
    cluster = create(stack, owner)["cluster"]
    answers = race(stack, owner, "DELETE", cluster_path(owner.org_id, cluster["id"]), [None] * 5)

    assert Counter(status for status, _ in answers) == {202: 1, 409: 4}
    assert fetch(stack, owner, cluster["id"])["generation"] == 2
    operations = listing(stack, owner, cluster_path(owner.org_id, cluster["id"]) + "/operations")
    assert [op["kind"] for op in operations] == ["delete", "create"]
