"""Browser sessions over HTTP: with `X-Orochi-Session: cookie` the refresh token lives in an httpOnly cookie.

Register, login and refresh set it (and leave it out of the body), refresh reads it back only with the header and
from a listed Origin, rotation and reuse detection work as in the body flow, logout clears it, and without the
header nothing reads it. Requests go through `requests` without a session, so no cookie jar sends anything the test
did not write. The browser side (a real Chromium that cannot read it) is in tests/test_cors.py.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import requests

from conftest import Account, Stack
from devstack.harness import PASSWORD

LISTED = "http://localhost:5173"  # one of conftest's ALLOWED_ORIGINS
UNLISTED = "http://evil.example"
COOKIE_SESSION = {"X-Orochi-Session": "cookie"}
BROWSER = {**COOKIE_SESSION, "Origin": LISTED}
SET_COOKIE = re.compile(
    r"orochi_refresh=(?P<token>[A-Za-z0-9_-]{43}); Path=/v1/auth; HttpOnly; Secure; SameSite=Strict; Max-Age=(?P<age>\d+)")
CLEARED = "orochi_refresh=; Path=/v1/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
THIRTY_DAYS = 30 * 86400  # REFRESH_ABSOLUTE_TTL_SECONDS' default


def post(stack: Stack, path: str, *, headers: dict[str, str] | None = None, json: Any = None, data: str | None = None,
         cookie: str | None = None, token: str | None = None) -> requests.Response:
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = cookie
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return requests.post(stack.url + path, headers=sent, json=json, data=data, timeout=60)


def set_cookies(response: requests.Response) -> list[str]:
    return list(response.raw.headers.getlist("Set-Cookie"))


def issued_cookie(response: requests.Response) -> tuple[str, int]:
    """The refresh token and Max-Age of the answer's one Set-Cookie, which must be exactly the contract's."""
    cookies = set_cookies(response)
    assert len(cookies) == 1, cookies
    match = SET_COOKIE.fullmatch(cookies[0])
    assert match, cookies[0]
    return match["token"], int(match["age"])


def refresh_from_cookie(stack: Stack, token: str, *, headers: dict[str, str] = BROWSER, **kwargs: Any) -> requests.Response:
    return post(stack, "/v1/auth/refresh", headers=headers, cookie=f"theme=dark; orochi_refresh={token}", **kwargs)


def refresh_from_body(stack: Stack, token: str, **kwargs: Any) -> requests.Response:
    return post(stack, "/v1/auth/refresh", json={"refresh_token": token}, **kwargs)


def me(stack: Stack, access_token: str) -> requests.Response:
    return requests.get(stack.url + "/v1/auth/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=60)


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert not set_cookies(response)
    return dict(error)


def assert_cookie_body(response: requests.Response, status: int, token: str) -> dict[str, Any]:
    """A cookie session's answer: the body flow's fields but `refresh_token`, and the token nowhere in the body."""
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert "refresh_token" not in body
    assert {"access_token", "token_type", "expires_in", "user"} <= set(body)
    assert token not in response.text
    return body


def cookie_login(stack: Stack, account: Account, *, max_age: int = THIRTY_DAYS) -> tuple[str, dict[str, Any]]:
    """A new cookie session of `account`: its refresh token (from the cookie) and the answer's body."""
    response = post(stack, "/v1/auth/login", headers=BROWSER, json={"email": account.email, "password": account.password})
    token, age = issued_cookie(response)
    assert age == max_age  # REFRESH_ABSOLUTE_TTL_SECONDS
    return token, assert_cookie_body(response, 200, token)


def new_account() -> dict[str, str]:
    return {"email": f"cookie-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD, "name": "Cookie User",
            "organization_name": "Cookie Org"}


# --- issuing the cookie ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [COOKIE_SESSION, BROWSER], ids=["no-origin", "listed-origin"])
def test_register_with_cookie_session_sets_the_refresh_cookie_not_the_body(stack: Stack, headers: dict[str, str]) -> None:
    account = new_account()
    response = post(stack, "/v1/auth/register", headers=headers, json=account)
    token, age = issued_cookie(response)
    assert age == THIRTY_DAYS
    body = assert_cookie_body(response, 201, token)
    assert body["user"]["email"] == account["email"] and body["organization"]["role"] == "owner"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert me(stack, body["access_token"]).json()["email"] == account["email"]
    assert refresh_from_cookie(stack, token).status_code == 200  # the cookie holds the session's real refresh token


def test_login_with_cookie_session_sets_the_refresh_cookie_not_the_body(stack: Stack, owner: Account) -> None:
    token, body = cookie_login(stack, owner)
    assert body["user"]["id"] == owner.user_id
    assert token != owner.refresh_token
    assert me(stack, body["access_token"]).json()["id"] == owner.user_id


