"""DynamoDB requests and items read per endpoint, counted on the botocore client every entity model shares.

Each scenario prepares its state through the API (not counted), then returns the one request to
measure (or, for the scheduled reaper, the in-process call). The table shows the calls that request
made, by operation, the items DynamoDB read for them (counted from the responses), an estimate of the
on-demand request units from the sizes of the items read and written, the capacity the server reports
(`ReturnConsumedCapacity: TOTAL` is added to every call), the SQS messages sent, and the theoretical
minimum where the code could do fewer round trips. To cover a new endpoint, add a function decorated
with `@scenario(...)`.

    .venv/bin/python -m bench.dynamo_calls
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.counting import AwsCalls, DynamoCalls, sqs_client
from bench.inprocess import (
    Api,
    agent_token,
    app_in_process,
    create_cluster,
    invite,
    join,
    new_email,
    reaper_event,
    register,
    report_status,
    settle,
)
from bench.report import heading, markdown_table
from devstack.harness import Account, PASSWORD, cluster_body, cluster_path, clusters_path


@dataclass
class Request:
    method: str
    path: str
    status: int
    token: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    run: Callable[[], str] | None = None  # an in-process call instead of an HTTP request; returns a summary
    expect: str = ""  # the summary `run` should return


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


@scenario("POST /v1/auth/register (new organization)")
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


@scenario("POST /v1/auth/login (success)")
def _login(api: Api) -> Request:
    account = register(api)
    return Request("POST", "/v1/auth/login", 200, body={"email": account.email, "password": PASSWORD})


@scenario("POST /v1/auth/login (success after a failure)")
def _login_after_failure(api: Api) -> Request:
    account = register(api)
    api.call("POST", "/v1/auth/login", body={"email": account.email, "password": "wrong password!"})
    return Request("POST", "/v1/auth/login", 200, body={"email": account.email, "password": PASSWORD})


@scenario("POST /v1/auth/login (wrong password, first failure)")
def _login_first_failure(api: Api) -> Request:
    account = register(api)
    return Request("POST", "/v1/auth/login", 401, body={"email": account.email, "password": "wrong password!"})


@scenario("POST /v1/auth/login (wrong password, repeated)", minimum=2,
          how="only if the e-mail claim carried the password hash (one GetItem instead of claim then user)")
def _login_repeat_failure(api: Api) -> Request:
    account = register(api)
    api.call("POST", "/v1/auth/login", body={"email": account.email, "password": "wrong password!"})
    return Request("POST", "/v1/auth/login", 401, body={"email": account.email, "password": "wrong password!"})


@scenario("POST /v1/auth/login (unknown e-mail)")
def _login_unknown(api: Api) -> Request:
    return Request("POST", "/v1/auth/login", 401, body={"email": new_email("nobody"), "password": PASSWORD})


@scenario("POST /v1/auth/login (locked out, 429)")
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


@scenario("GET /v1/orgs/{id} as a non-member (404)")
def _get_org_stranger(api: Api) -> Request:
    owner, stranger = register(api), register(api)
    return Request("GET", f"/v1/orgs/{owner.org_id}", 404, token=stranger.access_token)


@scenario("PATCH /v1/orgs/{id} (rename)")
def _rename_org(api: Api) -> Request:
    owner = register(api)
    return Request("PATCH", f"/v1/orgs/{owner.org_id}", 200, token=owner.access_token, body={"name": "Renamed"})


@scenario("GET /v1/orgs/{id}/members")
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


@scenario("DELETE /v1/orgs/{id}/members/{self} (leave)")
def _leave(api: Api) -> Request:
    owner, member = _owner_with_member(api)
    return Request("DELETE", f"/v1/orgs/{owner.org_id}/members/{member.user_id}", 204, token=member.access_token)


# --- invitations ---------------------------------------------------------------------------------


@scenario("POST /v1/orgs/{id}/invitations")
def _invite(api: Api) -> Request:
    owner = register(api)
    return Request("POST", f"/v1/orgs/{owner.org_id}/invitations", 201, token=owner.access_token,
                   body={"email": new_email("invitee"), "role": "member"})


@scenario("GET /v1/orgs/{id}/invitations")
def _list_invitations(api: Api) -> Request:
    owner = register(api)
    invite(api, owner, email=new_email("invitee"))
    return Request("GET", f"/v1/orgs/{owner.org_id}/invitations", 200, token=owner.access_token)


@scenario("DELETE /v1/orgs/{id}/invitations/{id} (revoke)")
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


# --- clusters ------------------------------------------------------------------------------------

IDEMPOTENT_WRITE = (
    "read the idempotency record in the same BatchGetItem as the session (its key is the caller and the header) "
    "and write it, completed, inside the mutation's transaction (attribute_not_exists), instead of a claim PutItem "
    "before and an UpdateItem after; keeping the separate idempotency layer, the minimum is 2 more than without a key"
)
REPLAY = ("one BatchGetItem of the session and the idempotency record: a live record is replayed without the "
          "failing claim PutItem (which also costs a write unit) and the GetItem after it")


def _owner_and_cluster(api: Api, **fields: Any) -> tuple[Account, dict[str, Any]]:
    owner = register(api)
    return owner, create_cluster(api, owner, **fields)["cluster"]


_AGENTS: dict[str, str] = {}


def _agent(region: str = "nyc1") -> str:
    if region not in _AGENTS:
        _AGENTS[region] = agent_token(region)
    return _AGENTS[region]


def _running_cluster(api: Api, **fields: Any) -> tuple[Account, dict[str, Any]]:
    """A cluster the agent has reported ready with an endpoint (its create operation closed)."""
    owner, cluster = _owner_and_cluster(api, **fields)
    settle(api, _agent(cluster["region"]), cluster)
    return owner, cluster


@scenario("GET /v1/catalog")
def _catalog(api: Api) -> Request:
    return Request("GET", "/v1/catalog", 200)


@scenario("POST /v1/orgs/{org}/clusters")
def _create_cluster(api: Api) -> Request:
    owner = register(api)
    return Request("POST", clusters_path(owner.org_id), 202, token=owner.access_token, body=cluster_body())


@scenario("POST /v1/orgs/{org}/clusters with Idempotency-Key", minimum=2, how=IDEMPOTENT_WRITE)
def _create_cluster_key(api: Api) -> Request:
    owner = register(api)
    return Request("POST", clusters_path(owner.org_id), 202, token=owner.access_token, body=cluster_body(),
                   headers={"idempotency-key": new_email("key")})


@scenario("GET /v1/orgs/{org}/clusters (org with 5 clusters)")
def _list_clusters(api: Api) -> Request:
    owner = register(api)
    for _ in range(5):
        create_cluster(api, owner)
    return Request("GET", clusters_path(owner.org_id), 200, token=owner.access_token)


@scenario("GET /v1/orgs/{org}/clusters?status=running (1 of 5 running)")
def _list_clusters_filtered(api: Api) -> Request:
    owner = register(api)
    clusters = [create_cluster(api, owner)["cluster"] for _ in range(5)]
    settle(api, _agent(), clusters[0])
    return Request("GET", clusters_path(owner.org_id) + "?status=running", 200, token=owner.access_token)


@scenario("GET .../clusters/{id}")
def _get_cluster(api: Api) -> Request:
    owner, cluster = _owner_and_cluster(api)
    return Request("GET", cluster_path(owner.org_id, cluster["id"]), 200, token=owner.access_token)


@scenario("PATCH .../clusters/{id} (ip_allowlist)")
def _patch_cluster(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("PATCH", cluster_path(owner.org_id, cluster["id"]), 202, token=owner.access_token,
                   body={"ip_allowlist": ["203.0.113.0/24"]})


@scenario("PATCH .../clusters/{id} (rename)")
def _rename_cluster(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("PATCH", cluster_path(owner.org_id, cluster["id"]), 202, token=owner.access_token,
                   body={"name": f"renamed-{cluster['name']}"[:40]})


@scenario("PATCH .../clusters/{id} (deletion_protection off)")
def _unprotect_cluster(api: Api) -> Request:
    owner, cluster = _running_cluster(api, deletion_protection=True)
    return Request("PATCH", cluster_path(owner.org_id, cluster["id"]), 202, token=owner.access_token,
                   body={"deletion_protection": False})


@scenario("POST .../clusters/{id}/scale")
def _scale(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", 202, token=owner.access_token,
                   body={"instances": 2})


@scenario("POST .../clusters/{id}/scale with Idempotency-Key", minimum=2, how=IDEMPOTENT_WRITE)
def _scale_key(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", 202, token=owner.access_token,
                   body={"instances": 2}, headers={"idempotency-key": new_email("key")})


@scenario("POST .../clusters/{id}/scale, replayed (same key and body)", minimum=1, how=REPLAY)
def _scale_replay(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    path, key = cluster_path(owner.org_id, cluster["id"]) + "/scale", new_email("key")
    first = api.call("POST", path, token=owner.access_token, body={"instances": 2}, headers={"idempotency-key": key})
    if first.status != 202:
        raise RuntimeError(f"scale failed: {first.status} {first.body}")
    return Request("POST", path, 202, token=owner.access_token, body={"instances": 2}, headers={"idempotency-key": key})


@scenario("DELETE .../clusters/{id}")
def _delete_cluster(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("DELETE", cluster_path(owner.org_id, cluster["id"]), 202, token=owner.access_token)


@scenario("GET .../clusters/{id}/operations (3 operations)")
def _list_operations(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    for instances in (2, 3):
        reply = api.call("POST", cluster_path(owner.org_id, cluster["id"]) + "/scale", token=owner.access_token,
                         body={"instances": instances})
        if reply.status != 202:
            raise RuntimeError(f"scale failed: {reply.status} {reply.body}")
    return Request("GET", cluster_path(owner.org_id, cluster["id"]) + "/operations", 200, token=owner.access_token)


@scenario("GET .../clusters/{id}/operations/{op}", minimum=1,
          how="one BatchGetItem of session, membership, cluster and operation (all named by the JWT and the path)")
def _get_operation(api: Api) -> Request:
    owner = register(api)
    created = create_cluster(api, owner)
    path = cluster_path(owner.org_id, created["cluster"]["id"]) + f"/operations/{created['operation']['id']}"
    return Request("GET", path, 200, token=owner.access_token)


@scenario("GET .../clusters/{id}/credentials")
def _credentials(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    return Request("GET", cluster_path(owner.org_id, cluster["id"]) + "/credentials", 200, token=owner.access_token)


@scenario("GET .../clusters/{id}/metrics (10 samples in the window)")
def _metrics(api: Api) -> Request:
    owner, cluster = _running_cluster(api)
    _post_samples(api, [cluster["id"]], per_cluster=10)
    return Request("GET", cluster_path(owner.org_id, cluster["id"]) + "/metrics", 200, token=owner.access_token)


def _samples(cluster_ids: list[str], per_cluster: int) -> dict[str, Any]:
    at = int(time.time())
    return {"samples": [{"cluster_id": cid, "at": at - 60 * i, "values": {"cpu_percent": 12.5, "connections": 3}}
                        for cid in cluster_ids for i in range(per_cluster)]}


def _post_samples(api: Api, cluster_ids: list[str], per_cluster: int, region: str = "nyc1") -> None:
    reply = api.call("POST", "/v1/agent/metrics", token=_agent(region), body=_samples(cluster_ids, per_cluster))
    if reply.status != 200:
        raise RuntimeError(f"metrics failed: {reply.status} {reply.body}")


# --- the agent ------------------------------------------------------------------------------------


@scenario("POST /v1/agent/heartbeat", minimum=1,
          how="one UpdateItem conditioned on the token's hash, region and not being revoked (a failed condition is "
              "the 401) instead of GetItem then UpdateItem")
def _heartbeat(api: Api) -> Request:
    return Request("POST", "/v1/agent/heartbeat", 200, token=_agent(), body={"agent_version": "1.2.3"})


@scenario("GET /v1/agent/clusters (resync, region with 3 clusters)")
def _resync(api: Api) -> Request:
    owner = register(api)
    for _ in range(3):
        create_cluster(api, owner, region="sgp1")
    return Request("GET", "/v1/agent/clusters", 200, token=_agent("sgp1"))


@scenario("GET /v1/agent/clusters/{id} (desired state)")
def _desired(api: Api) -> Request:
    _, cluster = _owner_and_cluster(api)
    return Request("GET", f"/v1/agent/clusters/{cluster['id']}", 200, token=_agent())


@scenario("POST /v1/agent/clusters/{id}/status (changing: provisioning)")
def _report_change(api: Api) -> Request:
    _, cluster = _owner_and_cluster(api)
    return Request("POST", f"/v1/agent/clusters/{cluster['id']}/status", 200, token=_agent(),
                   body={"observed_generation": 1, "phase": "provisioning", "ready_instances": 0})


@scenario("POST /v1/agent/clusters/{id}/status (changing: ready, closes the operation)")
def _report_ready(api: Api) -> Request:
    _, cluster = _owner_and_cluster(api)
    return Request("POST", f"/v1/agent/clusters/{cluster['id']}/status", 200, token=_agent(),
                   body={"observed_generation": 1, "phase": "ready", "ready_instances": 1,
                         "endpoint": {"host": "db.example.net", "port": 5432}})


@scenario("POST /v1/agent/clusters/{id}/status (unchanged repeat)")
def _report_same(api: Api) -> Request:
    _, cluster = _owner_and_cluster(api)
    status = {"observed_generation": 1, "phase": "provisioning", "ready_instances": 0}
    report_status(api, _agent(), cluster["id"], **status)
    return Request("POST", f"/v1/agent/clusters/{cluster['id']}/status", 200, token=_agent(), body=status)


@scenario("POST /v1/agent/metrics (2 clusters × 5 samples)", minimum=2,
          how="the agent token in the same BatchGetItem as the samples' clusters + the BatchWriteItem")
def _ingest(api: Api) -> Request:
    owner = register(api)
    ids = [create_cluster(api, owner)["cluster"]["id"] for _ in range(2)]
    return Request("POST", "/v1/agent/metrics", 200, token=_agent(), body=_samples(ids, 5))


# --- the scheduled reaper (in-process: app.reap with the event EventBridge sends) ------------------


def _reap() -> str:
    import app
    from chalicelib import lifecycle

    results = []
    sweep = lifecycle.sweep

    def recording(settings: Any) -> Any:
        results.append(sweep(settings))
        return results[-1]

    lifecycle.sweep = recording  # type: ignore[assignment]  # record the sweep app.reap runs
    try:
        app.reap(reaper_event(), None)
    finally:
        lifecycle.sweep = sweep  # type: ignore[assignment]  # as above
    return f"requeued={results[0].requeued}, failed={results[0].failed_operations}"


@scenario("reaper sweep (nothing due; 5 regions)")
def _reap_idle(api: Api) -> Request:
    return Request("CALL", "app.reap", 0, run=_reap, expect="requeued=0, failed=0")


@scenario("reaper sweep (1 stale cluster, 1 overdue operation)")
def _reap_due(api: Api) -> Request:
    from chalicelib.store import cluster_records, keys

    past = int(time.time()) - 7200
    _, stale = _owner_and_cluster(api)
    stale_cluster = cluster_records.get_cluster(stale["id"])
    assert stale_cluster is not None
    cluster_records.touch_unsettled(stale_cluster, at=past)
    owner = register(api)
    created = create_cluster(api, owner)
    cid, op_id = created["cluster"]["id"], created["operation"]["id"]
    operation = cluster_records.get_operation(cid, op_id)
    assert operation is not None
    _, due = keys.open_operation(past, cid, op_id)
    operation.update(actions=[cluster_records.Operation.deadline.set(past), cluster_records.Operation.gsi2sk.set(due)])
    return Request("CALL", "app.reap", 0, run=_reap, expect="requeued=1, failed=1")


# --- the harness ---------------------------------------------------------------------------------


@dataclass
class Measured:
    scenario: Scenario
    status: str
    expected: str
    calls: int
    attempts: int
    breakdown: str
    items_read: int
    items_returned: int
    read_bytes: int
    read_units: float
    write_units: float
    index_write_units: float
    reported_units: float | None
    sqs: str
    dynamo_ms: float
    total_ms: float
    cpu_ms: float

    @property
    def ok(self) -> bool:
        return self.status == self.expected


def measure(api: Api, counter: DynamoCalls, sqs: AwsCalls, item: Scenario, *, attempts: int = 3) -> Measured:
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
        sqs.reset()
        started, cpu = time.perf_counter(), time.process_time()
        if request.run is not None:
            status, expected = request.run(), request.expect
        else:
            reply = api.call(request.method, request.path, token=request.token, body=request.body,
                             headers=request.headers)
            replayed = " (replayed)" if reply.headers.get("idempotent-replayed") == "true" else ""
            status, expected = f"{reply.status}{replayed}", f"{request.status}{replayed}"
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if status == expected or attempt == attempts - 1:
            read, write = counter.capacity()
            return Measured(item, status, expected, len(counter.calls), counter.http_attempts, counter.breakdown(),
                            counter.items_read, counter.items_returned, counter.read_bytes, read, write,
                            counter.index_write_units(), counter.reported_units, sqs.summary(), counter.seconds * 1000, elapsed * 1000,
                            cpu * 1000)
        time.sleep(5)
    raise AssertionError("unreachable")


def units(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def items(r: Measured) -> str:
    if r.items_read == r.items_returned:
        return str(r.items_read)
    return f"{r.items_read} ({r.items_returned} returned)"


def kilobytes(n: int) -> str:
    return f"{n / 1024:.1f}" if n else "0"


def report(results: list[Measured]) -> None:
    heading("DynamoDB requests and items read per endpoint (one request each, in-process against moto)")
    rows = []
    for r in results:
        status = r.status if r.ok else f"**{r.status}** (expected {r.expected})"
        minimum = "" if r.scenario.minimum is None or r.scenario.minimum >= r.calls else f"{r.scenario.minimum}"
        rows.append([r.scenario.name, status, r.calls, r.breakdown, items(r), kilobytes(r.read_bytes),
                     f"{units(r.read_units)} / {units(r.write_units)}"
                     + (f" (+{units(r.index_write_units)} GSI)" if r.index_write_units else ""),
                     units(r.reported_units), r.sqs, minimum])
    print(markdown_table(["endpoint", "status", "requests", "breakdown", "items read", "KB read", "≈ RRU / WRU",
                          "moto CU", "SQS", "minimum"], rows))
    retried = [r for r in results if r.attempts != r.calls]
    if retried:
        print("\nHTTP attempts differ from API calls (botocore retries): "
              + ", ".join(f"{r.scenario.name} {r.attempts}/{r.calls}" for r in retried))
    else:
        print("\nNo botocore retries: HTTP attempts = API calls in every scenario.")
    heading("Where fewer requests would do")
    for r in results:
        if r.scenario.minimum is not None and r.scenario.minimum < r.calls:
            print(f"- **{r.scenario.name}**: {r.calls} → {r.scenario.minimum}: {r.scenario.how}.")
    total_now = sum(r.calls for r in results)
    total_min = sum(min(r.calls, r.scenario.minimum if r.scenario.minimum is not None else r.calls) for r in results)
    print(f"\nAcross these {len(results)} scenarios: {total_now} requests today, {total_min} at the minima above.")
    print("\nItems read: counted from the responses (Query ScannedCount, with Count as 'returned' where a filter "
          "dropped some; BatchGetItem/TransactGetItems Responses; 1 per GetItem that found its item). KB read: the "
          "returned items' sizes by DynamoDB's item-size rules. RRU/WRU: on-demand request units estimated from "
          "those sizes (reads in 4 KB units, strongly consistent 1, eventually consistent ½, a Query rounded up once, "
          "a missing item one unit; writes in 1 KB units; transactional items double, a ConditionCheck counted as "
          "a transactional read; a refused conditional write still pays). +GSI: a lower bound of the index write units "
          "(every GSI projects ALL attributes, so an indexed item is copied whole; 1 KB units). moto CU: the "
          "ConsumedCapacity moto returned for ReturnConsumedCapacity=TOTAL — fixed per operation, not billing "
          "(see docs/benchmarks.md). SQS: messages the app sent to the job queues.")
    heading("Time per request (ms; one sample, indicative only)")
    print("DynamoDB: wall time inside the botocore calls (moto on loopback, far slower than DynamoDB). "
          "Request: wall time of the whole request. App CPU: CPU time of this process (the app, botocore, "
          "Argon2id; moto runs in another process).\n")
    rows = [[r.scenario.name, f"{r.dynamo_ms:.1f}", f"{r.total_ms:.1f}", f"{r.cpu_ms:.1f}"] for r in results]
    print(markdown_table(["endpoint", "DynamoDB", "request", "app CPU"], rows))


def main() -> None:
    with app_in_process(consumed_capacity=True) as (api, counter):
        sqs = AwsCalls()
        sqs.attach(sqs_client(), "sqs")
        report([measure(api, counter, sqs, item) for item in SCENARIOS])


if __name__ == "__main__":
    main()
