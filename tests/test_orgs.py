"""Organizations and members over HTTP: listing, reading, renaming, roles, removal, the last owner, the role matrix."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Account, Stack

ROLES = ("owner", "admin", "member", "viewer")


@dataclass
class Team:
    """One organization with a user in each role, and an outsider who owns another organization."""

    owner: Account
    admin: Account
    member: Account
    viewer: Account
    outsider: Account

    @property
    def org_id(self) -> str:
        return self.owner.org_id

    def __getitem__(self, who: str) -> Account:
        return getattr(self, who)


@pytest.fixture(scope="module")
def team(stack: Stack) -> Team:
    owner = stack.register(organization_name="Matrix Org")
    return Team(
        owner=owner,
        admin=stack.join(owner, "admin"),
        member=stack.join(owner, "member"),
        viewer=stack.join(owner, "viewer"),
        outsider=stack.register(organization_name="Elsewhere Inc"),
    )


def roles_in(stack: Stack, org_owner: Account) -> dict[str, str]:
    """user_id -> role for every member of `org_owner`'s organization, as its owner sees it."""
    members = stack.listing(f"/v1/orgs/{org_owner.org_id}/members", org_owner.access_token)
    return {m["user_id"]: m["role"] for m in members}


def org_name(stack: Stack, account: Account) -> str:
    response = stack.call("GET", f"/v1/orgs/{account.org_id}", token=account.access_token)
    assert response.status_code == 200, response.text
    return str(response.json()["name"])


def invitation_ids(stack: Stack, org_owner: Account) -> set[str]:
    return {i["id"] for i in stack.listing(f"/v1/orgs/{org_owner.org_id}/invitations", org_owner.access_token)}


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


# --- the role matrix -------------------------------------------------------------------------------

