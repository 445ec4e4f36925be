"""Access tokens over HTTP: their shape and lifetime, and every way a bearer token must be refused.

Forged tokens start from the claims of a real, live token (real user, real session) so that the only
defect in each one is the one under test; `test_forged_token_without_defect_is_accepted` proves the
forging itself is sound.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest

from conftest import JWT_SECRET

REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "exp", "typ"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def forge(claims: dict[str, Any], *, key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short keys for HS512
        return jwt.encode(claims, key, algorithm=algorithm)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    encode = lambda part: b64url(json.dumps(part, separators=(",", ":")).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}.{signature}"


def assert_refused(response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["request_id"] == response.headers["X-Request-ID"]


def me(stack, token: str):
    return stack.call("GET", "/v1/auth/me", token=token)


@pytest.fixture(scope="module")
def alice(stack):
    """A signed-in user whose session the tests below only read (never refresh or end)."""
    return stack.register()


@pytest.fixture(scope="module")
def bob(stack):
    return stack.register()


@pytest.fixture
def live(stack, alice) -> dict[str, Any]:
    """The claims of alice's real access token, issued now: valid in every respect."""
    now = stack.now()
    return {**claims_of(alice.access_token), "iat": now, "exp": now + 600}


def test_access_token_is_hs256_jwt_with_required_claims(stack, alice):
    header = jwt.get_unverified_header(alice.access_token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(alice.access_token, JWT_SECRET, algorithms=["HS256"], audience="orochi-api", issuer="orochi-db")
    assert set(REQUIRED_CLAIMS) <= set(claims)
    assert claims["sub"] == alice.user_id
    assert claims["typ"] == "access"
    assert claims["sid"].startswith("ses_")
    assert abs(claims["iat"] - stack.now()) < 60


def test_access_token_lives_fifteen_minutes_by_default(stack):
    response = stack.call("POST", "/v1/auth/register", json={
        "email": f"ttl-{time.time_ns()}@example.com", "password": "long enough password", "name": "T",
        "organization_name": "T",
    })
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    claims = claims_of(body["access_token"])
    assert claims["exp"] - claims["iat"] == 900


def test_login_and_refresh_issue_tokens_with_same_lifetime(stack, owner):
    login = stack.call("POST", "/v1/auth/login", json={"email": owner.email, "password": owner.password})
    refreshed = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": owner.refresh_token})
    for response in (login, refreshed):
        assert response.status_code == 200, response.text
        claims = claims_of(response.json()["access_token"])
        assert response.json()["expires_in"] == 900
        assert claims["exp"] - claims["iat"] == 900


def test_forged_token_without_defect_is_accepted(stack, alice, live):
    response = me(stack, forge(live))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == alice.user_id


def test_alg_none_token_is_refused(stack, live):
    assert_refused(me(stack, unsigned({"alg": "none", "typ": "JWT"}, live)))
    assert_refused(me(stack, unsigned({"alg": "None", "typ": "JWT"}, live)))
    assert_refused(me(stack, forge(live).rsplit(".", 1)[0] + "."))  # HS256 header, signature stripped


def test_token_signed_with_another_key_is_refused(stack, live):
    assert_refused(me(stack, forge(live, key="another-secret-that-is-also-long-enough-987654")))


def test_token_signed_with_hs512_and_the_right_key_is_refused(stack, live):
    assert_refused(me(stack, forge(live, algorithm="HS512")))
    assert_refused(me(stack, forge(live, algorithm="HS384")))


def test_expired_token_is_refused(stack, live):
    now = stack.now()
    assert_refused(me(stack, forge({**live, "iat": now - 1000, "exp": now - 100})))


def test_token_for_another_audience_is_refused(stack, live):
    assert_refused(me(stack, forge({**live, "aud": "some-other-api"})))


def test_token_from_another_issuer_is_refused(stack, live):
    assert_refused(me(stack, forge({**live, "iss": "someone-else"})))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(stack, live, claim):
    assert_refused(me(stack, forge({k: v for k, v in live.items() if k != claim})))


def test_token_of_another_type_is_refused(stack, live):
    assert_refused(me(stack, forge({**live, "typ": "refresh"})))


def test_token_with_non_string_session_id_is_refused(stack, live):
    assert_refused(me(stack, forge({**live, "sid": 12345})))
    assert_refused(me(stack, forge({**live, "sid": {"S": "x"}})))


def test_token_naming_another_users_session_is_refused(stack, bob, live):
    assert_refused(me(stack, forge({**live, "sid": claims_of(bob.access_token)["sid"]})))


def test_token_for_unknown_session_is_refused(stack, live):
    assert_refused(me(stack, forge({**live, "sid": "ses_doesnotexist"})))


def test_tampered_payload_is_refused(stack, alice, bob):
    header, _, signature = alice.access_token.split(".")
    claims = {**claims_of(alice.access_token), "sub": bob.user_id, "sid": claims_of(bob.access_token)["sid"]}
    assert_refused(me(stack, f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"))
    longer = {**claims_of(alice.access_token), "exp": claims_of(alice.access_token)["exp"] + 86400}
    assert_refused(me(stack, f"{header}.{b64url(json.dumps(longer).encode())}.{signature}"))


def test_refresh_token_is_not_a_bearer_token(stack, alice):
    assert_refused(me(stack, alice.refresh_token))


def test_request_without_authorization_header_is_refused(stack):
    assert_refused(stack.call("GET", "/v1/auth/me"))
    assert_refused(stack.call("POST", "/v1/auth/logout"))


@pytest.mark.parametrize("value", [
    "Basic dXNlcjpwYXNzd29yZA==", "Token {token}", "{token}", "Bearer", "Bearer ", "Bearer    ", "JWT {token}",
])
def test_authorization_without_bearer_scheme_is_refused(stack, alice, value):
    response = stack.call("GET", "/v1/auth/me", headers={"Authorization": value.format(token=alice.access_token)})
    assert_refused(response)


def test_garbage_bearer_tokens_are_refused(stack):
    for token in ["x", "a.b.c", "..", "é", "a" * 8000, "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer Bearer"]:
        assert_refused(stack.call("GET", "/v1/auth/me", headers={"Authorization": f"Bearer {token}"}))


def test_bearer_scheme_is_case_insensitive(stack, alice):
    response = stack.call("GET", "/v1/auth/me", headers={"Authorization": f"bearer {alice.access_token}"})
    assert response.status_code == 200, response.text


def test_access_token_expires_after_configured_ttl(own_stack):
    short = own_stack(ACCESS_TOKEN_TTL_SECONDS="300")
    account = short.register()
    claims = claims_of(account.access_token)
    assert claims["exp"] - claims["iat"] == 300
    short.advance_clock(300 - 10)
    assert me(short, account.access_token).status_code == 200
    short.advance_clock(20)
    assert_refused(me(short, account.access_token))

    refreshed = short.call("POST", "/v1/auth/refresh", json={"refresh_token": account.refresh_token}).json()
    assert refreshed["expires_in"] == 300  # the session outlives its access tokens
    assert claims_of(refreshed["access_token"])["sid"] == claims["sid"]


def test_token_living_longer_than_the_configured_lifetime_is_refused(stack, live):
    """Signed with the right key, but `exp` a year after `iat`: no token of ours ever lives that long."""
    now = stack.now()
    assert_refused(me(stack, forge({**live, "iat": now, "exp": now + 365 * 86400})))
    assert_refused(me(stack, forge({**live, "iat": now - 60, "exp": now + 900 - 60 + 1})))
    assert me(stack, forge({**live, "iat": now - 60, "exp": now + 900 - 60})).status_code == 200


def test_token_issued_in_the_future_is_refused(stack, live):
    now = stack.now()
    assert_refused(me(stack, forge({**live, "iat": now + 3600, "exp": now + 3600 + 900})))


def test_access_token_expires_on_the_apis_clock(own_stack):
    """The API's clock, not the wall clock the token was minted by, decides expiry."""
    stack = own_stack()
    account = stack.register()
    assert me(stack, account.access_token).status_code == 200
    stack.advance_clock(900 - 5)
    assert me(stack, account.access_token).status_code == 200
    stack.advance_clock(10)
    assert_refused(me(stack, account.access_token))
