"""List cursors are opaque and tamper-evident: only a cursor this API issued, for this list and this caller, works.

Before, a cursor was base64 JSON of the start key, checked only for its partition value: a crafted one such
as `{"pk": "USER#<own id>"}` reached DynamoDB as the start key of another index and answered 500.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest

from conftest import Account, Stack, cluster_path, clusters_path


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@dataclass
class Lists:
    owner: Account
    other: Account  # a member of the same organization
    agent: str
    paths: dict[str, str]  # list name -> path (two or more items each, so limit=1 gives a cursor)

    def token(self, name: str, account: Account) -> str:
        return self.agent if name == "agent clusters" else account.access_token


@pytest.fixture(scope="module")
def lists(stack: Stack) -> Lists:
    owner = stack.register()
    other = stack.join(owner, "admin")
    second_org = stack.register()
    accepted = stack.call("POST", "/v1/invitations/accept", token=owner.access_token,
                          json={"token": stack.invite(second_org, email=owner.email)["token"]})
    assert accepted.status_code == 200, accepted.text
    stack.invite(owner)
    stack.invite(owner)
    clusters = [stack.create_cluster(owner)["cluster"] for _ in range(2)]
    scaled = stack.call("POST", cluster_path(owner.org_id, clusters[0]["id"]) + "/scale", token=owner.access_token,
                        json={"instances": 2})
    assert scaled.status_code == 202, scaled.text
    return Lists(owner=owner, other=other, agent=stack.agent("nyc1"), paths={
        "orgs": "/v1/orgs",
        "members": f"/v1/orgs/{owner.org_id}/members",
        "invitations": f"/v1/orgs/{owner.org_id}/invitations",
        "clusters": clusters_path(owner.org_id),
        "operations": cluster_path(owner.org_id, clusters[0]["id"]) + "/operations",
        "agent clusters": "/v1/agent/clusters",
    })


LISTS = ["orgs", "members", "invitations", "clusters", "operations", "agent clusters"]


def first_cursor(stack: Stack, lists: Lists, name: str) -> str:
    page = stack.call("GET", lists.paths[name] + "?limit=1", token=lists.token(name, lists.owner))
    assert page.status_code == 200, page.text
    cursor = page.json().get("next_cursor")
    assert cursor, page.json()
    return str(cursor)


def assert_invalid_cursor(response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_cursor"
    assert [d["field"] for d in error["details"]] == ["cursor"]


def crafted(lists: Lists) -> list[str]:
    """Start keys a client could write by hand: the old format, other partitions, other indexes, junk types."""
    user = lists.owner.user_id
    return [
        b64({"pk": f"USER#{user}"}),
        b64({"pk": f"USER#{user}", "sk": "PROFILE"}),
        b64({"pk": f"ORG#{lists.owner.org_id}", "sk": "ORG", "gsi1pk": f"USER#{user}", "gsi1sk": "x"}),
        b64({"pk": {"S": f"USER#{user}"}, "sk": {"N": "1"}}),
        b64([1, 2, 3]),
        "not-base64!",
        "a.b",
        ".",
    ]


@pytest.mark.parametrize("name", LISTS)
def test_a_crafted_cursor_is_invalid_not_a_server_error(stack: Stack, lists: Lists, name: str) -> None:
    for cursor in crafted(lists):
        assert_invalid_cursor(stack.call("GET", f"{lists.paths[name]}?cursor={cursor}", token=lists.token(name, lists.owner)))


@pytest.mark.parametrize("name", LISTS)
def test_an_issued_cursor_pages_on_and_a_tampered_one_is_invalid(stack: Stack, lists: Lists, name: str) -> None:
    cursor = first_cursor(stack, lists, name)
    token = lists.token(name, lists.owner)
    assert stack.call("GET", f"{lists.paths[name]}?limit=1&cursor={cursor}", token=token).status_code == 200
    payload, _, mac = cursor.partition(".")
    middle = len(mac) // 2
    flipped = mac[:middle] + ("A" if mac[middle] != "A" else "B") + mac[middle + 1:]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    padding_bits = mac[:-1] + last[last.index(mac[-1]) ^ 1]  # the same bytes spelled another way
    for tampered in (f"{payload}.{flipped}", f"{payload}.{padding_bits}", payload, f"{payload[:-2]}.{mac}", cursor + "x"):
        assert_invalid_cursor(stack.call("GET", f"{lists.paths[name]}?limit=1&cursor={tampered}", token=token))


@pytest.mark.parametrize(("issued_for", "used_on"), [
    ("orgs", "members"), ("members", "invitations"), ("clusters", "operations"), ("operations", "clusters"),
    ("clusters", "agent clusters"), ("agent clusters", "clusters"),
])
def test_a_cursor_of_another_list_is_invalid(stack: Stack, lists: Lists, issued_for: str, used_on: str) -> None:
    cursor = first_cursor(stack, lists, issued_for)
    assert_invalid_cursor(stack.call("GET", f"{lists.paths[used_on]}?limit=1&cursor={cursor}",
                                     token=lists.token(used_on, lists.owner)))


@pytest.mark.parametrize("name", ["members", "invitations", "clusters", "operations"])
def test_a_cursor_issued_to_another_caller_is_invalid(stack: Stack, lists: Lists, name: str) -> None:
    """The same list read by another member of the organization: the cursor was not issued to them."""
    cursor = first_cursor(stack, lists, name)
    assert_invalid_cursor(stack.call("GET", f"{lists.paths[name]}?limit=1&cursor={cursor}",
                                     token=lists.other.access_token))


def test_a_cluster_list_cursor_is_bound_to_its_status_filter(stack: Stack, lists: Lists) -> None:
    cursor = first_cursor(stack, lists, "clusters")
    assert_invalid_cursor(stack.call("GET", f"{lists.paths['clusters']}?status=pending&cursor={cursor}",
                                     token=lists.owner.access_token))


def test_metrics_take_no_cursor(stack: Stack, lists: Lists) -> None:
    """The metrics list is not paged: a cursor is refused rather than silently ignored."""
    path = lists.paths["operations"].replace("/operations", "/metrics")
    assert stack.call("GET", path, token=lists.owner.access_token).status_code == 200
    response = stack.call("GET", path + "?cursor=abc", token=lists.owner.access_token)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["cursor"]


def test_a_cursor_longer_than_documented_is_invalid(stack: Stack, lists: Lists) -> None:
    assert_invalid_cursor(stack.call("GET", "/v1/orgs?cursor=" + "A" * 2049, token=lists.owner.access_token))
