"""Invitations over HTTP: creation, the token's single appearance and hashed storage, listing, revocation,
acceptance by a logged-in user, and registration with an invitation token."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from chalicelib.store import keys
from conftest import Account, Stack

SEVEN_DAYS = 7 * 86400


@pytest.fixture(scope="module")
def host(stack: Stack) -> Account:
    """The owner of the organization every invitation in this module is for."""
    return stack.register(organization_name="Inviting Org")


@pytest.fixture(scope="module")
def admin(stack: Stack, host: Account) -> Account:
    return stack.join(host, "admin")


@pytest.fixture(scope="module")
def member(stack: Stack, host: Account) -> Account:
    return stack.join(host, "member")


def new_email() -> str:
    return f"guest-{uuid.uuid4().hex[:12]}@example.com"


def create(stack: Stack, inviter: Account, *, email: str | None = None, role: str = "member") -> Any:
    return stack.call("POST", f"/v1/orgs/{inviter.org_id}/invitations", token=inviter.access_token,
                      json={"email": email or new_email(), "role": role})


def accept(stack: Stack, account: Account, token: str) -> Any:
    return stack.call("POST", "/v1/invitations/accept", token=account.access_token, json={"token": token})


def register_with(stack: Stack, email: str, token: str) -> Any:
    return stack.call("POST", "/v1/auth/register", json={
        "email": email, "password": "a fine long password", "name": "Invited", "invitation_token": token,
    })


def pending(stack: Stack, account: Account) -> list[dict[str, Any]]:
    """The pending invitations of `account`'s organization, as `account` lists them."""
    return stack.listing(f"/v1/orgs/{account.org_id}/invitations", account.access_token)


def role_of(stack: Stack, org_owner: Account, user_id: str) -> str | None:
    response = stack.call("GET", f"/v1/orgs/{org_owner.org_id}/members?limit=100", token=org_owner.access_token)
    assert response.status_code == 200, response.text
    assert response.json().get("next_cursor") is None
    return next((m["role"] for m in response.json()["items"] if m["user_id"] == user_id), None)


def my_orgs(stack: Stack, account: Account) -> dict[str, str]:
    response = stack.call("GET", "/v1/orgs?limit=100", token=account.access_token)
    assert response.status_code == 200, response.text
    return {o["id"]: o["role"] for o in response.json()["items"]}


# --- creation --------------------------------------------------------------------------------------

def test_creation_returns_the_invitation_with_its_token_and_a_seven_day_expiry(stack: Stack, host: Account) -> None:
    email = new_email()
    before = stack.now()
    response = create(stack, host, email=email, role="viewer")
    after = stack.now()
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"]
    assert body["email"] == email
    assert body["role"] == "viewer"
    assert isinstance(body["token"], str) and len(body["token"]) >= 43
    assert before + SEVEN_DAYS <= body["expires_at"] <= after + SEVEN_DAYS


def test_the_token_appears_in_the_creation_response_only(stack: Stack, host: Account) -> None:
    created = stack.invite(host, role="viewer")
    listed = {i["id"]: i for i in pending(stack, host)}
    assert created["id"] in listed
    assert listed[created["id"]]["email"] == created["email"]
    assert listed[created["id"]]["role"] == "viewer"
    assert listed[created["id"]]["expires_at"] == created["expires_at"]
    assert all("token" not in item for item in listed.values())
    assert created["token"] not in stack.call("GET", f"/v1/orgs/{host.org_id}/invitations?limit=100",
                                              token=host.access_token).text


def test_the_token_is_stored_only_as_a_hash(stack: Stack, host: Account) -> None:
    created = stack.invite(host)
    token = created["token"]
    secret = token.rsplit(".", 1)[-1]
    item = stack.raw_item(keys.invitation(host.org_id, created["id"]))
    assert item is not None
    assert item["email"]["S"] == created["email"]
    assert item["token_hash"]["S"] == hashlib.sha256(secret.encode()).hexdigest()

    stored = [str(value) for row in stack.table_items() for value in row.values()]
    assert not [value for value in stored if secret in value]


def test_admin_cannot_invite_an_owner(stack: Stack, host: Account, admin: Account) -> None:
    email = new_email()
    response = create(stack, admin, email=email, role="owner")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert email not in {i["email"] for i in pending(stack, host)}


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_admin_can_invite_up_to_admin(stack: Stack, admin: Account, role: str) -> None:
    assert create(stack, admin, role=role).status_code == 201


def test_owner_can_invite_an_owner(stack: Stack, host: Account) -> None:
    assert stack.invite(host, role="owner")["role"] == "owner"