@dataclass
class Attempt:
    """One request on an organization's route, and how to tell afterwards whether it changed anything."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    took_effect: Callable[[], bool] | None = None


def _get_org(stack: Stack, org_owner: Account) -> Attempt:
    return Attempt("GET", f"/v1/orgs/{org_owner.org_id}")


def _rename_org(stack: Stack, org_owner: Account) -> Attempt:
    name = f"Renamed {uuid.uuid4().hex[:8]}"
    return Attempt("PATCH", f"/v1/orgs/{org_owner.org_id}", {"name": name},
                   lambda: org_name(stack, org_owner) == name)


def _list_members(stack: Stack, org_owner: Account) -> Attempt:
    return Attempt("GET", f"/v1/orgs/{org_owner.org_id}/members")


def _change_role(stack: Stack, org_owner: Account) -> Attempt:
    subject = stack.join(org_owner, "viewer")
    return Attempt("PATCH", f"/v1/orgs/{org_owner.org_id}/members/{subject.user_id}", {"role": "member"},
                   lambda: roles_in(stack, org_owner)[subject.user_id] == "member")


def _remove_member(stack: Stack, org_owner: Account) -> Attempt:
    subject = stack.join(org_owner, "viewer")
    return Attempt("DELETE", f"/v1/orgs/{org_owner.org_id}/members/{subject.user_id}", None,
                   lambda: subject.user_id not in roles_in(stack, org_owner))


def _invite(stack: Stack, org_owner: Account) -> Attempt:
    email = f"matrix-{uuid.uuid4().hex[:12]}@example.com"
    path = f"/v1/orgs/{org_owner.org_id}/invitations"
    return Attempt("POST", path, {"email": email, "role": "viewer"},
                   lambda: email in {i["email"] for i in stack.listing(path, org_owner.access_token)})


def _list_invitations(stack: Stack, org_owner: Account) -> Attempt:
    return Attempt("GET", f"/v1/orgs/{org_owner.org_id}/invitations")


def _revoke_invitation(stack: Stack, org_owner: Account) -> Attempt:
    invitation_id = stack.invite(org_owner, role="viewer")["id"]
    return Attempt("DELETE", f"/v1/orgs/{org_owner.org_id}/invitations/{invitation_id}", None,
                   lambda: invitation_id not in invitation_ids(stack, org_owner))


ROUTES: dict[str, Callable[[Stack, Account], Attempt]] = {
    "GET org": _get_org,
    "PATCH org": _rename_org,
    "GET members": _list_members,
    "PATCH member": _change_role,
    "DELETE member": _remove_member,
    "POST invitations": _invite,
    "GET invitations": _list_invitations,
    "DELETE invitation": _revoke_invitation,
}

# Written out by hand on purpose: this is the specification, not a copy of chalicelib.orgs.PERMISSIONS.
EXPECTED: dict[str, dict[str, int]] = {
    "GET org":           {"owner": 200, "admin": 200, "member": 200, "viewer": 200, "outsider": 404},
    "PATCH org":         {"owner": 200, "admin": 200, "member": 403, "viewer": 403, "outsider": 404},
    "GET members":       {"owner": 200, "admin": 200, "member": 200, "viewer": 200, "outsider": 404},
    "PATCH member":      {"owner": 200, "admin": 200, "member": 403, "viewer": 403, "outsider": 404},
    "DELETE member":     {"owner": 204, "admin": 204, "member": 403, "viewer": 403, "outsider": 404},
    "POST invitations":  {"owner": 201, "admin": 201, "member": 403, "viewer": 403, "outsider": 404},
    "GET invitations":   {"owner": 200, "admin": 200, "member": 403, "viewer": 403, "outsider": 404},
    "DELETE invitation": {"owner": 204, "admin": 204, "member": 403, "viewer": 403, "outsider": 404},
}
ERROR_CODES = {403: "forbidden", 404: "not_found"}


def test_matrix_covers_every_route() -> None:
    assert set(EXPECTED) == set(ROUTES)
    assert all(set(row) == {*ROLES, "outsider"} for row in EXPECTED.values())


@pytest.mark.parametrize(
    ("route", "caller", "expected"),
    [(route, caller, status) for route, row in EXPECTED.items() for caller, status in row.items()],
    ids=lambda value: str(value).replace(" ", "-"),
)
def test_role_matrix(stack: Stack, team: Team, route: str, caller: str, expected: int) -> None:
    attempt = ROUTES[route](stack, team.owner)
    response = stack.call(attempt.method, attempt.path, token=team[caller].access_token, json=attempt.body)
    assert response.status_code == expected, response.text
    if expected in ERROR_CODES:
        assert error_code(response) == ERROR_CODES[expected]
    if attempt.took_effect is not None:
        assert attempt.took_effect() is (expected < 400)


@pytest.mark.parametrize("route", list(ROUTES), ids=lambda value: value.replace(" ", "-"))
def test_viewer_of_one_org_gets_404_on_every_route_of_another(stack: Stack, team: Team, route: str) -> None:
    attempt = ROUTES[route](stack, team.outsider)
    response = stack.call(attempt.method, attempt.path, token=team.viewer.access_token, json=attempt.body)
    assert response.status_code == 404, response.text
    assert error_code(response) == "not_found"
    if attempt.took_effect is not None:
        assert attempt.took_effect() is False


def test_another_orgs_404_is_indistinguishable_from_a_missing_org(stack: Stack, team: Team) -> None:
    existing = stack.call("GET", f"/v1/orgs/{team.outsider.org_id}", token=team.viewer.access_token)
    missing = stack.call("GET", "/v1/orgs/org_doesnotexist", token=team.viewer.access_token)
    assert existing.status_code == missing.status_code == 404
    assert existing.json()["error"]["message"] == missing.json()["error"]["message"]


def test_org_routes_require_a_bearer_token(stack: Stack, team: Team) -> None:
    for path in ("/v1/orgs", f"/v1/orgs/{team.org_id}", f"/v1/orgs/{team.org_id}/members"):
        response = stack.call("GET", path)
        assert response.status_code == 401, (path, response.text)


# --- organizations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_get_org_returns_it_with_the_callers_role(stack: Stack, team: Team, role: str) -> None:
    response = stack.call("GET", f"/v1/orgs/{team.org_id}", token=team[role].access_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == team.org_id
    assert body["role"] == role
    assert body["name"]


def test_list_mine_shows_each_org_with_my_role(stack: Stack, team: Team) -> None:
    for role in ROLES:
        orgs = stack.listing("/v1/orgs", team[role].access_token)
        assert [(o["id"], o["role"]) for o in orgs] == [(team.org_id, role)]


def test_list_mine_paginates_with_limit_and_cursor(stack: Stack) -> None:
    user = stack.register(organization_name="Home")
    hosts = [stack.register(organization_name=f"Host {n}") for n in (1, 2)]
    for host, role in zip(hosts, ("admin", "viewer")):
        token = stack.invite(host, role=role, email=user.email)["token"]
        accepted = stack.call("POST", "/v1/invitations/accept", token=user.access_token, json={"token": token})
        assert accepted.status_code == 200, accepted.text

    first = stack.call("GET", "/v1/orgs?limit=2", token=user.access_token)
    assert first.status_code == 200, first.text
    assert len(first.json()["items"]) == 2
    cursor = first.json()["next_cursor"]
    assert cursor
    second = stack.call("GET", f"/v1/orgs?limit=2&cursor={cursor}", token=user.access_token)
    assert second.status_code == 200, second.text
    assert len(second.json()["items"]) == 1
    assert second.json().get("next_cursor") is None

    seen = {o["id"]: o["role"] for o in first.json()["items"] + second.json()["items"]}
    assert seen == {user.org_id: "owner", hosts[0].org_id: "admin", hosts[1].org_id: "viewer"}


def test_a_cursor_from_another_users_listing_is_rejected(stack: Stack, team: Team) -> None:
    user = stack.register()
    token = stack.invite(team.owner, role="viewer", email=user.email)["token"]
    accepted = stack.call("POST", "/v1/invitations/accept", token=user.access_token, json={"token": token})
    assert accepted.status_code == 200, accepted.text
    cursor = stack.call("GET", "/v1/orgs?limit=1", token=user.access_token).json()["next_cursor"]
    assert cursor

    response = stack.call("GET", f"/v1/orgs?limit=1&cursor={cursor}", token=team.outsider.access_token)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["cursor"]


@pytest.mark.parametrize("limit", ["0", "101", "many"])
def test_list_mine_rejects_a_bad_limit(stack: Stack, team: Team, limit: str) -> None:
    response = stack.call("GET", f"/v1/orgs?limit={limit}", token=team.viewer.access_token)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["limit"]


def test_rename_is_visible_to_every_member(stack: Stack, team: Team) -> None:
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}", token=team.admin.access_token,
                          json={"name": "  Acme Data  "})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Acme Data"
    assert response.json()["role"] == "admin"
    assert org_name(stack, team.viewer) == "Acme Data"
    assert [o["name"] for o in stack.listing("/v1/orgs", team.member.access_token)] == ["Acme Data"]


@pytest.mark.parametrize(
    "body", [{"name": ""}, {"name": "   "}, {"name": "x" * 101}, {}, {"name": 7}, {"name": "ok", "extra": 1}],
)
def test_rename_rejects_an_invalid_body_with_details(stack: Stack, team: Team, body: dict[str, Any]) -> None:
    before = org_name(stack, team.owner)
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}", token=team.owner.access_token, json=body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert response.json()["error"]["details"]
    assert org_name(stack, team.owner) == before


# --- members ---------------------------------------------------------------------------------------

def test_members_list_shows_everyone_with_email_name_and_role(stack: Stack, team: Team) -> None:
    members = {m["user_id"]: m for m in stack.listing(f"/v1/orgs/{team.org_id}/members", team.viewer.access_token)}
    for role in ROLES:
        account = team[role]
        assert members[account.user_id]["role"] == role
        assert members[account.user_id]["email"] == account.email
        assert members[account.user_id]["name"]
    assert team.outsider.user_id not in members


def test_members_list_paginates_without_gaps_or_duplicates(stack: Stack, team: Team) -> None:
    everyone = stack.listing(f"/v1/orgs/{team.org_id}/members", team.owner.access_token, limit=100)
    paged = stack.listing(f"/v1/orgs/{team.org_id}/members", team.owner.access_token, limit=2)
    assert len(everyone) >= 4
    assert sorted(m["user_id"] for m in paged) == sorted(m["user_id"] for m in everyone)


def test_role_change_takes_effect_on_permissions(stack: Stack, team: Team) -> None:
    subject = stack.join(team.owner, "viewer")
    invitations = f"/v1/orgs/{team.org_id}/invitations"
    assert stack.call("GET", invitations, token=subject.access_token).status_code == 403

    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=team.owner.access_token,
                          json={"role": "admin"})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == subject.user_id
    assert response.json()["role"] == "admin"
    assert stack.call("GET", invitations, token=subject.access_token).status_code == 200
    assert roles_in(stack, team.owner)[subject.user_id] == "admin"


def test_admin_cannot_grant_the_owner_role(stack: Stack, team: Team) -> None:
    subject = stack.join(team.owner, "member")
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=team.admin.access_token,
                          json={"role": "owner"})
    assert response.status_code == 403, response.text
    assert roles_in(stack, team.owner)[subject.user_id] == "member"


def test_admin_cannot_promote_themselves_to_owner(stack: Stack, team: Team) -> None:
    admin = stack.join(team.owner, "admin")
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}/members/{admin.user_id}", token=admin.access_token,
                          json={"role": "owner"})
    assert response.status_code == 403, response.text
    assert roles_in(stack, team.owner)[admin.user_id] == "admin"


@pytest.mark.parametrize(("method", "body"), [("PATCH", {"role": "member"}), ("DELETE", None)])
def test_admin_cannot_demote_or_remove_an_owner(
    stack: Stack, owner: Account, method: str, body: dict[str, str] | None,
) -> None:
    admin = stack.join(owner, "admin")
    response = stack.call(method, f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=admin.access_token,
                          json=body)
    assert response.status_code == 403, response.text
    assert roles_in(stack, owner)[owner.user_id] == "owner"


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_member_and_viewer_cannot_raise_their_own_role(stack: Stack, team: Team, role: str) -> None:
    subject = stack.join(team.owner, role)
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=subject.access_token,
                          json={"role": "admin"})
    assert response.status_code == 403, response.text
    assert roles_in(stack, team.owner)[subject.user_id] == role


@pytest.mark.parametrize("role", ["superuser", "Owner", "", None, 3])
def test_unknown_role_is_rejected_with_details(stack: Stack, team: Team, role: Any) -> None:
    response = stack.call("PATCH", f"/v1/orgs/{team.org_id}/members/{team.viewer.user_id}",
                          token=team.owner.access_token, json={"role": role})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["role"]
    assert roles_in(stack, team.owner)[team.viewer.user_id] == "viewer"


@pytest.mark.parametrize(("method", "body"), [("PATCH", {"role": "viewer"}), ("DELETE", None)])
def test_unknown_user_id_is_404(stack: Stack, team: Team, method: str, body: dict[str, str] | None) -> None:
    response = stack.call(method, f"/v1/orgs/{team.org_id}/members/usr_doesnotexist", token=team.owner.access_token,
                          json=body)
    assert response.status_code == 404, response.text
    assert error_code(response) == "not_found"


@pytest.mark.parametrize(("method", "body"), [("PATCH", {"role": "viewer"}), ("DELETE", None)])
def test_a_user_of_another_org_is_not_a_member_here(
    stack: Stack, team: Team, method: str, body: dict[str, str] | None,
) -> None:
    response = stack.call(method, f"/v1/orgs/{team.org_id}/members/{team.outsider.user_id}",
                          token=team.owner.access_token, json=body)
    assert response.status_code == 404, response.text
    assert org_name(stack, team.outsider)  # the outsider still belongs to their own organization


def test_removed_member_loses_access_at_once(stack: Stack, team: Team) -> None:
    subject = stack.join(team.owner, "member")
    assert stack.call("GET", f"/v1/orgs/{team.org_id}", token=subject.access_token).status_code == 200

    response = stack.call("DELETE", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=team.admin.access_token)
    assert response.status_code == 204, response.text
    assert stack.call("GET", f"/v1/orgs/{team.org_id}", token=subject.access_token).status_code == 404
    assert stack.call("GET", f"/v1/orgs/{team.org_id}/members", token=subject.access_token).status_code == 404
    assert stack.listing("/v1/orgs", subject.access_token) == []
    again = stack.call("DELETE", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=team.admin.access_token)
    assert again.status_code == 404, again.text


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_member_may_leave(stack: Stack, team: Team, role: str) -> None:
    subject = stack.join(team.owner, role)
    response = stack.call("DELETE", f"/v1/orgs/{team.org_id}/members/{subject.user_id}", token=subject.access_token)
    assert response.status_code == 204, response.text
    assert subject.user_id not in roles_in(stack, team.owner)
    assert stack.call("GET", f"/v1/orgs/{team.org_id}", token=subject.access_token).status_code == 404
    assert stack.listing("/v1/orgs", subject.access_token) == []


# --- the last owner (each test on a fresh organization) -------------------------------------------

def test_last_owner_cannot_demote_themselves(stack: Stack, owner: Account) -> None:
    response = stack.call("PATCH", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token,
                          json={"role": "admin"})
    assert response.status_code == 409, response.text
    assert error_code(response) == "conflict"
    assert roles_in(stack, owner) == {owner.user_id: "owner"}


def test_last_owner_cannot_leave(stack: Stack, owner: Account) -> None:
    stack.join(owner, "admin")
    response = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token)
    assert response.status_code == 409, response.text
    assert error_code(response) == "conflict"
    assert roles_in(stack, owner)[owner.user_id] == "owner"


def test_one_of_two_owners_can_be_demoted_but_not_the_remaining_one(stack: Stack, owner: Account) -> None:
    second = stack.join(owner, "owner")
    demoted = stack.call("PATCH", f"/v1/orgs/{owner.org_id}/members/{second.user_id}", token=owner.access_token,
                         json={"role": "admin"})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["role"] == "admin"

    last = stack.call("PATCH", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token,
                      json={"role": "admin"})
    assert last.status_code == 409, last.text
    assert roles_in(stack, owner) == {owner.user_id: "owner", second.user_id: "admin"}


def test_one_of_two_owners_can_be_removed_but_not_the_remaining_one(stack: Stack, owner: Account) -> None:
    second = stack.join(owner, "owner")
    removed = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=second.access_token)
    assert removed.status_code == 204, removed.text

    for method, body in (("DELETE", None), ("PATCH", {"role": "member"})):
        response = stack.call(method, f"/v1/orgs/{owner.org_id}/members/{second.user_id}", token=second.access_token,
                              json=body)
        assert response.status_code == 409, (method, response.text)
    assert roles_in(stack, second) == {second.user_id: "owner"}


def test_owner_may_leave_when_another_owner_remains(stack: Stack, owner: Account) -> None:
    second = stack.join(owner, "owner")
    response = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token)
    assert response.status_code == 204, response.text
    assert stack.call("GET", f"/v1/orgs/{owner.org_id}", token=owner.access_token).status_code == 404
    assert roles_in(stack, second) == {second.user_id: "owner"}


def test_promoting_to_owner_lets_the_previous_owner_step_down(stack: Stack, owner: Account) -> None:
    admin = stack.join(owner, "admin")
    promoted = stack.call("PATCH", f"/v1/orgs/{owner.org_id}/members/{admin.user_id}", token=owner.access_token,
                          json={"role": "owner"})
    assert promoted.status_code == 200, promoted.text

    stepped_down = stack.call("PATCH", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token,
                              json={"role": "viewer"})
    assert stepped_down.status_code == 200, stepped_down.text
    assert roles_in(stack, admin) == {owner.user_id: "viewer", admin.user_id: "owner"}
    last = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{admin.user_id}", token=admin.access_token)
    assert last.status_code == 409, last.text


def test_two_owners_leaving_at_once_leave_one_owner(stack: Stack, owner: Account) -> None:
    second = stack.join(owner, "owner")
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def leave(account: Account) -> None:
        barrier.wait()
        response = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{account.user_id}",
                              token=account.access_token)
        statuses[account.user_id] = response.status_code

    threads = [threading.Thread(target=leave, args=(account,)) for account in (owner, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses.values()) == [204, 409]
    stayed = next(account for account in (owner, second) if statuses[account.user_id] == 409)
    assert roles_in(stack, stayed) == {stayed.user_id: "owner"}
    still_last = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{stayed.user_id}", token=stayed.access_token)
    assert still_last.status_code == 409, still_last.text
