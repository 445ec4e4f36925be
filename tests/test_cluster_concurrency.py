"""Cluster writes racing inside the API: the organization quota, name uniqueness, no lost update, ETags.

Every race opens all its connections first and releases the requests together (conftest's `send_together`,
with the caller's token), so the requests really overlap inside the API.
"""

from __future__ import annotations

from collections import Counter

from conftest import Account, Stack, cluster_body, cluster_path, clusters_path, send_together

DEFAULT_QUOTA = 10


def test_parallel_creates_accept_exactly_the_quota(stack: Stack, owner: Account) -> None:
    bodies = [cluster_body() for _ in range(DEFAULT_QUOTA + 4)]
    answers = send_together(stack, "POST", clusters_path(owner.org_id), bodies, token=owner.access_token)

    assert Counter(status for status, _ in answers) == {202: DEFAULT_QUOTA, 409: 4}
    assert all(body["error"]["code"] == "quota_exceeded" for status, body in answers if status == 409)
    accepted = {body["cluster"]["id"] for status, body in answers if status == 202}
    assert {c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)} == accepted
    assert len(accepted) == DEFAULT_QUOTA


def test_parallel_creates_of_one_name_make_one_cluster_and_keep_the_quota(stack: Stack, owner: Account) -> None:
    body = cluster_body(name="contended")
    answers = send_together(stack, "POST", clusters_path(owner.org_id), [body] * 6, token=owner.access_token)

    assert Counter(status for status, _ in answers) == {202: 1, 409: 5}
    assert all(body["error"]["code"] == "conflict" for status, body in answers if status == 409)
    assert [c["name"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == ["contended"]
    for _ in range(DEFAULT_QUOTA - 1):
        stack.create_cluster(owner)
    over = stack.post_cluster(owner, cluster_body())
    assert over.status_code == 409 and over.json()["error"]["code"] == "quota_exceeded"


def test_parallel_scales_lose_no_update(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    bodies = [{"instances": i % 9 + 1} for i in range(20)]
    answers = send_together(stack, "POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", bodies,
                            token=owner.access_token)

    accepted = [(body["cluster"]["generation"], sent["instances"], body)
                for sent, (status, body) in zip(bodies, answers) if status == 202]
    refused = [(status, body) for status, body in answers if status != 202]
    assert accepted
    # Only a scale that lost every attempt of the retry policy is refused, and it says so.
    assert all(status == 409 and body["error"]["code"] == "concurrent_update" for status, body in refused), refused
    generations = [generation for generation, _, _ in accepted]
    assert len(set(generations)) == len(generations)
    assert all(body["cluster"]["instances"] == instances for _, instances, body in accepted)
    final = stack.get_cluster(owner, cluster["id"])
    assert final["generation"] == 1 + len(accepted) == max(generations)
    assert final["instances"] == max(accepted, key=lambda a: a[0])[1]
    operations = stack.listing(cluster_path(owner.org_id, cluster["id"]) + "/operations", owner.access_token)
    assert sorted(op["generation"] for op in operations) == list(range(1, len(accepted) + 2))


def test_parallel_renames_all_apply_and_release_the_names_they_replace(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, name="original")["cluster"]
    names = [f"rename-{i}" for i in range(7)]
    answers = send_together(stack, "PATCH", cluster_path(owner.org_id, cluster["id"]), [{"name": n} for n in names],
                            token=owner.access_token)

    assert [status for status, _ in answers] == [202] * len(names), answers
    by_generation = sorted((body["cluster"]["generation"], name) for name, (_, body) in zip(names, answers))
    assert [generation for generation, _ in by_generation] == list(range(2, len(names) + 2))
    final = stack.get_cluster(owner, cluster["id"])
    assert (final["name"], final["generation"]) == (by_generation[-1][1], len(names) + 1)

    taken = stack.post_cluster(owner, cluster_body(name=final["name"]))
    assert taken.status_code == 409, taken.text
    for _, released in by_generation[:-1] + [(1, "original")]:
        assert stack.create_cluster(owner, name=released)["cluster"]["name"] == released


def test_parallel_writes_with_one_etag_apply_once(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    etag = stack.call("GET", path, token=owner.access_token).headers["ETag"]
    bodies = [{"ip_allowlist": [f"10.{i}.0.0/16"]} for i in range(6)]
    answers = send_together(stack, "PATCH", path, bodies, token=owner.access_token, headers={"If-Match": etag})

    assert Counter(status for status, _ in answers) == {202: 1, 412: 5}
    winner = next(sent for sent, (status, _) in zip(bodies, answers) if status == 202)
    final = stack.get_cluster(owner, cluster["id"])
    assert (final["ip_allowlist"], final["generation"]) == (winner["ip_allowlist"], 2)


def test_parallel_deletes_delete_once(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    answers = send_together(stack, "DELETE", cluster_path(owner.org_id, cluster["id"]), [None] * 5,
                            token=owner.access_token)

    assert Counter(status for status, _ in answers) == {202: 1, 409: 4}
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 2
    operations = stack.listing(cluster_path(owner.org_id, cluster["id"]) + "/operations", owner.access_token)
    assert [op["kind"] for op in operations] == ["delete", "create"]