def test_body_flow_answers_as_before_and_sets_no_cookie(stack: Stack, owner: Account) -> None:
    logged_in = post(stack, "/v1/auth/login", json={"email": owner.email, "password": owner.password})
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["refresh_token"] and not set_cookies(logged_in)
    refreshed = refresh_from_body(stack, logged_in.json()["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] and not set_cookies(refreshed)


@pytest.mark.parametrize("session", ["body", "cookie"])
def test_no_answer_holding_tokens_may_be_cached(stack: Stack, owner: Account, session: str) -> None:
    """RFC 6749 5.1: register, login and refresh answer `Cache-Control: no-store`, in either flow."""
    headers = BROWSER if session == "cookie" else {}
    registered = post(stack, "/v1/auth/register", headers=headers, json=new_account())
    logged_in = post(stack, "/v1/auth/login", headers=headers, json={"email": owner.email, "password": owner.password})
    refreshed = (refresh_from_cookie(stack, issued_cookie(logged_in)[0]) if session == "cookie"
                 else refresh_from_body(stack, logged_in.json()["refresh_token"]))
    for response in (registered, logged_in, refreshed):
        assert response.status_code in (200, 201), response.text
        assert response.headers.get("Cache-Control") == "no-store", (response.request.url, dict(response.headers))


def test_the_cookie_lives_exactly_as_long_as_the_sessions_refresh_tokens(own_stack: Any) -> None:
    stack = own_stack(REFRESH_ABSOLUTE_TTL_SECONDS="7200", REFRESH_IDLE_TTL_SECONDS="3600")
    token, _ = cookie_login(stack, stack.register(), max_age=7200)
    for elapsed in (3000, 6000):  # Max-Age counts down to the session's absolute expiry, refresh after refresh
        stack.advance_clock(3000)
        token, age = issued_cookie(refresh_from_cookie(stack, token))
        assert 7200 - elapsed - 60 <= age <= 7200 - elapsed  # the seconds the test itself took, at most
    stack.advance_clock(age + 1)  # when the browser drops the cookie, its token is dead too
    assert_error(refresh_from_cookie(stack, token), 401, "unauthorized")


@pytest.mark.parametrize("value", ["Cookie", "body", "cookie, cookie", ""])
def test_other_session_header_values_are_refused(stack: Stack, owner: Account, value: str) -> None:
    response = post(stack, "/v1/auth/login", headers={"X-Orochi-Session": value},
                    json={"email": owner.email, "password": owner.password})
    error = assert_error(response, 400, "validation_error")
    assert error["details"][0]["field"] == "X-Orochi-Session"


# --- refreshing from the cookie -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"data": None}, {"data": "{}"}, {"json": {}}, {"data": " { } \n"}],
                         ids=["empty", "braces", "json", "spaced"])
def test_refresh_from_cookie_rotates_it(stack: Stack, owner: Account, body: dict[str, Any]) -> None:
    token, _ = cookie_login(stack, owner)
    response = refresh_from_cookie(stack, token, **body)
    rotated, age = issued_cookie(response)
    answer = assert_cookie_body(response, 200, rotated)
    assert rotated != token and token not in response.text
    assert 0 < age <= THIRTY_DAYS
    assert answer["user"]["id"] == owner.user_id
    assert me(stack, answer["access_token"]).json()["id"] == owner.user_id
    again, _ = issued_cookie(refresh_from_cookie(stack, rotated))
    assert again not in (token, rotated)


def test_spent_cookie_is_reuse_and_revokes_the_session(stack: Stack, owner: Account) -> None:
    token, first = cookie_login(stack, owner)
    response = refresh_from_cookie(stack, token)
    rotated, _ = issued_cookie(response)
    second = response.json()
    assert me(stack, second["access_token"]).status_code == 200

    assert_error(refresh_from_cookie(stack, token), 401, "unauthorized")  # the spent cookie comes back

    assert_error(refresh_from_cookie(stack, rotated), 401, "unauthorized")  # the newest one is revoked with it
    for access in (first["access_token"], second["access_token"]):
        assert_error(me(stack, access), 401, "unauthorized")
    assert me(stack, owner.access_token).status_code == 200  # the account's other sessions are untouched


def test_refresh_without_the_cookie_is_the_body_flows_bad_token_401(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    bad_body_token = assert_error(refresh_from_body(stack, "not-a-refresh-token"), 401, "unauthorized")
    answers = [
        post(stack, "/v1/auth/refresh", headers=BROWSER),
        post(stack, "/v1/auth/refresh", headers=BROWSER, cookie="theme=dark"),
        post(stack, "/v1/auth/refresh", headers=BROWSER, cookie="orochi_refresh="),
        post(stack, "/v1/auth/refresh", headers=BROWSER, cookie="orochi_refresh=not-a-refresh-token"),
        post(stack, "/v1/auth/refresh", headers=BROWSER, cookie="orochi_refresh=" + "x" * 600),
        post(stack, "/v1/auth/refresh", headers=BROWSER, cookie=f"orochi_refresh_old={token}"),
    ]
    for response in answers:
        error = assert_error(response, 401, "unauthorized")
        assert error["message"] == bad_body_token["message"]
    assert refresh_from_cookie(stack, token).status_code == 200  # none of that touched the real one


@pytest.mark.parametrize("origin", [None, UNLISTED, "null", "http://localhost:5173.evil.example", "https://localhost:5173",
                                    "http://localhost:51730"])
def test_cookie_refresh_from_an_unlisted_or_absent_origin_is_refused_and_rotates_nothing(
    stack: Stack, owner: Account, origin: str | None,
) -> None:
    token, _ = cookie_login(stack, owner)
    headers = {**COOKIE_SESSION, **({"Origin": origin} if origin is not None else {})}
    response = refresh_from_cookie(stack, token, headers=headers, json={})
    assert_error(response, 403, "origin_not_allowed")
    assert token not in response.text
    assert "Access-Control-Allow-Origin" not in response.headers

    rotated, _ = issued_cookie(refresh_from_cookie(stack, token))  # from a listed origin the cookie still works
    assert rotated != token


def test_cookie_refresh_refuses_a_token_in_the_body(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    response = refresh_from_cookie(stack, token, json={"refresh_token": token})
    error = assert_error(response, 400, "validation_error")
    assert error["details"] == [{"field": "refresh_token", "message": "not accepted with X-Orochi-Session: cookie"}]
    assert token not in response.text
    assert refresh_from_cookie(stack, token).status_code == 200  # nothing was rotated


def test_cookie_refresh_body_must_still_be_json(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    for data in ("{not json", "[]", '{"other": 1}'):
        assert_error(refresh_from_cookie(stack, token, data=data), 400, "validation_error")
    assert refresh_from_cookie(stack, token).status_code == 200


# --- the body flow never reads the cookie ---------------------------------------------------------------------


def test_body_flow_ignores_the_cookie(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    cookie = f"orochi_refresh={token}"
    # The cookie alone, even from a listed origin, is no refresh token: without the header the body is required.
    for data in (None, "{}"):
        missing = post(stack, "/v1/auth/refresh", headers={"Origin": LISTED}, cookie=cookie, data=data)
        assert_error(missing, 400, "validation_error")
    # A bad body token stays bad, whatever cookie comes with it.
    assert_error(refresh_from_body(stack, "not-a-refresh-token", headers={"Origin": LISTED}, cookie=cookie),
                 401, "unauthorized")
    # And a good one is rotated with its answer in the body, the cookie neither used nor set.
    body_flow = refresh_from_body(stack, owner.refresh_token, cookie=cookie)
    assert body_flow.status_code == 200 and body_flow.json()["refresh_token"] and not set_cookies(body_flow)
    assert refresh_from_cookie(stack, token).status_code == 200  # the cookie's token was never spent


def test_the_cookie_is_no_credential_on_any_other_route(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    cookie = f"orochi_refresh={token}"
    for method, path in [("GET", "/v1/auth/me"), ("POST", "/v1/auth/logout"), ("GET", "/v1/orgs"),
                         ("GET", f"/v1/orgs/{owner.org_id}")]:
        response = requests.request(method, stack.url + path, headers={**BROWSER, "Cookie": cookie}, timeout=60)
        assert_error(response, 401, "unauthorized")
    assert refresh_from_cookie(stack, token).status_code == 200  # and the session lives on


# --- logout ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["cookie", "body"])
def test_logout_clears_the_cookie_and_ends_the_session(stack: Stack, owner: Account, flow: str) -> None:
    if flow == "cookie":
        token, answer = cookie_login(stack, owner)
        access = answer["access_token"]
    else:
        logged_in = post(stack, "/v1/auth/login", json={"email": owner.email, "password": owner.password}).json()
        token, access = logged_in["refresh_token"], logged_in["access_token"]
    response = post(stack, "/v1/auth/logout", headers={"Origin": LISTED}, token=access)
    assert response.status_code == 204, response.text
    assert set_cookies(response) == [CLEARED]
    assert_error(refresh_from_cookie(stack, token), 401, "unauthorized")
    assert_error(refresh_from_body(stack, token), 401, "unauthorized")


# --- secrecy --------------------------------------------------------------------------------------------------


def test_refresh_tokens_of_cookie_sessions_are_never_logged(stack: Stack, owner: Account) -> None:
    token, _ = cookie_login(stack, owner)
    rotated, _ = issued_cookie(refresh_from_cookie(stack, token))
    assert_error(refresh_from_cookie(stack, token, headers={**COOKIE_SESSION, "Origin": UNLISTED}), 403,
                 "origin_not_allowed")
    assert_error(refresh_from_cookie(stack, token), 401, "unauthorized")  # reuse: the session is revoked
    assert stack.log.read_text(errors="replace").count("/v1/auth/refresh") >= 3  # the log did see those requests
    log = stack.log.read_text(errors="replace")
    assert token not in log and rotated not in log
