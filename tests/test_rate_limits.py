"""Rate limits through HTTP: per user, per agent token, and per client address on login and registration.

One API with small limits serves the module. Every caller a test makes registers from a loopback address of
its own (the local gateway reports the connection's address as API Gateway does), so registrations never spend
another test's address quota. A test that needs a whole window first moves the API's clock to the start of a
fresh one (`fresh_window`), so the window cannot end halfway through what it counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import http.client
import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from chalicelib.settings import Settings, SettingsError
from chalicelib.store import keys
from conftest import Stack, cluster_body, clusters_path, new_stack, send_together

USER_LIMIT, AGENT_LIMIT, AUTH_LIMIT = 5, 8, 3
LIMITS = {"RATE_LIMIT_USER_PER_MINUTE": str(USER_LIMIT), "RATE_LIMIT_AGENT_PER_MINUTE": str(AGENT_LIMIT),
          "RATE_LIMIT_AUTH_PER_MINUTE": str(AUTH_LIMIT)}
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
PASSWORD = "correct horse battery"
_hosts = itertools.count(2)


@pytest.fixture(scope="module")
def limited(stack_env: dict[str, str]) -> Iterator[Stack]:
    """This module's own API with small limits (its tests move its clock to the start of a window)."""
    made = new_stack(stack_env, own_clock=True, **LIMITS)
    yield made
    made.close()


def new_address() -> str:
    """A loopback address no other caller of this module has used."""
    n = next(_hosts)
    return f"127.0.{n // 250 + 1}.{n % 250 + 2}"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: Any

    def quota(self) -> tuple[int, int, int]:
        """(limit, remaining, reset) as the RateLimit-* headers state them."""
        return tuple(int(self.headers[name]) for name in HEADERS)  # type: ignore[return-value]

    def error_code(self) -> str:
        return str(self.body["error"]["code"])


