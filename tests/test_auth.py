"""Accounts and sessions over HTTP: register, login, refresh rotation with reuse detection, logout, me."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.store import keys
from conftest import send_together


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def login(stack, email: str, password: str):
    return stack.call("POST", "/v1/auth/login", json={"email": email, "password": password})


def refresh(stack, token: str):
    return stack.call("POST", "/v1/auth/refresh", json={"refresh_token": token})


def me(stack, token: str):
    return stack.call("GET", "/v1/auth/me", token=token)


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


# --- register -------------------------------------------------------------------------------------------------


def test_register_creates_user_organization_and_owner_membership(stack):
    email = new_email()
    response = stack.call("POST", "/v1/auth/register", json={
        "email": email, "password": "correct horse battery", "name": "Ada", "organization_name": "Analytical",
    })
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["user"]["email"] == email and body["user"]["name"] == "Ada" and body["user"]["id"].startswith("usr_")
    assert body["organization"]["name"] == "Analytical" and body["organization"]["role"] == "owner"
    assert "password" not in response.text and "argon2" not in response.text
    org_id, token = body["organization"]["id"], body["access_token"]

    orgs = stack.call("GET", "/v1/orgs", token=token)
    assert orgs.status_code == 200, orgs.text
    assert [(o["id"], o["role"]) for o in orgs.json()["items"]] == [(org_id, "owner")]
    members = stack.call("GET", f"/v1/orgs/{org_id}/members", token=token)
    assert members.status_code == 200, members.text
    assert [(m["user_id"], m["email"], m["role"]) for m in members.json()["items"]] == [
        (body["user"]["id"], email, "owner"),
    ]


def test_register_requires_an_organization_name_without_invitation(stack):
    response = stack.call("POST", "/v1/auth/register", json={
        "email": new_email(), "password": "correct horse battery", "name": "Ada",
    })
    error = assert_error(response, 400, "validation_error")
    assert error["details"]


def test_register_with_taken_email_in_another_case_conflicts(stack, owner):
    response = stack.call("POST", "/v1/auth/register", json={
        "email": owner.email.upper(), "password": "another password", "name": "Copycat", "organization_name": "X",
    })
    assert_error(response, 409, "conflict")
    assert login(stack, owner.email, "another password").status_code == 401
    assert login(stack, owner.email, owner.password).status_code == 200


def test_concurrent_registrations_with_one_email_create_exactly_one_account(stack):
    local = f"race-{uuid.uuid4().hex[:10]}"
    variants = [
        "".join(c.upper() if (i >> (k % 5)) & 1 else c for k, c in enumerate(local)) + ("@EXAMPLE.com" if i % 2 else "@example.com")
        for i in range(20)
    ]
    marker = uuid.uuid4().hex[:8]
    bodies = [
        {"email": email, "password": f"password number {i}", "name": f"Racer {i}", "organization_name": f"race {marker} {i}"}
        for i, email in enumerate(variants)
    ]
    results = send_together(stack, "POST", "/v1/auth/register", bodies)

    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 19, statuses
    winner = next(i for i, (status, _) in enumerate(results) if status == 201)
    for status, body in results:
        if status == 409:
            assert body["error"]["code"] == "conflict"

    # The losers left nothing behind: one user, one e-mail claim, one organization, one membership.
    items = stack.table_items()
    emails = {v.lower() for v in variants}
    users = [i for i in items if "password_hash" in i and i["email"]["S"].lower() in emails]
    claims = [i for i in items if (i["pk"]["S"], i["sk"]["S"]) == keys.email_claim(variants[0])]
    orgs = [i for i in items if "owner_count" in i and marker in i["name"]["S"]]
    members = [i for i in items if "role" in i and "token_hash" not in i and i["email"]["S"].lower() in emails]
    assert len(users) == len(claims) == len(orgs) == len(members) == 1
    assert orgs[0]["name"]["S"] == f"race {marker} {winner}"
    assert members[0]["user_id"]["S"] == users[0]["id"]["S"] == claims[0]["user_id"]["S"]
    assert members[0]["org_id"]["S"] == orgs[0]["id"]["S"] and members[0]["role"]["S"] == "owner"

    assert login(stack, variants[0].upper(), f"password number {winner}").status_code == 200
    loser = (winner + 1) % 20
    assert login(stack, variants[0], f"password number {loser}").status_code == 401


# --- login ----------------------------------------------------------------------------------------------------


def test_login_returns_tokens_for_a_new_session(stack, owner):
    response = login(stack, owner.email, owner.password)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user"]["id"], body["user"]["email"], body["user"]["name"]) == (owner.user_id, owner.email, "Test User")
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["access_token"] != owner.access_token and body["refresh_token"] != owner.refresh_token
    assert me(stack, body["access_token"]).json()["id"] == owner.user_id


def test_login_email_is_case_insensitive(stack, owner):
    response = login(stack, f"  {owner.email.upper()}  ", owner.password)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == owner.user_id


def test_login_gives_one_answer_for_unknown_user_and_wrong_password(stack, owner):
    unknown = login(stack, new_email("nobody"), owner.password)
    wrong = login(stack, owner.email, "not the password")
    assert unknown.status_code == wrong.status_code == 401
    unknown_error, wrong_error = unknown.json()["error"], wrong.json()["error"]
    assert unknown_error.pop("request_id") == unknown.headers["X-Request-ID"]
    assert wrong_error.pop("request_id") == wrong.headers["X-Request-ID"]
    assert unknown_error == wrong_error
    assert unknown_error["code"] == "unauthorized"
    assert set(unknown.json()) == set(wrong.json()) == {"error"}


def test_password_is_case_sensitive(stack, owner):
    assert login(stack, owner.email, owner.password.upper()).status_code == 401


# --- refresh --------------------------------------------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(stack, owner):
    first = refresh(stack, owner.refresh_token)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["refresh_token"] != owner.refresh_token
    assert body["user"]["id"] == owner.user_id
    assert me(stack, body["access_token"]).status_code == 200

    second = refresh(stack, body["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] not in (owner.refresh_token, body["refresh_token"])


def test_rotated_refresh_token_is_refused(stack, owner):
    assert refresh(stack, owner.refresh_token).status_code == 200
    assert_error(refresh(stack, owner.refresh_token), 401, "unauthorized")


def test_refresh_token_reuse_revokes_family(stack, owner):
    one = refresh(stack, owner.refresh_token).json()
    two = refresh(stack, one["refresh_token"]).json()
    assert me(stack, two["access_token"]).status_code == 200

    assert_error(refresh(stack, one["refresh_token"]), 401, "unauthorized")  # a spent token comes back

    assert_error(refresh(stack, two["refresh_token"]), 401, "unauthorized")  # the newest refresh token
    for access in (two["access_token"], one["access_token"], owner.access_token):
        assert_error(me(stack, access), 401, "unauthorized")
    assert login(stack, owner.email, owner.password).status_code == 200  # the account itself is fine


def test_refresh_token_reuse_leaves_other_sessions_alone(stack, owner):
    other = login(stack, owner.email, owner.password).json()
    assert refresh(stack, owner.refresh_token).status_code == 200
    assert refresh(stack, owner.refresh_token).status_code == 401
    assert me(stack, other["access_token"]).status_code == 200
    assert refresh(stack, other["refresh_token"]).status_code == 200


def test_concurrent_refreshes_of_one_token_rotate_it_at_most_once(stack, owner):
    results = send_together(stack, "POST", "/v1/auth/refresh", [{"refresh_token": owner.refresh_token}] * 8)
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) <= 1 and statuses.count(401) >= 7, statuses
    assert set(statuses) <= {200, 401}


@pytest.mark.parametrize("token", ["not-a-refresh-token", "x" * 512])
def test_unknown_refresh_token_is_refused(stack, token):
    assert_error(refresh(stack, token), 401, "unauthorized")


def test_access_token_is_not_a_refresh_token(stack, owner):
    assert_error(refresh(stack, owner.access_token), 401, "unauthorized")


DAY = 86400


def test_refresh_session_expires_after_idle_ttl(own_stack):
    stack = own_stack()  # the defaults: idle for 7 days, 30 days at most
    quiet, busy = stack.register(), stack.register()
    token = busy.refresh_token
    for _ in range(2):  # used every 4 days: never idle for long
        stack.advance_clock(4 * DAY)
        response = refresh(stack, token)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]

    assert_error(refresh(stack, quiet.refresh_token), 401, "unauthorized")  # unused for 8 days
    assert refresh(stack, token).status_code == 200


def test_refresh_session_expires_after_absolute_ttl_even_when_used(own_stack):
    stack = own_stack()
    account = stack.register()
    token = account.refresh_token
    for gap in (6 * DAY,) * 4 + (6 * DAY - 10 * 60,):  # last used 10 minutes before its 30 days are up
        stack.advance_clock(gap)
        response = refresh(stack, token)
        assert response.status_code == 200, response.text
        token, access = response.json()["refresh_token"], response.json()["access_token"]

    stack.advance_clock(11 * 60)  # 30 days and a minute: used 11 minutes ago, its access token 15 minutes long
    assert_error(refresh(stack, token), 401, "unauthorized")
    assert_error(me(stack, access), 401, "unauthorized")  # the session's access tokens end with it
    assert login(stack, account.email, account.password).status_code == 200


# --- logout ---------------------------------------------------------------------------------------------------


def test_logout_ends_only_that_session(stack, owner):
    other = login(stack, owner.email, owner.password).json()
    assert me(stack, owner.access_token).status_code == 200

    response = stack.call("POST", "/v1/auth/logout", token=owner.access_token)
    assert response.status_code == 204, response.text

    assert_error(me(stack, owner.access_token), 401, "unauthorized")
    assert_error(refresh(stack, owner.refresh_token), 401, "unauthorized")
    assert_error(stack.call("POST", "/v1/auth/logout", token=owner.access_token), 401, "unauthorized")

    assert me(stack, other["access_token"]).json()["id"] == owner.user_id
    assert refresh(stack, other["refresh_token"]).status_code == 200


def test_logout_ends_tokens_issued_by_rotation_too(stack, owner):
    rotated = refresh(stack, owner.refresh_token).json()
    assert stack.call("POST", "/v1/auth/logout", token=owner.access_token).status_code == 204
    assert_error(me(stack, rotated["access_token"]), 401, "unauthorized")
    assert_error(refresh(stack, rotated["refresh_token"]), 401, "unauthorized")


# --- me -------------------------------------------------------------------------------------------------------


def test_me_returns_the_signed_in_user(stack):
    email = new_email()
    account = stack.register(email=email, name="Grace Hopper")
    response = me(stack, account.access_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["email"], body["name"]) == (account.user_id, email, "Grace Hopper")
    assert not {"password", "password_hash"} & set(body)
