"""Who may do what to clusters: every cluster route (the catalog excepted) for each role of the organization
and for an outsider (a user of another organization), as one explicit matrix; and which token opens which API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Account, Stack, cluster_body, cluster_path, clusters_path

WHO = ("owner", "admin", "member", "viewer", "outsider")

# The expected status of each route for each caller; each cell is a test below.
MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    #                    owner admin member viewer outsider
    "list clusters":     (200,  200,  200,   200,   404),
    "get cluster":       (200,  200,  200,   200,   404),
    "list operations":   (200,  200,  200,   200,   404),
    "get operation":     (200,  200,  200,   200,   404),
    "get metrics":       (200,  200,  200,   200,   404),
    "create cluster":    (202,  202,  202,   403,   404),
    "patch cluster":     (202,  202,  202,   403,   404),
    "scale cluster":     (202,  202,  202,   403,   404),
    "delete cluster":    (202,  202,  403,   403,   404),
    "get credentials":   (200,  200,  403,   403,   404),
}
CELLS = [(route, who, statuses[WHO.index(who)]) for route, statuses in MATRIX.items() for who in WHO]


@dataclass
class Team:
    """One organization with a user in each role, an outsider who owns another organization, and a
    running cluster (endpoint reported, one metrics sample) that every read and change targets."""

    owner: Account
    admin: Account
    member: Account
    viewer: Account
    outsider: Account
    cluster: dict[str, Any]
    operation: dict[str, Any]

    def __getitem__(self, who: str) -> Account:
        return getattr(self, who)


@pytest.fixture(scope="module")
def team(stack: Stack) -> Team:
    owner = stack.register(organization_name="Role Matrix")
    created = stack.create_cluster(owner, name="subject")
    cluster_id = created["cluster"]["id"]
    stack.report(cluster_id, observed_generation=1, phase="ready", ready_instances=1,
                 endpoint={"host": "subject.example", "port": 5432})
    sample = stack.call("POST", "/v1/agent/metrics", token=stack.agent(), json={"samples": [
        {"cluster_id": cluster_id, "at": stack.now() - 5, "values": {"cpu_percent": 12.5}},
    ]})
    assert sample.status_code == 200, sample.text
    return Team(
        owner=owner, admin=stack.join(owner, "admin"), member=stack.join(owner, "member"),
        viewer=stack.join(owner, "viewer"), outsider=stack.register(organization_name="Outside"),
        cluster=created["cluster"], operation=created["operation"],
    )


CLUSTERS, CLUSTER = "/v1/orgs/{org_id}/clusters", "/v1/orgs/{org_id}/clusters/{cluster_id}"
ROUTES: dict[str, tuple[str, str, Any]] = {
    "list clusters": ("GET", CLUSTERS, None),
    "get cluster": ("GET", CLUSTER, None),
    "list operations": ("GET", CLUSTER + "/operations", None),
    "get operation": ("GET", CLUSTER + "/operations/{operation_id}", None),
    "get metrics": ("GET", CLUSTER + "/metrics", None),
    "create cluster": ("POST", CLUSTERS, "a new cluster"),
    "patch cluster": ("PATCH", CLUSTER, {"ip_allowlist": ["192.0.2.0/24"]}),
    "scale cluster": ("POST", CLUSTER + "/scale", {"instances": 2}),
    "delete cluster": ("DELETE", CLUSTER, None),
    "get credentials": ("GET", CLUSTER + "/credentials", None),
}


def request_for(stack: Stack, team: Team, route: str) -> tuple[str, str, Any, str | None]:
    """(method, path, body, target cluster id) of `route` in the team's organization.

    Every route targets the team's cluster, except a delete, which gets a fresh cluster of its own."""
    method, template, body = ROUTES[route]
    cluster_id = stack.create_cluster(team.owner)["cluster"]["id"] if route == "delete cluster" else team.cluster["id"]
    path = template.format(org_id=team.owner.org_id, cluster_id=cluster_id, operation_id=team.operation["id"])
    if body == "a new cluster":
        body = cluster_body()
    return method, path, body, cluster_id if "{cluster_id}" in template else None


