"""DynamoDB requests per endpoint, counted on the botocore client every entity model shares.

Each scenario prepares its state through the API (not counted), then returns the one request to
measure. The table shows the calls that request made, by operation, with an estimate of the
on-demand request units, and the theoretical minimum where the code could do fewer round trips.
To cover a new endpoint, add a function decorated with `@scenario(...)`.

    .venv/bin/python -m bench.dynamo_calls
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    PASSWORD, Account, Api, DynamoCalls, heading, invite, join, markdown_table, moto_stack, new_email, register,
    shared_client, use_environment,
)


@dataclass
class Request:
    method: str
    path: str
    status: int
    token: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    prepare: Callable[[Api], Request]
    minimum: int | None = None  # fewest DynamoDB requests that could serve it, when lower than today's
    how: str = ""  # how that minimum is reached


SCENARIOS: list[Scenario] = []


Prepare = Callable[[Api], Request]


def scenario(name: str, *, minimum: int | None = None, how: str = "") -> Callable[[Prepare], Prepare]:
    """Register a scenario: `prepare(api)` sets up its state through the API and returns the request to count."""

    def add(prepare: Prepare) -> Prepare:
        SCENARIOS.append(Scenario(name, prepare, minimum, how))
        return prepare

    return add


SESSION_AND_MEMBER = ("BatchGetItem of the session and the caller's membership "
                      "(both keys are known from the JWT and the path)")


# --- unauthenticated and meta -----------------------------------------------------------------


@scenario("GET /health")
def _health(api: Api) -> Request:
    return Request("GET", "/health", 200)


@scenario("GET /openapi.json")
def _openapi(api: Api) -> Request:
    return Request("GET", "/openapi.json", 200)


@scenario("OPTIONS /v1/orgs (CORS preflight)")
def _preflight(api: Api) -> Request:
    return Request("OPTIONS", "/v1/orgs", 204, headers={"origin": "http://localhost:3000",
                                                        "access-control-request-method": "GET"})


@scenario("GET /v1/auth/me with a forged token (401)")
def _forged(api: Api) -> Request:
    return Request("GET", "/v1/auth/me", 401, token="eyJhbGciOiJIUzI1NiJ9.e30.invalid")


# --- accounts and sessions ----------------------------------------------------------------------


@scenario("POST /v1/auth/register (new organization)", minimum=1,
          how="put the session and refresh token in the account transaction (6 items) instead of a second one")
def _register(api: Api) -> Request:
    return Request("POST", "/v1/auth/register", 201, body={
        "email": new_email(), "password": PASSWORD, "name": "Bench User", "organization_name": "Bench Org",
    })


@scenario("POST /v1/auth/register (with invitation)", minimum=2,
          how="BatchGetItem the invitation and its org together (the token names both) + one transaction "
              "carrying the account, membership, session and refresh token (7 items)")
def _register_invited(api: Api) -> Request:
    owner = register(api)
    email = new_email("invited")
    token = invite(api, owner, email=email)["token"]
    return Request("POST", "/v1/auth/register", 201, body={
        "email": email, "password": PASSWORD, "name": "Invited", "invitation_token": token,
    })


# The attempt counter is claimed before the password check (store.claim_login_attempt). One UpdateItem
# can claim it whether or not the item exists: SET count = if_not_exists(count, :zero) + :one,
# window_start = if_not_exists(window_start, :now) under `attribute_not_exists(pk) OR (window_start >
# :cutoff AND count < :limit)`. Only a stale window still needs the conditional PutItem.
ONE_CLAIM = "claim the attempt with one if_not_exists UpdateItem (not a failing UpdateItem then a PutItem)"


@scenario("POST /v1/auth/login (success)", minimum=4,
          how=ONE_CLAIM + "; delete the counter inside the session transaction; "
              "3 if the e-mail claim also carried the user id's password hash and profile")
def _login(api: Api) -> Request:
    account = register(api)
    return Request("POST", "/v1/auth/login", 200, body={"email": account.email, "password": PASSWORD})


@scenario("POST /v1/auth/login (success after a failure)", minimum=4,
          how="delete the counter inside the session transaction")
def _login_after_failure(api: Api) -> Request:
    account = register(api)
    api.call("POST", "/v1/auth/login", body={"email": account.email, "password": "wrong password!"})
    return Request("POST", "/v1/auth/login", 200, body={"email": account.email, "password": PASSWORD})


@scenario("POST /v1/auth/login (wrong password, first failure)", minimum=3, how=ONE_CLAIM)
def _login_first_failure(api: Api) -> Request:
    account = register(api)
    return Request("POST", "/v1/auth/login", 401, body={"email": account.email, "password": "wrong password!"})


@scenario("POST /v1/auth/login (wrong password, repeated)", minimum=2,
          how="only if the e-mail claim carried the password hash (one GetItem instead of claim then user)")
def _login_repeat_failure(api: Api) -> Request:
    account = register(api)
    api.call("POST", "/v1/auth/login", body={"email": account.email, "password": "wrong password!"})
    return Request("POST", "/v1/auth/login", 401, body={"email": account.email, "password": "wrong password!"})


@scenario("POST /v1/auth/login (unknown e-mail)", minimum=2, how=ONE_CLAIM)
def _login_unknown(api: Api) -> Request:
    return Request("POST", "/v1/auth/login", 401, body={"email": new_email("nobody"), "password": PASSWORD})


@scenario("POST /v1/auth/login (locked out, 429)", minimum=2,
          how=ONE_CLAIM + " then the GetItem for Retry-After; 1 if the refused UpdateItem returned the old item "
              "(ReturnValuesOnConditionCheckFailure=ALL_OLD, which pynamodb 6.1's Model.update does not expose)")
def _login_locked(api: Api) -> Request:
    email = new_email("locked")
    for _ in range(10):  # LOGIN_MAX_FAILURES defaults to 10
        api.call("POST", "/v1/auth/login", body={"email": email, "password": "wrong password!"})
    return Request("POST", "/v1/auth/login", 429, body={"email": email, "password": PASSWORD})


@scenario("POST /v1/auth/refresh", minimum=3,
          how="drop the session GetItem: the transaction already conditions on the session being live, and the "
              "refresh record's expires_ttl already equals the session's expires_at")
def _refresh(api: Api) -> Request:
    return Request("POST", "/v1/auth/refresh", 200, body={"refresh_token": register(api).refresh_token})


@scenario("POST /v1/auth/refresh (reused token: revokes the session)")
def _refresh_reuse(api: Api) -> Request:
    account = register(api)
    api.call("POST", "/v1/auth/refresh", body={"refresh_token": account.refresh_token})
    return Request("POST", "/v1/auth/refresh", 401, body={"refresh_token": account.refresh_token})


@scenario("POST /v1/auth/logout")
def _logout(api: Api) -> Request:
    return Request("POST", "/v1/auth/logout", 204, token=register(api).access_token)


@scenario("GET /v1/auth/me", minimum=1, how="one BatchGetItem of the session and the user (sid and sub are in the JWT)")
def _me(api: Api) -> Request:
    return Request("GET", "/v1/auth/me", 200, token=register(api).access_token)


# --- organizations -------------------------------------------------------------------------------


def _owner_with_member(api: Api, role: str = "member") -> tuple[Account, Account]:
    owner = register(api)
    return owner, join(api, owner, role=role)


@scenario("GET /v1/orgs", minimum=2,
          how="only by copying the org name onto each membership (renames then fan out); otherwise minimal")
def _list_orgs(api: Api) -> Request:
    return Request("GET", "/v1/orgs", 200, token=register(api).access_token)


@scenario("GET /v1/orgs/{id}", minimum=1,
          how="one BatchGetItem of session, membership and org (all keys known up front)")
def _get_org(api: Api) -> Request:
    owner = register(api)
    return Request("GET", f"/v1/orgs/{owner.org_id}", 200, token=owner.access_token)


@scenario("GET /v1/orgs/{id} as a non-member (404)", minimum=1, how=SESSION_AND_MEMBER)
def _get_org_stranger(api: Api) -> Request:
    owner, stranger = register(api), register(api)
    return Request("GET", f"/v1/orgs/{owner.org_id}", 404, token=stranger.access_token)


@scenario("PATCH /v1/orgs/{id} (rename)", minimum=2, how=SESSION_AND_MEMBER + " + the UpdateItem")
def _rename_org(api: Api) -> Request:
    owner = register(api)
    return Request("PATCH", f"/v1/orgs/{owner.org_id}", 200, token=owner.access_token, body={"name": "Renamed"})


@scenario("GET /v1/orgs/{id}/members", minimum=2, how=SESSION_AND_MEMBER + " + the Query")
def _list_members(api: Api) -> Request:
    owner, _ = _owner_with_member(api)
    return Request("GET", f"/v1/orgs/{owner.org_id}/members", 200, token=owner.access_token)


@scenario("PATCH /v1/orgs/{id}/members/{user} (member → admin)", minimum=2,
          how="one BatchGetItem of session, actor and target memberships + the transaction")
def _change_role(api: Api) -> Request:
    owner, member = _owner_with_member(api)
    return Request("PATCH", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", 200, token=owner.access_token,
                   body={"role": "admin"})


@scenario("PATCH /v1/orgs/{id}/members/{user} (member → owner)", minimum=2,
          how="one BatchGetItem of session, actor and target memberships + the transaction")
def _promote_owner(api: Api) -> Request:
    owner, member = _owner_with_member(api)
    return Request("PATCH", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", 200, token=owner.access_token,
                   body={"role": "owner"})


@scenario("DELETE /v1/orgs/{id}/members/{user} (remove a member)", minimum=2,
          how="one BatchGetItem of session, actor and target memberships + the transaction")
def _remove_member(api: Api) -> Request:
    owner, member = _owner_with_member(api)
    return Request("DELETE", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", 204, token=owner.access_token)


@scenario("DELETE /v1/orgs/{id}/members/{self} (leave)", minimum=2, how=SESSION_AND_MEMBER + " + the transaction")
def _leave(api: Api) -> Request:
    owner, member = _owner_with_member(api)
    return Request("DELETE", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", 204, token=member.access_token)


# --- invitations ---------------------------------------------------------------------------------


@scenario("POST /v1/orgs/{id}/invitations", minimum=2, how=SESSION_AND_MEMBER + " + the PutItem")
def _invite(api: Api) -> Request:
    owner = register(api)
    return Request("POST", f"/v1/orgs/{owner.org_id}/invitations", 201, token=owner.access_token,
                   body={"email": new_email("invitee"), "role": "member"})


@scenario("GET /v1/orgs/{id}/invitations", minimum=2, how=SESSION_AND_MEMBER + " + the Query")
def _list_invitations(api: Api) -> Request:
    owner = register(api)
    invite(api, owner, email=new_email("invitee"))
    return Request("GET", f"/v1/orgs/{owner.org_id}/invitations", 200, token=owner.access_token)


@scenario("DELETE /v1/orgs/{id}/invitations/{id} (revoke)", minimum=2, how=SESSION_AND_MEMBER + " + the DeleteItem")
def _revoke_invitation(api: Api) -> Request:
    owner = register(api)
    invitation = invite(api, owner, email=new_email("invitee"))
    return Request("DELETE", f"/v1/orgs/{owner.org_id}/invitations/{invitation['id']}", 204, token=owner.access_token)


@scenario("POST /v1/invitations/accept (existing user)", minimum=2,
          how="one BatchGetItem of session, user, invitation and org (the JWT and the token name them all) "
              "+ the transaction")
def _accept(api: Api) -> Request:
    owner, guest = register(api), register(api)
    token = invite(api, owner, email=guest.email)["token"]
    return Request("POST", "/v1/invitations/accept", 200, token=guest.access_token, body={"token": token})


# --- the harness ---------------------------------------------------------------------------------


@dataclass
class Measured:
    scenario: Scenario
    status: int
    expected: int
    calls: int
    attempts: int
    breakdown: str
    read_units: float
    write_units: float
    dynamo_ms: float
    total_ms: float
    cpu_ms: float


def measure(api: Api, counter: DynamoCalls, item: Scenario, *, attempts: int = 3) -> Measured:
    """Run one scenario; retried a few times when the app answers an unexpected status."""
    for attempt in range(attempts):
        try:
            request = item.prepare(api)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(5)
            continue
        counter.reset()
        started, cpu = time.perf_counter(), time.process_time()
        reply = api.call(request.method, request.path, token=request.token, body=request.body, headers=request.headers)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if reply.status == request.status or attempt == attempts - 1:
            read, write = counter.capacity()
            return Measured(item, reply.status, request.status, len(counter.calls), counter.http_attempts,
                            counter.breakdown(), read, write, counter.seconds * 1000, elapsed * 1000, cpu * 1000)
        time.sleep(5)
    raise AssertionError("unreachable")


def units(value: float) -> str:
    return f"{value:g}"


def report(results: list[Measured]) -> None:
    heading("DynamoDB requests per endpoint (one request each, in-process against moto)")
    rows = []
    for r in results:
        status = f"{r.status}" if r.status == r.expected else f"**{r.status}** (expected {r.expected})"
        minimum = "" if r.scenario.minimum is None or r.scenario.minimum >= r.calls else f"{r.scenario.minimum}"
        rows.append([r.scenario.name, status, r.calls, r.breakdown, f"{units(r.read_units)} / {units(r.write_units)}",
                     minimum])
    print(markdown_table(["endpoint", "status", "requests", "breakdown", "≈ RRU / WRU", "minimum"], rows))
    retried = [r for r in results if r.attempts != r.calls]
    if retried:
        print("\nHTTP attempts differ from API calls (botocore retries): "
              + ", ".join(f"{r.scenario.name} {r.attempts}/{r.calls}" for r in retried))
    heading("Where fewer requests would do")
    for r in results:
        if r.scenario.minimum is not None and r.scenario.minimum < r.calls:
            print(f"- **{r.scenario.name}**: {r.calls} → {r.scenario.minimum}: {r.scenario.how}.")
    total_now = sum(r.calls for r in results)
    total_min = sum(min(r.calls, r.scenario.minimum if r.scenario.minimum is not None else r.calls) for r in results)
    print(f"\nAcross these {len(results)} scenarios: {total_now} requests today, {total_min} at the minima above.")
    print("\nRRU/WRU: estimated on-demand request units (items ≤ 1 KB; strongly consistent reads 1, transactional "
          "items 2, ConditionCheck counted as a transactional read; GSI writes not included).")
    heading("Time per request (ms; one sample, indicative only)")
    print("DynamoDB: wall time inside the botocore calls (moto on loopback, far slower than DynamoDB). "
          "Request: wall time of the whole request. App CPU: CPU time of this process (the app, botocore, "
          "Argon2id; moto runs in another process).\n")
    rows = [[r.scenario.name, f"{r.dynamo_ms:.1f}", f"{r.total_ms:.1f}", f"{r.cpu_ms:.1f}"] for r in results]
    print(markdown_table(["endpoint", "DynamoDB", "request", "app CPU"], rows))


def main() -> None:
    with moto_stack() as env:
        use_environment(env)
        api = Api()
        counter = DynamoCalls()
        counter.attach(shared_client())
        report([measure(api, counter, item) for item in SCENARIOS])


if __name__ == "__main__":
    main()
