"""The user-facing cluster API over HTTP: the catalog and validation against it, create, list, get, PATCH,
scale, delete, operations, the reconcile jobs on the region's queue, Idempotency-Key, and secrets at rest
and in responses. Deletion completes only when an agent reports it, so some tests act as the agent."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import requests

from chalicelib.store import keys
from conftest import Account, Stack, cluster_body, cluster_path, clusters_path

REGION = "nyc1"
S3_MASK = "********"
TUNED = {"POSTGRES_IMAGES": "16=img16,17=img17,18=img18", "ORG_CLUSTER_QUOTA": "2"}


# ----------------------------------------------------------------------------------------------- helpers


def s3_target(secret: str, **overrides: Any) -> dict[str, Any]:
    target = {
        "endpoint": "https://s3.example.com", "bucket": "orochi-archive", "region": "us-east-1",
        "prefix": "clusters/", "access_key_id": "AKIAEXAMPLE", "secret_access_key": secret,
    }
    target.update(overrides)
    return target


def error_fields(response: Any) -> list[str]:
    return [d["field"] for d in response.json()["error"].get("details", [])]


def desired_state(stack: Stack, cluster_id: str) -> dict[str, Any]:
    response = stack.call("GET", f"/v1/agent/clusters/{cluster_id}", token=stack.agent())
    assert response.status_code == 200, response.text
    return dict(response.json())


def delete_completely(stack: Stack, account: Account, cluster_id: str) -> None:
    """DELETE the cluster, then report as the agent that it is gone."""
    response = stack.call("DELETE", cluster_path(account.org_id, cluster_id), token=account.access_token)
    assert response.status_code == 202, response.text
    reported = stack.report(cluster_id, observed_generation=response.json()["cluster"]["generation"], phase="deleted",
                            ready_instances=0)
    assert reported["status"] == "deleted"


def jobs_of(stack: Stack, cluster_id: str, *, expected: int, region: str = REGION) -> list[dict[str, Any]]:
    """The messages of `cluster_id` on the region's queue, in delivery order (each deleted once read).

    Reads until `expected` arrived, then once more to catch any extra. Other clusters' messages stay
    invisible for a short while, so the queue yields this cluster's messages behind them.
    """
    sqs, url = stack.sqs(), stack.queue_url(region)
    mine: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    extra_pass = False
    while True:
        received = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30,
            AttributeNames=["All"], MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in received:
            if json.loads(message["Body"]).get("cluster_id") == cluster_id:
                mine.append(message)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if len(mine) >= expected:
            if extra_pass and not received:
                return mine
            extra_pass = True
        elif time.monotonic() > deadline:
            raise AssertionError(f"timed out after 120s waiting for {expected} jobs of {cluster_id} on {url} "
                                 f"(got {len(mine)})")


@pytest.fixture(scope="module")
def refused(stack: Stack) -> Account:
    """The owner of an organization that only ever sees refused creations: it must stay without clusters."""
    return stack.register(organization_name="Refusals")


@pytest.fixture(scope="module")
def steady(stack: Stack) -> tuple[Account, dict[str, Any]]:
    """An owner and a cluster that only ever sees refused changes: its generation must stay 1."""
    account = stack.register(organization_name="Steady")
    return account, stack.create_cluster(account)["cluster"]


def assert_untouched(stack: Stack, steady: tuple[Account, dict[str, Any]]) -> None:
    account, cluster = steady
    assert stack.get_cluster(account, cluster["id"]) == cluster


@pytest.fixture(scope="module")
def tuned_stack(stack_factory: Any) -> Stack:
    """An API with its own PostgreSQL images and an organization quota of 2."""
    return stack_factory(**TUNED)


# ----------------------------------------------------------------------------------------------- catalog


def test_catalog_lists_regions_versions_sizes_and_bounds_without_auth(stack: Stack) -> None:
    response = stack.call("GET", "/v1/catalog")
    assert response.status_code == 200, response.text
    catalog = response.json()
    assert [r["slug"] for r in catalog["regions"]] == ["nyc1", "sfo3", "fra1", "ams3", "sgp1"]
    assert all(r["name"] for r in catalog["regions"])
    assert [v["version"] for v in catalog["postgres_versions"]] == ["16", "17", "18"]
    assert all(v["image"] for v in catalog["postgres_versions"])
    assert catalog["sizes"] and all(
        isinstance(s["slug"], str) and s["vcpu"] >= 1 and s["memory_gb"] >= 1 for s in catalog["sizes"]
    )
    assert len({s["slug"] for s in catalog["sizes"]}) == len(catalog["sizes"])
    assert 1 <= catalog["storage_gb"]["min"] <= catalog["storage_gb"]["max"]
    assert catalog["instances"] == {"min": 1, "max": 9}


def test_catalog_shows_the_configured_postgres_images(tuned_stack: Stack) -> None:
    response = tuned_stack.call("GET", "/v1/catalog")
    assert response.status_code == 200, response.text
    assert response.json()["postgres_versions"] == [
        {"version": "16", "image": "img16"}, {"version": "17", "image": "img17"}, {"version": "18", "image": "img18"},
    ]


@pytest.mark.parametrize(("field", "value"), [
    ("region", "mars1"),
    ("postgres_version", "15"),
    ("size", "db-s-64vcpu-1tb"),
    ("storage_gb", "below_min"),
    ("storage_gb", "above_max"),
    ("instances", 0),
    ("instances", 10),
])
def test_cluster_outside_the_catalog_is_rejected_with_the_field(
    stack: Stack, refused: Account, field: str, value: Any,
) -> None:
    bounds = stack.call("GET", "/v1/catalog").json()["storage_gb"]
    value = {"below_min": bounds["min"] - 1, "above_max": bounds["max"] + 1}.get(value, value)
    response = stack.post_cluster(refused, cluster_body(**{field: value}))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert error_fields(response) == [field]
    assert stack.listing(clusters_path(refused.org_id), refused.access_token) == []


def test_catalog_bounds_are_accepted(stack: Stack, owner: Account) -> None:
    catalog = stack.call("GET", "/v1/catalog").json()
    low = stack.create_cluster(owner, instances=1, storage_gb=catalog["storage_gb"]["min"], region="sgp1",
                               postgres_version="16")
    high = stack.create_cluster(owner, instances=9, storage_gb=catalog["storage_gb"]["max"],
                                size=catalog["sizes"][-1]["slug"], postgres_version="18")
    assert (low["cluster"]["instances"], low["cluster"]["storage_gb"]) == (1, catalog["storage_gb"]["min"])
    assert (high["cluster"]["instances"], high["cluster"]["storage_gb"]) == (9, catalog["storage_gb"]["max"])


# ----------------------------------------------------------------------------------------------- create


def test_create_answers_202_with_a_pending_cluster_and_its_create_operation(stack: Stack, owner: Account) -> None:
    body = cluster_body(instances=2, storage_gb=50, postgres_version="16")
    response = stack.post_cluster(owner, body)
    assert response.status_code == 202, response.text
    cluster, operation = response.json()["cluster"], response.json()["operation"]
    assert {k: cluster[k] for k in body} == body
    assert cluster["org_id"] == owner.org_id
    assert cluster["status"] == "pending"
    assert (cluster["generation"], cluster["observed_generation"], cluster["ready_instances"]) == (1, 0, 0)
    assert "endpoint" not in cluster
    assert (cluster["deletion_protection"], cluster["ip_allowlist"]) == (False, [])
    assert operation["cluster_id"] == cluster["id"]
    assert operation["kind"] == "create"
    assert (operation["status"], operation["actor"]) == ("pending", f"user:{owner.user_id}")
    assert response.headers["ETag"]


def test_created_cluster_stays_pending_until_an_agent_reports(own_stack: Any) -> None:
    stack = own_stack()
    owner = stack.register()
    cluster = stack.create_cluster(owner)["cluster"]
    stack.advance_clock(10 * 60)  # within the access token's 15 minutes, past the reaper's 5 (which no one runs here)
    again = stack.get_cluster(owner, cluster["id"])
    assert (again["status"], again["observed_generation"], again["ready_instances"]) == ("pending", 0, 0)
    assert "endpoint" not in again
    listed = stack.listing(clusters_path(owner.org_id), owner.access_token)
    assert [(c["id"], c["status"]) for c in listed] == [(cluster["id"], "pending")]


@pytest.mark.parametrize("name", [
    "Upper", "1leading-digit", "-leading-hyphen", "trailing-hyphen-", "a" * 41,
    "under_score", "dot.ted", "", "caf\u00e9",
])
def test_cluster_name_that_is_not_a_lowercase_dns_label_is_rejected(stack: Stack, refused: Account, name: str) -> None:
    response = stack.post_cluster(refused, cluster_body(name=name))
    assert response.status_code == 400, response.text
    assert error_fields(response) == ["name"]
    assert stack.listing(clusters_path(refused.org_id), refused.access_token) == []


def test_cluster_names_that_are_short_dns_labels_are_accepted(stack: Stack, owner: Account) -> None:
    for name in ("a", "a" * 40, "db-1", "x9"):
        assert stack.create_cluster(owner, name=name)["cluster"]["name"] == name


def test_cluster_name_is_unique_among_the_orgs_live_clusters(stack: Stack, owner: Account) -> None:
    first = stack.create_cluster(owner, name="orders")
    response = stack.post_cluster(owner, cluster_body(name="orders"))
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == [first["cluster"]["id"]]


def test_another_org_may_reuse_a_cluster_name(stack: Stack, owner: Account) -> None:
    stack.create_cluster(owner, name="shared-name")
    other = stack.register(organization_name="Other Org")
    assert stack.create_cluster(other, name="shared-name")["cluster"]["org_id"] == other.org_id


def test_cluster_name_is_free_again_once_the_agent_reports_deletion(stack: Stack, owner: Account) -> None:
    gone = stack.create_cluster(owner, name="reused")["cluster"]
    deleting = stack.call("DELETE", cluster_path(owner.org_id, gone["id"]), token=owner.access_token)
    assert deleting.status_code == 202, deleting.text
    while_deleting = stack.post_cluster(owner, cluster_body(name="reused"))
    assert while_deleting.status_code == 409, while_deleting.text

    stack.report(gone["id"], observed_generation=deleting.json()["cluster"]["generation"], phase="deleted",
                 ready_instances=0)

    again = stack.create_cluster(owner, name="reused")["cluster"]
    assert again["id"] != gone["id"]
    assert [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == [again["id"]]


def test_create_takes_storage_tiers_autoscaling_allowlist_and_deletion_protection(stack: Stack, owner: Account) -> None:
    autoscaling = {"enabled": True, "min_instances": 1, "max_instances": 4,
                   "scale_up": {"cpu_percent": 60, "connections_percent": 80, "for_seconds": 120},
                   "scale_down": {"cpu_percent": 20, "connections_percent": 30, "for_seconds": 600},
                   "cooldown_seconds": 300,
                   "storage": {"enabled": True, "threshold_percent": 80, "increment_percent": 25, "max_gb": 200}}
    cold = s3_target("cold-secret-" + uuid.uuid4().hex)
    frozen = s3_target("frozen-secret-" + uuid.uuid4().hex, endpoint="http://minio.internal:9000", bucket="frozen-data")
    del frozen["prefix"]
    cluster = stack.create_cluster(owner, storage_tiers={"cold": cold, "frozen": frozen}, autoscaling=autoscaling,
                                   ip_allowlist=["203.0.113.0/24", "2001:db8::/32"],
                                   deletion_protection=True)["cluster"]
    for shown in (cluster, stack.get_cluster(owner, cluster["id"])):
        assert shown["autoscaling"] == autoscaling
        assert shown["ip_allowlist"] == ["203.0.113.0/24", "2001:db8::/32"]
        assert shown["deletion_protection"] is True
        assert shown["storage_tiers"]["cold"] == {**cold, "secret_access_key": S3_MASK}
        assert shown["storage_tiers"]["frozen"] == {**frozen, "secret_access_key": S3_MASK}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"ip_allowlist": ["not-a-cidr"]}, "ip_allowlist.0"),
    ({"ip_allowlist": ["10.0.0.0/8", "10.0.0.0/33"]}, "ip_allowlist.1"),
    ({"flavor": "large"}, "flavor"),
    ({"instances": "3"}, "instances"),
    ({"deletion_protection": "yes"}, "deletion_protection"),
    ({"storage_gb": None}, "storage_gb"),
    ({"storage_tiers": {"warm": s3_target("x")}}, "storage_tiers.warm"),
    ({"storage_tiers": {"cold": {k: v for k, v in s3_target("x").items() if k != "bucket"}}},
     "storage_tiers.cold.bucket"),
    ({"storage_tiers": {"cold": s3_target("x", endpoint="ftp://s3.example.com")}}, "storage_tiers.cold.endpoint"),
    ({"storage_tiers": {"cold": s3_target("")}}, "storage_tiers.cold.secret_access_key"),
    ({"autoscaling": {"min_instances": 5, "max_instances": 2}}, "autoscaling.min_instances"),
    ({"autoscaling": {"min_instances": 1, "max_instances": 10}}, "autoscaling.max_instances"),
    ({"autoscaling": {"min_instances": 1, "max_instances": 3, "target_cpu_percent": 5}},
     "autoscaling.target_cpu_percent"),
])
def test_create_with_unknown_fields_or_bad_values_is_rejected_with_details(
    stack: Stack, refused: Account, overrides: dict[str, Any], field: str,
) -> None:
    response = stack.post_cluster(refused, cluster_body(**overrides))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert field in error_fields(response)
    assert stack.listing(clusters_path(refused.org_id), refused.access_token) == []


def test_create_without_required_fields_names_each_missing_field(stack: Stack, refused: Account) -> None:
    response = stack.post_cluster(refused, {"name": "lonely"})
    assert response.status_code == 400, response.text
    assert set(error_fields(response)) == {"region", "postgres_version", "size", "storage_gb"}


# ----------------------------------------------------------------------------------------------- list and get


def test_list_is_cursor_paginated(stack: Stack, owner: Account) -> None:
    created = {stack.create_cluster(owner)["cluster"]["id"] for _ in range(5)}
    first = stack.call("GET", clusters_path(owner.org_id) + "?limit=2", token=owner.access_token)
    assert first.status_code == 200, first.text
    assert len(first.json()["items"]) == 2 and first.json()["next_cursor"]
    pages = [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token, limit=2)]
    assert len(pages) == 5 and set(pages) == created


def test_list_filters_by_status(stack: Stack, owner: Account) -> None:
    staying = stack.create_cluster(owner)["cluster"]
    leaving = stack.create_cluster(owner)["cluster"]
    assert stack.call("DELETE", cluster_path(owner.org_id, leaving["id"]), token=owner.access_token).status_code == 202
    path = clusters_path(owner.org_id)
    assert [c["id"] for c in stack.listing(path + "?status=deleting", owner.access_token)] == [leaving["id"]]
    assert [c["id"] for c in stack.listing(path + "?status=pending", owner.access_token)] == [staying["id"]]
    assert stack.listing(path + "?status=running", owner.access_token) == []
    bad = stack.call("GET", path + "?status=sleeping", token=owner.access_token)
    assert bad.status_code == 400 and error_fields(bad) == ["status"]


def test_get_returns_the_cluster_with_its_etag(stack: Stack, owner: Account) -> None:
    created = stack.post_cluster(owner, cluster_body())
    cluster = created.json()["cluster"]
    response = stack.call("GET", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token)
    assert response.status_code == 200, response.text
    assert response.json() == cluster
    assert response.headers["ETag"] == created.headers["ETag"]


def test_unknown_cluster_is_not_found(stack: Stack, owner: Account) -> None:
    response = stack.call("GET", cluster_path(owner.org_id, "cls_doesnotexist"), token=owner.access_token)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


# ----------------------------------------------------------------------------------------------- patch


def test_each_patch_changes_its_field_and_bumps_the_generation(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    secret = "patched-secret-" + uuid.uuid4().hex
    changes: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"name": "renamed"}, {"name": "renamed"}),
        ({"ip_allowlist": ["198.51.100.0/24"]}, {"ip_allowlist": ["198.51.100.0/24"]}),
        ({"autoscaling": {"min_instances": 1, "max_instances": 3}},
         {"autoscaling": {"enabled": True, "min_instances": 1, "max_instances": 3,
                          "scale_up": {"cpu_percent": 75, "connections_percent": 80, "for_seconds": 120},
                          "scale_down": {"cpu_percent": 25, "connections_percent": 30, "for_seconds": 600},
                          "cooldown_seconds": 300,
                          "storage": {"enabled": False, "threshold_percent": 80, "increment_percent": 25}}}),
        ({"storage_tiers": {"cold": s3_target(secret)}},
         {"storage_tiers": {"cold": {**s3_target(secret), "secret_access_key": S3_MASK}}}),
        ({"deletion_protection": True}, {"deletion_protection": True}),
        ({"autoscaling": None, "storage_tiers": None}, {}),
    ]
    for generation, (patch, shown) in enumerate(changes, start=2):
        response = stack.call("PATCH", path, token=owner.access_token, json=patch)
        assert response.status_code == 202, response.text
        assert response.json()["operation"]["kind"] == "update"
        for view in (response.json()["cluster"], stack.get_cluster(owner, cluster["id"])):
            assert view["generation"] == generation
            assert {k: view[k] for k in shown} == shown
    final = stack.get_cluster(owner, cluster["id"])
    assert "autoscaling" not in final and "storage_tiers" not in final
    assert (final["name"], final["ip_allowlist"]) == ("renamed", ["198.51.100.0/24"])
    assert final["deletion_protection"] is True


def test_patch_with_a_stale_etag_fails_and_with_the_current_one_applies(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    stale = stack.call("GET", path, token=owner.access_token).headers["ETag"]
    assert stack.call("PATCH", path, token=owner.access_token, json={"ip_allowlist": ["10.0.0.0/8"]}).status_code == 202

    refused = stack.call("PATCH", path, token=owner.access_token, json={"name": "stale-write"},
                         headers={"If-Match": stale})
    assert refused.status_code == 412, refused.text
    assert refused.json()["error"]["code"] == "precondition_failed"
    unchanged = stack.get_cluster(owner, cluster["id"])
    assert (unchanged["name"], unchanged["generation"]) == (cluster["name"], 2)

    current = stack.call("GET", path, token=owner.access_token).headers["ETag"]
    assert current != stale
    applied = stack.call("PATCH", path, token=owner.access_token, json={"name": "fresh-write"},
                         headers={"If-Match": current})
    assert applied.status_code == 202, applied.text
    assert applied.headers["ETag"] not in (stale, current)
    assert (applied.json()["cluster"]["name"], applied.json()["cluster"]["generation"]) == ("fresh-write", 3)


def test_if_match_compares_strongly_and_takes_a_list_or_any(stack: Stack, owner: Account) -> None:
    """RFC 9110 13.1.1: a weak tag never matches; any tag of a list may; `*` matches the existing cluster."""
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])

    def patch(if_match: str) -> requests.Response:
        return stack.call("PATCH", path, token=owner.access_token, json={"deletion_protection": False},
                          headers={"If-Match": if_match})

    current = stack.call("GET", path, token=owner.access_token).headers["ETag"]
    weak = patch(f"W/{current}")
    assert weak.status_code == 412, weak.text
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 1
    listed = patch(f'"stale-1", {current} ,"stale-2"')
    assert listed.status_code == 202, listed.text
    assert patch(f'"stale-1", W/{listed.headers["ETag"]}').status_code == 412
    assert patch("*").status_code == 202
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 3


def test_patch_to_a_name_in_use_conflicts(stack: Stack, owner: Account) -> None:
    stack.create_cluster(owner, name="taken")
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    response = stack.call("PATCH", path, token=owner.access_token, json={"name": "taken"})
    assert response.status_code == 409, response.text
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 1


@pytest.mark.parametrize(("patch", "field"), [
    ({}, "body"),
    ({"instances": 3}, "instances"),
    ({"name": "Bad Name"}, "name"),
    ({"ip_allowlist": ["300.1.1.1/8"]}, "ip_allowlist.0"),
])
def test_patch_with_nothing_or_bad_fields_is_rejected(
    stack: Stack, steady: tuple[Account, dict[str, Any]], patch: dict[str, Any], field: str,
) -> None:
    account, cluster = steady
    response = stack.call("PATCH", cluster_path(account.org_id, cluster["id"]), token=account.access_token, json=patch)
    assert response.status_code == 400, response.text
    assert error_fields(response) == [field]
    assert_untouched(stack, steady)


# ----------------------------------------------------------------------------------------------- scale


def test_scale_changes_instances_size_and_storage(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, instances=1, size="db-s-1vcpu-2gb", storage_gb=20)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"]) + "/scale"
    steps = [({"instances": 3}, (3, "db-s-1vcpu-2gb", 20)),
             ({"size": "db-s-4vcpu-8gb"}, (3, "db-s-4vcpu-8gb", 20)),
             ({"storage_gb": 40}, (3, "db-s-4vcpu-8gb", 40)),
             ({"instances": 2, "size": "db-s-2vcpu-4gb", "storage_gb": 40}, (2, "db-s-2vcpu-4gb", 40))]
    for generation, (body, expected) in enumerate(steps, start=2):
        response = stack.call("POST", path, token=owner.access_token, json=body)
        assert response.status_code == 202, response.text
        assert response.json()["operation"]["kind"] == "scale"
        now = stack.get_cluster(owner, cluster["id"])
        assert (now["instances"], now["size"], now["storage_gb"]) == expected
        assert now["generation"] == generation


def test_scale_cannot_shrink_storage(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, storage_gb=100)["cluster"]
    response = stack.call("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", token=owner.access_token,
                          json={"storage_gb": 99, "instances": 2})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unprocessable"
    after = stack.get_cluster(owner, cluster["id"])
    assert (after["storage_gb"], after["instances"], after["generation"]) == (100, 1, 1)


@pytest.mark.parametrize(("scale", "field"), [
    ({"instances": 5}, "instances"),
    ({"instances": 1}, "instances"),
    ({"storage_gb": 60}, "autoscaling.storage.max_gb"),
])
def test_scale_outside_the_autoscaling_policy_is_refused(
    stack: Stack, owner: Account, scale: dict[str, Any], field: str,
) -> None:
    policy = {"min_instances": 2, "max_instances": 4, "storage": {"max_gb": 50}}
    cluster = stack.create_cluster(owner, instances=2, storage_gb=20, autoscaling=policy)["cluster"]
    response = stack.call("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", token=owner.access_token,
                          json=scale)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [field]
    after = stack.get_cluster(owner, cluster["id"])
    assert (after["instances"], after["storage_gb"], after["generation"]) == (2, 20, 1)


def test_create_with_storage_above_the_autoscaling_ceiling_is_refused(stack: Stack, owner: Account) -> None:
    response = stack.post_cluster(owner, cluster_body(storage_gb=100, autoscaling={
        "min_instances": 1, "max_instances": 3, "storage": {"max_gb": 50}}))
    assert response.status_code == 422, response.text
    assert error_fields(response) == ["autoscaling.storage.max_gb"]
    assert stack.listing(clusters_path(owner.org_id), owner.access_token) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"instances": 10}, "instances"),
    ({"instances": 0}, "instances"),
    ({"size": "db-huge"}, "size"),
    ({"storage_gb": 999999}, "storage_gb"),
    ({"region": "fra1"}, "region"),
    ({}, "body"),
])
def test_scale_outside_the_catalog_or_with_nothing_to_change_is_rejected(
    stack: Stack, steady: tuple[Account, dict[str, Any]], body: dict[str, Any], field: str,
) -> None:
    account, cluster = steady
    path = cluster_path(account.org_id, cluster["id"]) + "/scale"
    response = stack.call("POST", path, token=account.access_token, json=body)
    assert response.status_code == 400, response.text
    assert error_fields(response) == [field]
    assert_untouched(stack, steady)


# ----------------------------------------------------------------------------------------------- delete


def test_delete_is_refused_while_deletion_protection_is_on(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, deletion_protection=True)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    refused = stack.call("DELETE", path, token=owner.access_token)
    assert refused.status_code == 409, refused.text
    unchanged = stack.get_cluster(owner, cluster["id"])
    assert (unchanged["status"], unchanged["generation"]) == ("pending", 1)

    assert stack.call("PATCH", path, token=owner.access_token, json={"deletion_protection": False}).status_code == 202
    assert stack.call("DELETE", path, token=owner.access_token).status_code == 202


def test_deleted_cluster_is_deleting_until_the_agent_reports_then_gone(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    response = stack.call("DELETE", path, token=owner.access_token)
    assert response.status_code == 202, response.text
    assert (response.json()["cluster"]["status"], response.json()["cluster"]["generation"]) == ("deleting", 2)
    assert (response.json()["operation"]["kind"], response.json()["operation"]["status"]) == ("delete", "pending")
    assert stack.get_cluster(owner, cluster["id"])["status"] == "deleting"
    assert [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == [cluster["id"]]

    stack.report(cluster["id"], observed_generation=2, phase="deleted", ready_instances=0)

    for suffix in ("", "/operations", "/credentials", "/metrics"):
        gone = stack.call("GET", path + suffix, token=owner.access_token)
        assert gone.status_code == 404, (suffix, gone.text)
    assert stack.call("DELETE", path, token=owner.access_token).status_code == 404
    assert stack.listing(clusters_path(owner.org_id), owner.access_token) == []


def test_a_cluster_being_deleted_takes_no_other_change(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    assert stack.call("DELETE", path, token=owner.access_token).status_code == 202
    assert stack.call("PATCH", path, token=owner.access_token, json={"name": "late"}).status_code == 409
    assert stack.call("POST", path + "/scale", token=owner.access_token, json={"instances": 2}).status_code == 409
    assert stack.call("DELETE", path, token=owner.access_token).status_code == 409
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 2


# ----------------------------------------------------------------------------------------------- operations and jobs


def test_every_mutation_bumps_generation_records_an_operation_and_enqueues_a_secret_free_job(
    stack: Stack, owner: Account,
) -> None:
    s3_secret = "job-s3-secret-" + uuid.uuid4().hex
    started = stack.now()
    created = stack.create_cluster(owner, storage_tiers={"cold": s3_target(s3_secret)})
    cluster_id = created["cluster"]["id"]
    path = cluster_path(owner.org_id, cluster_id)
    answers = [created]
    for method, suffix, body in (("PATCH", "", {"ip_allowlist": ["10.1.0.0/16"]}),
                                 ("POST", "/scale", {"instances": 2}),
                                 ("DELETE", "", None)):
        response = stack.call(method, path + suffix, token=owner.access_token, json=body)
        assert response.status_code == 202, response.text
        answers.append(response.json())
    finished = stack.now()
    password = desired_state(stack, cluster_id)["password"]

    assert [a["cluster"]["generation"] for a in answers] == [1, 2, 3, 4]
    assert [a["operation"]["generation"] for a in answers] == [1, 2, 3, 4]
    operations = stack.listing(path + "/operations", owner.access_token)
    assert [op["kind"] for op in operations] == ["delete", "scale", "update", "create"]
    assert [op["id"] for op in operations] == [a["operation"]["id"] for a in reversed(answers)]
    assert all(op["actor"] == f"user:{owner.user_id}" and op["cluster_id"] == cluster_id for op in operations)
    for operation in operations:
        one = stack.call("GET", f"{path}/operations/{operation['id']}", token=owner.access_token)
        assert one.status_code == 200, one.text
        assert one.json() == operation
    assert stack.call("GET", f"{path}/operations/op_missing", token=owner.access_token).status_code == 404

    messages = jobs_of(stack, cluster_id, expected=4)
    assert [json.loads(m["Body"])["generation"] for m in messages] == [1, 2, 3, 4]
    for message in messages:
        body = json.loads(message["Body"])
        assert set(body) == {"v", "kind", "cluster_id", "org_id", "region", "generation", "enqueued_at"}
        assert (body["v"], body["kind"], body["cluster_id"], body["org_id"], body["region"]) == (
            1, "reconcile", cluster_id, owner.org_id, REGION)
        assert started <= body["enqueued_at"] <= finished
        assert message["Attributes"]["MessageGroupId"] == cluster_id
        assert message["Attributes"]["MessageDeduplicationId"] == f"{cluster_id}:{body['generation']}"
        wire = json.dumps(message)
        assert password not in wire and s3_secret not in wire


def test_operations_list_is_paginated_newest_first(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    for instances in (2, 3, 4):
        scaled = stack.call("POST", path + "/scale", token=owner.access_token, json={"instances": instances})
        assert scaled.status_code == 202, scaled.text
    first = stack.call("GET", path + "/operations?limit=3", token=owner.access_token)
    assert first.status_code == 200 and len(first.json()["items"]) == 3 and first.json()["next_cursor"]
    operations = stack.listing(path + "/operations", owner.access_token, limit=3)
    assert [op["generation"] for op in operations] == [4, 3, 2, 1]


def test_operation_of_another_cluster_is_not_found(stack: Stack, owner: Account) -> None:
    one = stack.create_cluster(owner)
    other = stack.create_cluster(owner)
    path = f"{cluster_path(owner.org_id, other['cluster']['id'])}/operations/{one['operation']['id']}"
    response = stack.call("GET", path, token=owner.access_token)
    assert response.status_code == 404, response.text


# ----------------------------------------------------------------------------------------------- idempotency


def test_create_replays_the_original_answer_for_the_same_idempotency_key(stack: Stack, owner: Account) -> None:
    body, key = cluster_body(), {"Idempotency-Key": uuid.uuid4().hex}
    first = stack.post_cluster(owner, body, key)
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    same_body_reordered = dict(reversed(list(body.items())))
    replay = stack.post_cluster(owner, same_body_reordered, key)
    assert replay.status_code == 202, replay.text
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json()
    cluster_id = first.json()["cluster"]["id"]
    assert [c["id"] for c in stack.listing(clusters_path(owner.org_id), owner.access_token)] == [cluster_id]
    operations = stack.listing(cluster_path(owner.org_id, cluster_id) + "/operations", owner.access_token)
    assert [op["id"] for op in operations] == [first.json()["operation"]["id"]]


def test_create_with_a_used_idempotency_key_and_another_body_is_refused(stack: Stack, owner: Account) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    assert stack.post_cluster(owner, cluster_body(), key).status_code == 202
    other = stack.post_cluster(owner, cluster_body(), key)
    assert other.status_code == 422, other.text
    assert len(stack.listing(clusters_path(owner.org_id), owner.access_token)) == 1


def test_scale_replays_the_original_answer_for_the_same_idempotency_key(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"]) + "/scale"
    key = {"Idempotency-Key": "scale-" + uuid.uuid4().hex}
    first = stack.call("POST", path, token=owner.access_token, json={"instances": 3}, headers=key)
    assert first.status_code == 202, first.text
    replay = stack.call("POST", path, token=owner.access_token, json={"instances": 3}, headers=key)
    assert replay.status_code == 202, replay.text
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json()
    assert stack.get_cluster(owner, cluster["id"])["generation"] == 2
    assert len(stack.listing(cluster_path(owner.org_id, cluster["id"]) + "/operations", owner.access_token)) == 2

    other = stack.call("POST", path, token=owner.access_token, json={"instances": 4}, headers=key)
    assert other.status_code == 422, other.text
    unchanged = stack.get_cluster(owner, cluster["id"])
    assert (unchanged["instances"], unchanged["generation"]) == (3, 2)


def test_different_users_use_the_same_idempotency_key_independently(stack: Stack, owner: Account) -> None:
    member = stack.join(owner, "member")
    key = {"Idempotency-Key": "shared-" + uuid.uuid4().hex}
    mine = stack.post_cluster(owner, cluster_body(), key)
    theirs = stack.post_cluster(member, cluster_body(), key)
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["cluster"]["id"] != mine.json()["cluster"]["id"]
    assert theirs.json()["operation"]["actor"] == f"user:{member.user_id}"
    assert len(stack.listing(clusters_path(owner.org_id), owner.access_token)) == 2


def test_idempotent_replay_is_authorized_again(stack: Stack, owner: Account) -> None:
    member = stack.join(owner, "member")
    body, key = cluster_body(), {"Idempotency-Key": "removed-" + uuid.uuid4().hex}
    assert stack.post_cluster(member, body, key).status_code == 202
    removed = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", token=owner.access_token)
    assert removed.status_code == 204, removed.text

    replay = stack.post_cluster(member, body, key)
    assert replay.status_code == 404, replay.text
    assert "Idempotent-Replayed" not in replay.headers


# ----------------------------------------------------------------------------------------------- secrets


def test_no_plaintext_password_or_s3_secret_is_stored(stack: Stack, owner: Account) -> None:
    cold, frozen = "cold-at-rest-" + uuid.uuid4().hex, "frozen-at-rest-" + uuid.uuid4().hex
    cluster = stack.create_cluster(owner, storage_tiers={"cold": s3_target(cold)})["cluster"]
    path = cluster_path(owner.org_id, cluster["id"])
    assert stack.call("PATCH", path, token=owner.access_token,
                      json={"storage_tiers": {"cold": s3_target(cold), "frozen": s3_target(frozen)}}).status_code == 202
    desired = desired_state(stack, cluster["id"])
    assert desired["storage_tiers"]["cold"]["secret_access_key"] == cold
    assert desired["storage_tiers"]["frozen"]["secret_access_key"] == frozen
    password = desired["password"]
    assert len(password) >= 16

    items = stack.table_items()
    assert any((item["pk"]["S"], item["sk"]["S"]) == keys.cluster(cluster["id"]) for item in items)
    stored = json.dumps(items)
    for secret in (password, cold, frozen):
        assert secret not in stored


def test_public_responses_mask_the_s3_secret(stack: Stack, owner: Account) -> None:
    secret = "masked-" + uuid.uuid4().hex
    created = stack.call("POST", clusters_path(owner.org_id), token=owner.access_token,
                         json=cluster_body(storage_tiers={"frozen": s3_target(secret)}))
    cluster_id = created.json()["cluster"]["id"]
    path = cluster_path(owner.org_id, cluster_id)
    answers = [
        created,
        stack.call("GET", path, token=owner.access_token),
        stack.call("GET", clusters_path(owner.org_id), token=owner.access_token),
        stack.call("PATCH", path, token=owner.access_token, json={"storage_tiers": {"cold": s3_target(secret)}}),
        stack.call("POST", path + "/scale", token=owner.access_token, json={"instances": 2}),
    ]
    for response in answers:
        assert response.status_code in (200, 202), response.text
        assert secret not in response.text
        assert S3_MASK in response.text
    assert stack.get_cluster(owner, cluster_id)["storage_tiers"]["cold"]["secret_access_key"] == S3_MASK


def test_credentials_wait_for_an_endpoint_then_match_what_the_agent_got(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, instances=2)["cluster"]
    path = cluster_path(owner.org_id, cluster["id"]) + "/credentials"
    early = stack.call("GET", path, token=owner.access_token)
    assert early.status_code == 409, early.text

    stack.report(cluster["id"], observed_generation=1, phase="ready", ready_instances=2,
                 endpoint={"host": "h.example", "port": 5432})
    password = desired_state(stack, cluster["id"])["password"]
    admin = stack.join(owner, "admin")
    for account in (owner, admin):
        response = stack.call("GET", path, token=account.access_token)
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"] == "no-store"
        credentials = response.json()
        assert set(credentials) == {"host", "port", "database", "username", "password", "uri"}
        assert (credentials["host"], credentials["port"], credentials["password"]) == ("h.example", 5432, password)
        assert credentials["uri"].startswith(f"postgresql://{credentials['username']}:")
        assert credentials["uri"].endswith(f"@h.example:5432/{credentials['database']}")
    for role in ("member", "viewer"):
        refused = stack.call("GET", path, token=stack.join(owner, role).access_token)
        assert refused.status_code == 403, refused.text
        assert password not in refused.text
    assert stack.get_cluster(owner, cluster["id"])["status"] == "running"


# ----------------------------------------------------------------------------------------------- quota setting


def test_org_cluster_quota_setting_limits_live_clusters(tuned_stack: Stack) -> None:
    owner = tuned_stack.register()
    kept = tuned_stack.create_cluster(owner)["cluster"]
    dropped = tuned_stack.create_cluster(owner)["cluster"]
    over = tuned_stack.post_cluster(owner, cluster_body())
    assert over.status_code == 409, over.text
    assert over.json()["error"]["code"] == "quota_exceeded"

    delete_completely(tuned_stack, owner, dropped["id"])

    replacement = tuned_stack.create_cluster(owner)["cluster"]
    live = tuned_stack.listing(clusters_path(owner.org_id), owner.access_token)
    assert {c["id"] for c in live} == {kept["id"], replacement["id"]}