@pytest.mark.parametrize(("route", "who", "expected"), CELLS, ids=[f"{r}-{w}" for r, w, _ in CELLS])
def test_cluster_route_answers_each_role_as_the_matrix_says(stack: Stack, team: Team, route: str, who: str,
                                                            expected: int) -> None:
    method, path, body, target = request_for(stack, team, route)
    before = stack.get_cluster(team.owner, target) if target else None

    response = stack.call(method, path, token=team[who].access_token, json=body)

    assert response.status_code == expected, response.text
    if expected >= 400:
        assert response.json()["error"]["code"] == {403: "forbidden", 404: "not_found"}[expected]
        assert "subject.example" not in response.text
        if before is not None:
            assert stack.get_cluster(team.owner, target) == before
        return
    answer = response.json()
    if route == "list clusters":
        assert team.cluster["id"] in [c["id"] for c in answer["items"]]
    elif route == "get cluster":
        assert answer["id"] == team.cluster["id"]
    elif route == "list operations":
        assert team.operation["id"] in [op["id"] for op in answer["items"]]
    elif route == "get operation":
        assert answer["id"] == team.operation["id"]
    elif route == "get metrics":
        assert answer["latest"]["values"] == {"cpu_percent": 12.5}
    elif route == "get credentials":
        assert (answer["host"], answer["port"]) == ("subject.example", 5432) and answer["password"]
    else:
        assert answer["operation"]["actor"] == f"user:{team[who].user_id}"
        assert answer["operation"]["kind"] == {"create cluster": "create", "patch cluster": "update",
                                               "scale cluster": "scale", "delete cluster": "delete"}[route]
        if before is not None:
            assert stack.get_cluster(team.owner, target)["generation"] == before["generation"] + 1
        if route == "delete cluster":  # finish the deletion, so the matrix does not use up the org's quota
            stack.report(target, observed_generation=answer["cluster"]["generation"], phase="deleted",
                         ready_instances=0)


def test_matrix_covers_every_cluster_route(stack: Stack) -> None:
    spec = stack.call("GET", "/openapi.json").json()
    documented = {(method.upper(), path) for path, item in spec["paths"].items() if path.startswith(CLUSTERS)
                  for method in item if method in ("get", "put", "post", "patch", "delete")}
    assert documented == {(method, template) for method, template, _ in ROUTES.values()}
    assert set(ROUTES) == set(MATRIX)


def test_member_may_not_turn_deletion_protection_off(stack: Stack, team: Team) -> None:
    guarded = stack.create_cluster(team.owner, deletion_protection=True)["cluster"]
    path = cluster_path(team.owner.org_id, guarded["id"])
    refused = stack.call("PATCH", path, token=team.member.access_token, json={"deletion_protection": False})
    assert refused.status_code == 403, refused.text
    assert stack.get_cluster(team.owner, guarded["id"])["deletion_protection"] is True
    allowed = stack.call("PATCH", path, token=team.admin.access_token, json={"deletion_protection": False})
    assert allowed.status_code == 202, allowed.text


def test_outsider_cannot_reach_a_cluster_through_their_own_organization(stack: Stack, team: Team) -> None:
    path = cluster_path(team.outsider.org_id, team.cluster["id"])
    for method, suffix, body in (("GET", "", None), ("GET", "/credentials", None), ("GET", "/operations", None),
                                 ("PATCH", "", {"name": "hijacked"}), ("POST", "/scale", {"instances": 3}),
                                 ("DELETE", "", None)):
        response = stack.call(method, path + suffix, token=team.outsider.access_token, json=body)
        assert response.status_code == 404, (method, suffix, response.text)
    assert stack.get_cluster(team.owner, team.cluster["id"])["name"] == "subject"


@pytest.mark.parametrize("path", ["/v1/agent/clusters", "/v1/agent/clusters/{cluster}"])
def test_user_token_on_an_agent_route_is_unauthorized(stack: Stack, team: Team, path: str) -> None:
    response = stack.call("GET", path.format(cluster=team.cluster["id"]), token=team.owner.access_token)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


def test_user_token_cannot_report_agent_status(stack: Stack, team: Team) -> None:
    response = stack.call("POST", f"/v1/agent/clusters/{team.cluster['id']}/status", token=team.owner.access_token,
                          json={"observed_generation": 1, "phase": "failed", "ready_instances": 0})
    assert response.status_code == 401, response.text
    assert stack.get_cluster(team.owner, team.cluster["id"])["status"] != "failed"


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/{cluster}"), ("GET", "/{cluster}/credentials"),
                                                ("POST", "/{cluster}/scale"), ("DELETE", "/{cluster}")])
def test_agent_token_on_a_user_route_is_unauthorized(stack: Stack, team: Team, method: str, suffix: str) -> None:
    path = clusters_path(team.owner.org_id) + suffix.format(cluster=team.cluster["id"])
    response = stack.call(method, path, token=stack.agent(), json={"instances": 3} if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_cluster_routes_need_a_valid_user_token(stack: Stack, team: Team, token: str | None) -> None:
    response = stack.call("GET", cluster_path(team.owner.org_id, team.cluster["id"]), token=token)
    assert response.status_code == 401, response.text