def send(stack: Stack, method: str, path: str, *, token: str | None = None, body: Any = None,
         address: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Answer:
    """One request from `address` (a loopback address the connection is bound to)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30, source_address=(address, 0))
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        return Answer(response.status, response.headers, json.loads(raw) if raw else None)
    finally:
        connection.close()


@dataclass
class User:
    email: str
    token: str
    org_id: str
    address: str


def register(stack: Stack, *, address: str | None = None) -> User:
    address = address or new_address()
    email = f"rl-{uuid.uuid4().hex[:12]}@example.com"
    answer = send(stack, "POST", "/v1/auth/register", address=address, body={
        "email": email, "password": PASSWORD, "name": "Limited", "organization_name": "Limited Org"})
    assert answer.status == 201, answer.body
    return User(email=email, token=answer.body["access_token"], org_id=answer.body["organization"]["id"], address=address)


def me(stack: Stack, user: User) -> Answer:
    return send(stack, "GET", "/v1/auth/me", token=user.token)


def login(stack: Stack, email: str, password: str = PASSWORD, *, address: str) -> Answer:
    return send(stack, "POST", "/v1/auth/login", address=address, body={"email": email, "password": password})


def fresh_window(stack: Stack, answer: Answer) -> None:
    """Move the API's clock to the start of the next window of the caller `answer` was counted for."""
    stack.advance_clock(answer.quota()[2])


def spend(stack: Stack, user: User) -> Answer:
    """Start a fresh window for `user` and use all of it; the last answer (the limit's last request)."""
    fresh_window(stack, me(stack, user))
    answers = [me(stack, user) for _ in range(USER_LIMIT)]
    assert [a.status for a in answers] == [200] * USER_LIMIT, [a.body for a in answers]
    return answers[-1]


def assert_refused(answer: Answer, *, limit: int) -> None:
    assert answer.status == 429, answer.body
    assert answer.error_code() == "rate_limited"
    assert set(answer.body["error"]) >= {"code", "message", "request_id"}
    assert answer.body["error"]["request_id"] == answer.headers["X-Request-ID"]
    limit_header, remaining, reset = answer.quota()
    assert (limit_header, remaining) == (limit, 0)
    assert 1 <= reset <= 60
    assert int(answer.headers["Retry-After"]) == reset


# --- users ----------------------------------------------------------------------------------------------------


def test_a_user_over_the_limit_gets_429_with_retry_after_and_the_error_shape(limited: Stack) -> None:
    user = register(limited)
    assert spend(limited, user).quota()[1] == 0
    assert_refused(me(limited, user), limit=USER_LIMIT)


def test_the_limit_is_the_users_whatever_the_session_and_other_users_are_unaffected(limited: Stack) -> None:
    user, other = register(limited), register(limited)
    spend(limited, user)
    second_session = login(limited, user.email, address=user.address)
    assert second_session.status == 200, second_session.body
    assert_refused(send(limited, "GET", "/v1/auth/me", token=second_session.body["access_token"]), limit=USER_LIMIT)
    answer = me(limited, other)
    assert answer.status == 200, answer.body
    assert answer.quota()[0] == USER_LIMIT and answer.quota()[1] >= USER_LIMIT - 2


def test_the_window_resets_after_retry_after(limited: Stack) -> None:
    user = register(limited)
    spend(limited, user)
    refused = me(limited, user)
    assert_refused(refused, limit=USER_LIMIT)
    limited.advance_clock(int(refused.headers["Retry-After"]) - 1)
    just_before = me(limited, user)
    if just_before.status == 429:
        assert int(just_before.headers["Retry-After"]) == 1
    else:  # a second of real time passed since the refusal: the window has just ended
        assert just_before.quota()[:2] == (USER_LIMIT, USER_LIMIT - 1), just_before.body
    limited.advance_clock(1)
    answer = me(limited, user)
    assert answer.status == 200, answer.body
    assert answer.quota()[:2] == (USER_LIMIT, USER_LIMIT - (1 if just_before.status == 429 else 2))


def test_a_refused_request_does_no_other_work(limited: Stack) -> None:
    user = register(limited)
    spend(limited, user)
    key = f"refused-{uuid.uuid4().hex}"
    refused = send(limited, "POST", clusters_path(user.org_id), token=user.token, body=cluster_body(),
                   headers={"Idempotency-Key": key})
    assert_refused(refused, limit=USER_LIMIT)
    # A refused request is not parsed either: an invalid body gets the same 429, not a 400.
    assert_refused(send(limited, "POST", clusters_path(user.org_id), token=user.token, body={"name": 7}),
                   limit=USER_LIMIT)
    items = limited.table_items()
    assert not [i for i in items if "region" in i and i.get("org_id", {}).get("S") == user.org_id]  # no cluster
    user_id = jwt.decode(user.token, options={"verify_signature": False})["sub"]
    assert limited.raw_item(keys.idempotency(f"user:{user_id}", key)) is None

    fresh_window(limited, refused)
    created = send(limited, "POST", clusters_path(user.org_id), token=user.token, body=cluster_body(),
                   headers={"Idempotency-Key": key})
    assert created.status == 202, created.body
    assert "Idempotent-Replayed" not in created.headers
    listed = send(limited, "GET", clusters_path(user.org_id), token=user.token)
    assert [c["id"] for c in listed.body["items"]] == [created.body["cluster"]["id"]]


def test_concurrent_requests_are_never_counted_past_the_limit(limited: Stack) -> None:
    user = register(limited)
    fresh_window(limited, me(limited, user))
    results = send_together(limited, "GET", "/v1/auth/me", [None] * (USER_LIMIT + 7), token=user.token)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * USER_LIMIT + [429] * 7, statuses
    assert all(body["error"]["code"] == "rate_limited" for status, body in results if status == 429)


# --- headers --------------------------------------------------------------------------------------------------


def test_every_answer_of_a_limited_route_states_the_quota_consistently(limited: Stack) -> None:
    user = register(limited)
    fresh_window(limited, me(limited, user))
    answers = [
        me(limited, user),
        send(limited, "GET", f"/v1/orgs/{user.org_id}/clusters/cls_missing", token=user.token),  # 404
        send(limited, "POST", clusters_path(user.org_id), token=user.token, body={"name": 7}),  # 400
        send(limited, "GET", f"/v1/orgs/{user.org_id}", token=user.token),
    ]
    assert [a.status for a in answers] == [200, 404, 400, 200], [a.body for a in answers]
    quotas = [a.quota() for a in answers]
    assert [q[0] for q in quotas] == [USER_LIMIT] * 4
    assert [q[1] for q in quotas] == [USER_LIMIT - 1, USER_LIMIT - 2, USER_LIMIT - 3, USER_LIMIT - 4]
    resets = [q[2] for q in quotas]
    assert all(1 <= r <= 60 for r in resets) and resets == sorted(resets, reverse=True), resets


def test_unlimited_routes_and_unauthenticated_requests_carry_no_quota_and_spend_none(limited: Stack) -> None:
    user = register(limited)
    fresh_window(limited, me(limited, user))
    for path in ("/health", "/openapi.json", "/v1/catalog"):
        answer = send(limited, "GET", path)
        assert answer.status == 200 and not any(name in answer.headers for name in HEADERS), (path, dict(answer.headers))
    forged = send(limited, "GET", "/v1/auth/me", token=user.token[:-4] + "AAAA")
    assert forged.status == 401 and "RateLimit-Remaining" not in forged.headers
    assert me(limited, user).quota()[1] == USER_LIMIT - 1


def test_cors_exposes_the_quota_headers_to_the_dashboard(limited: Stack) -> None:
    user = register(limited)
    answer = send(limited, "GET", "/v1/auth/me", token=user.token, headers={"Origin": "http://localhost:3000"})
    exposed = {h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"} <= exposed


def test_the_openapi_document_declares_the_429_and_the_headers_of_exactly_the_limited_routes(limited: Stack) -> None:
    document = send(limited, "GET", "/openapi.json").body
    unlimited = {("get", "/health"), ("get", "/openapi.json"), ("get", "/v1/catalog"), ("post", "/v1/auth/refresh"),
                 ("get", "/metrics")}
    operations = [(method, path, spec) for path, item in document["paths"].items() for method, spec in item.items()]
    assert unlimited <= {(method, path) for method, path, _ in operations}
    for method, path, spec in operations:
        responses = spec["responses"]
        success = next(code for code in responses if code.startswith("2"))
        if (method, path) in unlimited:
            assert "429" not in responses, (method, path)
            assert not set(HEADERS) & set(responses[success]["headers"]), (method, path)
            continue
        assert "Retry-After" in responses["429"]["headers"], (method, path)
        for code in (success, "429"):
            assert all(responses[code]["headers"][name]["required"] for name in HEADERS), (method, path, code)
        for code, response in responses.items():
            assert set(HEADERS) <= set(response["headers"]), (method, path, code)


# --- login and registration, per address ----------------------------------------------------------------------


def test_login_and_registration_share_a_limit_per_address_apart_from_the_user_limit(limited: Stack) -> None:
    address = new_address()
    user = register(limited, address=address)
    first = login(limited, user.email, address=address)
    assert first.status == 200 and first.quota()[0] == AUTH_LIMIT, first.body
    fresh_window(limited, first)
    answers = [login(limited, user.email, address=address) for _ in range(AUTH_LIMIT)]
    assert [a.status for a in answers] == [200] * AUTH_LIMIT, [a.body for a in answers]
    assert [a.quota()[1] for a in answers] == list(range(AUTH_LIMIT - 1, -1, -1))
    assert_refused(login(limited, user.email, address=address), limit=AUTH_LIMIT)

    email = f"refused-{uuid.uuid4().hex[:12]}@example.com"
    refused = send(limited, "POST", "/v1/auth/register", address=address, body={
        "email": email, "password": PASSWORD, "name": "Refused", "organization_name": "Refused Org"})
    assert_refused(refused, limit=AUTH_LIMIT)
    assert limited.raw_item(keys.email_claim(email)) is None

    # The user's own requests and other addresses are unaffected.
    assert me(limited, user).quota()[:2] == (USER_LIMIT, USER_LIMIT - 1)
    elsewhere = login(limited, user.email, address=new_address())
    assert elsewhere.status == 200, elsewhere.body


def test_a_login_refused_for_its_address_checks_no_password(limited: Stack) -> None:
    address = new_address()
    user = register(limited, address=address)
    fresh_window(limited, login(limited, user.email, address=address))  # a success clears the failed-login count
    for attempt in range(AUTH_LIMIT):
        assert login(limited, user.email, f"wrong password {attempt}", address=address).status == 401
    for attempt in range(5):
        assert_refused(login(limited, user.email, f"refused guess {attempt}", address=address), limit=AUTH_LIMIT)
    failures = limited.raw_item(keys.login_failures(user.email))
    assert failures is not None and int(failures["count"]["N"]) == AUTH_LIMIT  # the refused guesses were not counted


def test_concurrent_registrations_from_one_address_never_exceed_its_limit(limited: Stack) -> None:
    # send_together connects from 127.0.0.1, which no other test of this module logs in or registers from.
    fresh_window(limited, login(limited, "nobody@example.com", address="127.0.0.1"))
    bodies = [{"email": f"race-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD, "name": "Racer",
               "organization_name": "Race Org"} for _ in range(AUTH_LIMIT + 5)]
    results = send_together(limited, "POST", "/v1/auth/register", bodies)
    assert sorted(status for status, _ in results) == [201] * AUTH_LIMIT + [429] * 5, results
    created = sorted(body["user"]["email"] for status, body in results if status == 201)
    registered = sorted(b["email"] for b in bodies if limited.raw_item(keys.email_claim(b["email"])) is not None)
    assert registered == created


# --- agents ---------------------------------------------------------------------------------------------------


def heartbeat(stack: Stack, token: str) -> Answer:
    return send(stack, "POST", "/v1/agent/heartbeat", token=token, body={"agent_version": "test"})


def test_agents_have_their_own_higher_limit_per_token(limited: Stack) -> None:
    agent, other_agent = limited.agent_token("nyc1"), limited.agent_token("nyc1")
    fresh_window(limited, heartbeat(limited, agent.token))
    answers = [heartbeat(limited, agent.token) for _ in range(AGENT_LIMIT)]
    assert [a.status for a in answers] == [200] * AGENT_LIMIT, [a.body for a in answers]
    assert AGENT_LIMIT > USER_LIMIT and answers[-1].quota()[:2] == (AGENT_LIMIT, 0)
    assert_refused(heartbeat(limited, agent.token), limit=AGENT_LIMIT)
    assert_refused(send(limited, "GET", "/v1/agent/clusters", token=agent.token), limit=AGENT_LIMIT)

    other = heartbeat(limited, other_agent.token)
    assert other.status == 200 and other.quota()[0] == AGENT_LIMIT, other.body
    user = register(limited)
    assert me(limited, user).quota()[0] == USER_LIMIT


# --- settings -------------------------------------------------------------------------------------------------


def test_limits_default_to_what_dbaas_apis_allow_and_refuse_nonsense(stack_env: dict[str, str]) -> None:
    settings = Settings.from_env({k: v for k, v in stack_env.items() if k not in LIMITS})
    assert (settings.rate_limit_user_per_minute, settings.rate_limit_agent_per_minute,
            settings.rate_limit_auth_per_minute) == (700, 6000, 60)
    for name in LIMITS:
        for bad in ("0", "-1", "many"):
            with pytest.raises(SettingsError, match=name):
                Settings.from_env({**stack_env, name: bad})