def test_member_cannot_invite(stack: Stack, host: Account, member: Account) -> None:
    email = new_email()
    response = create(stack, member, email=email, role="viewer")
    assert response.status_code == 403, response.text
    assert email not in {i["email"] for i in pending(stack, host)}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "someone@example.com", "role": "superuser"}, "role"),
        ({"email": "not-an-email", "role": "member"}, "email"),
        ({"role": "member"}, "email"),
        ({"email": "someone@example.com", "role": "member", "token": "mine"}, "token"),
    ],
)
def test_invalid_invitation_is_rejected_with_details(
    stack: Stack, host: Account, body: dict[str, str], field: str,
) -> None:
    response = stack.call("POST", f"/v1/orgs/{host.org_id}/invitations", token=host.access_token, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]


def test_invitation_role_defaults_to_member(stack: Stack, host: Account) -> None:
    response = stack.call("POST", f"/v1/orgs/{host.org_id}/invitations", token=host.access_token,
                          json={"email": new_email()})
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "member"


# --- revocation ------------------------------------------------------------------------------------

def test_revoked_invitation_cannot_be_accepted(stack: Stack, host: Account, admin: Account) -> None:
    guest = stack.register()
    created = stack.invite(host, email=guest.email)
    revoked = stack.call("DELETE", f"/v1/orgs/{host.org_id}/invitations/{created['id']}", token=admin.access_token)
    assert revoked.status_code == 204, revoked.text
    assert created["id"] not in {i["id"] for i in pending(stack, host)}

    response = accept(stack, guest, created["token"])
    assert response.status_code == 404, response.text
    assert host.org_id not in my_orgs(stack, guest)
    assert register_with(stack, new_email(), created["token"]).status_code == 404


def test_revoking_twice_or_an_unknown_invitation_is_404(stack: Stack, host: Account) -> None:
    created = stack.invite(host)
    path = f"/v1/orgs/{host.org_id}/invitations/{created['id']}"
    assert stack.call("DELETE", path, token=host.access_token).status_code == 204
    assert stack.call("DELETE", path, token=host.access_token).status_code == 404
    unknown = stack.call("DELETE", f"/v1/orgs/{host.org_id}/invitations/inv_doesnotexist", token=host.access_token)
    assert unknown.status_code == 404, unknown.text


def test_an_invitation_cannot_be_revoked_through_another_org(stack: Stack, host: Account) -> None:
    created = stack.invite(host)
    other = stack.register()
    response = stack.call("DELETE", f"/v1/orgs/{other.org_id}/invitations/{created['id']}", token=other.access_token)
    assert response.status_code == 404, response.text
    assert created["id"] in {i["id"] for i in pending(stack, host)}


# --- acceptance ------------------------------------------------------------------------------------

def test_accepting_joins_the_org_with_the_invited_role(stack: Stack, host: Account) -> None:
    guest = stack.register()
    created = stack.invite(host, email=guest.email, role="viewer")
    response = accept(stack, guest, created["token"])
    assert response.status_code == 200, response.text
    assert response.json()["id"] == host.org_id
    assert response.json()["role"] == "viewer"
    assert response.json()["name"]

    assert role_of(stack, host, guest.user_id) == "viewer"
    assert my_orgs(stack, guest) == {guest.org_id: "owner", host.org_id: "viewer"}
    assert created["id"] not in {i["id"] for i in pending(stack, host)}
    own_view = stack.call("GET", f"/v1/orgs/{host.org_id}", token=guest.access_token)
    assert own_view.status_code == 200 and own_view.json()["role"] == "viewer"


def test_invitation_email_matches_case_insensitively(stack: Stack, host: Account) -> None:
    guest = stack.register()
    created = stack.invite(host, email=guest.email.upper())
    assert accept(stack, guest, created["token"]).status_code == 200
    assert role_of(stack, host, guest.user_id) == "member"


def test_accepting_an_invitation_for_another_email_is_404_and_spends_nothing(stack: Stack, host: Account) -> None:
    intended, intruder = stack.register(), stack.register()
    created = stack.invite(host, email=intended.email)
    response = accept(stack, intruder, created["token"])
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert role_of(stack, host, intruder.user_id) is None
    assert accept(stack, intended, created["token"]).status_code == 200


def test_an_invitation_is_single_use(stack: Stack, host: Account) -> None:
    guest = stack.register()
    created = stack.invite(host, email=guest.email, role="member")
    assert accept(stack, guest, created["token"]).status_code == 200
    left = stack.call("DELETE", f"/v1/orgs/{host.org_id}/members/{guest.user_id}", token=guest.access_token)
    assert left.status_code == 204, left.text

    again = accept(stack, guest, created["token"])
    assert again.status_code in (404, 409), again.text
    assert role_of(stack, host, guest.user_id) is None


def test_a_tampered_token_is_404(stack: Stack, host: Account) -> None:
    guest = stack.register()
    token = stack.invite(host, email=guest.email)["token"]
    org_id, invitation_id, secret = token.split(".")
    tampered = {
        "wrong secret": f"{org_id}.{invitation_id}.{secret[::-1]}",
        "no secret": f"{org_id}.{invitation_id}",
        "empty secret": f"{org_id}.{invitation_id}.",
        "other org": f"{guest.org_id}.{invitation_id}.{secret}",
        "garbage": "x" * 60,
    }
    for what, bad in tampered.items():
        response = accept(stack, guest, bad)
        assert response.status_code == 404, (what, response.text)
    assert accept(stack, guest, token).status_code == 200


def test_an_existing_member_accepting_gets_409_and_keeps_their_role(
    stack: Stack, host: Account, member: Account,
) -> None:
    created = stack.invite(host, email=member.email, role="admin")
    response = accept(stack, member, created["token"])
    assert response.status_code == 409, response.text
    assert role_of(stack, host, member.user_id) == "member"


def test_accepting_requires_login(stack: Stack, host: Account) -> None:
    created = stack.invite(host)
    response = stack.call("POST", "/v1/invitations/accept", json={"token": created["token"]})
    assert response.status_code == 401, response.text


def test_accepting_an_owner_invitation_makes_a_second_owner(stack: Stack, owner: Account) -> None:
    guest = stack.register()
    created = stack.invite(owner, email=guest.email, role="owner")
    assert accept(stack, guest, created["token"]).status_code == 200
    left = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", token=owner.access_token)
    assert left.status_code == 204, left.text
    last = stack.call("DELETE", f"/v1/orgs/{owner.org_id}/members/{guest.user_id}", token=guest.access_token)
    assert last.status_code == 409, last.text


# --- registration with an invitation ---------------------------------------------------------------

def test_registering_with_an_invitation_joins_that_org_and_creates_none(stack: Stack, host: Account) -> None:
    email = new_email()
    created = stack.invite(host, email=email, role="admin")
    response = register_with(stack, email, created["token"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["organization"]["id"] == host.org_id
    assert body["organization"]["role"] == "admin"

    user = Account(user_id=body["user"]["id"], email=email, password="", org_id=host.org_id,
                   access_token=body["access_token"], refresh_token=body["refresh_token"])
    assert my_orgs(stack, user) == {host.org_id: "admin"}
    assert role_of(stack, host, user.user_id) == "admin"
    assert created["id"] not in {i["id"] for i in pending(stack, host)}


def test_a_registration_invitation_is_single_use(stack: Stack, host: Account) -> None:
    email = new_email()
    created = stack.invite(host, email=email)
    first = register_with(stack, email, created["token"])
    assert first.status_code == 201, first.text
    user = Account(user_id=first.json()["user"]["id"], email=email, password="", org_id=host.org_id,
                   access_token=first.json()["access_token"], refresh_token=first.json()["refresh_token"])

    assert register_with(stack, email, created["token"]).status_code in (404, 409)
    assert accept(stack, user, created["token"]).status_code == 404


def test_registering_with_an_invitation_for_another_email_is_404_and_creates_no_account(
    stack: Stack, host: Account,
) -> None:
    intended, other = new_email(), new_email()
    created = stack.invite(host, email=intended)
    response = register_with(stack, other, created["token"])
    assert response.status_code == 404, response.text
    login = stack.call("POST", "/v1/auth/login", json={"email": other, "password": "a fine long password"})
    assert login.status_code == 401, login.text
    assert register_with(stack, intended, created["token"]).status_code == 201


def test_registering_with_a_revoked_invitation_creates_no_account(stack: Stack, host: Account) -> None:
    email = new_email()
    created = stack.invite(host, email=email)
    revoked = stack.call("DELETE", f"/v1/orgs/{host.org_id}/invitations/{created['id']}", token=host.access_token)
    assert revoked.status_code == 204, revoked.text
    assert register_with(stack, email, created["token"]).status_code == 404
    login = stack.call("POST", "/v1/auth/login", json={"email": email, "password": "a fine long password"})
    assert login.status_code == 401, login.text


# --- expiry ----------------------------------------------------------------------------------------

def test_an_expired_invitation_is_gone(own_stack: Any) -> None:
    stack = own_stack()  # invitations live for 7 days
    inviter, guest, newcomer = stack.register(), stack.register(), new_email()
    for_guest = stack.invite(inviter, email=guest.email)
    for_newcomer = stack.invite(inviter, email=newcomer)
    assert for_guest["expires_at"] == for_guest["created_at"] + 7 * 86400
    stack.advance_clock(7 * 86400 - 600)
    for account in (inviter, guest):  # their access tokens have long expired; their sessions have not
        stack.refresh(account)
    assert {for_guest["id"], for_newcomer["id"]} <= {i["id"] for i in pending(stack, inviter)}

    stack.advance_clock(601)
    for account in (inviter, guest):
        stack.refresh(account)
    assert accept(stack, guest, for_guest["token"]).status_code == 404
    assert register_with(stack, newcomer, for_newcomer["token"]).status_code == 404
    assert not {for_guest["id"], for_newcomer["id"]} & {i["id"] for i in pending(stack, inviter)}
