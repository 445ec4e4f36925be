"""DynamoDB requests and items read per endpoint, counted on the botocore client every entity model shares.

Each scenario is a row of `SCENARIOS`: a setup that prepares its state through the API (not counted) and
returns what the request needs (`Ctx`: the token, ids for the path, values for the body), then the one
request to measure (or, for the scheduled reaper, the in-process call). The table shows the calls that
request made, by operation, the items DynamoDB read for them (counted from the responses), an estimate of
the on-demand request units from the sizes of the items read and written, the capacity the server reports
(`ReturnConsumedCapacity: TOTAL` is added to every call), the SQS messages sent, and the theoretical
minimum where the code could do fewer round trips. To cover a new endpoint, add a row.

    .venv/bin/python -m bench.dynamo_calls
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from devstack.harness import PASSWORD, Account, cluster_body

Ctx = dict[str, Any]  # what a setup returns: "token", path fields (org, cid, op, user, inv) and body values
CLUSTER = "/v1/orgs/{org}/clusters/{cid}"
WRONG = "wrong password!"


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str  # "CALL": `call` runs in-process instead of an HTTP request
    path: str  # formatted with the setup's Ctx
    status: int
    setup: Callable[[Api], Ctx] = lambda api: {}
    body: Callable[[Ctx], Any] | None = None
    headers: Callable[[Ctx], dict[str, str]] | None = None
    minimum: int | None = None  # fewest DynamoDB requests that could serve it, when lower than today's
    how: str = ""  # how that minimum is reached
    call: Callable[[], str] | None = None  # returns a summary, expected to equal `expect`
    expect: str = ""


# --- setups: each prepares the state through the API and names what the request uses ---------------


def owner_ctx(account: Account) -> Ctx:
    return {"token": account.access_token, "org": account.org_id, "email": account.email,
            "refresh": account.refresh_token, "user": account.user_id}


def owner(api: Api) -> Ctx:
    return owner_ctx(register(api))


def failed_logins(times: int) -> Callable[[Api], Ctx]:
    def setup(api: Api) -> Ctx:
        ctx = owner(api)
        for _ in range(times):
            api.call("POST", "/v1/auth/login", body={"email": ctx["email"], "password": WRONG})
        return ctx
    return setup


def locked_out(api: Api) -> Ctx:
    email = new_email("locked")
    for _ in range(10):  # LOGIN_MAX_FAILURES defaults to 10
        api.call("POST", "/v1/auth/login", body={"email": email, "password": WRONG})
    return {"email": email}


def refreshed(api: Api) -> Ctx:
    ctx = owner(api)
    api.call("POST", "/v1/auth/refresh", body={"refresh_token": ctx["refresh"]})
    return ctx


def invited(api: Api) -> Ctx:
    email = new_email("invited")
    return {"email": email, "invitation": invite(api, register(api), email=email)["token"]}


def stranger(api: Api) -> Ctx:
    org = register(api).org_id
    return {"org": org, "token": register(api).access_token}


def with_member(*, as_member: bool = False) -> Callable[[Api], Ctx]:
    def setup(api: Api) -> Ctx:
        account = register(api)
        member = join(api, account, role="member")
        return {**owner_ctx(account), "user": member.user_id, **({"token": member.access_token} if as_member else {})}
    return setup


def with_invitation(api: Api) -> Ctx:
    account = register(api)
    return {**owner_ctx(account), "inv": invite(api, account, email=new_email("invitee"))["id"]}


def guest(api: Api) -> Ctx:
    account, other = register(api), register(api)
    return {"token": other.access_token, "invitation": invite(api, account, email=other.email)["token"]}


_AGENTS: dict[str, str] = {}


def agent(region: str = "nyc1") -> str:
    if region not in _AGENTS:
        _AGENTS[region] = agent_token(region)
    return _AGENTS[region]


def with_cluster(*, running: bool = False, clusters: int = 1, **fields: Any) -> Callable[[Api], Ctx]:
    """An organization with clusters; `running`: the first reported ready with an endpoint (its create closed)."""
    def setup(api: Api) -> Ctx:
        account = register(api)
        created = [create_cluster(api, account, **fields) for _ in range(clusters)]
        if running:
            settle(api, agent(created[0]["cluster"]["region"]), created[0]["cluster"])
        return {**owner_ctx(account), "cid": created[0]["cluster"]["id"], "op": created[0]["operation"]["id"],
                "ids": [c["cluster"]["id"] for c in created], "name": created[0]["cluster"]["name"]}
    return setup


def then(setup: Callable[[Api], Ctx], step: Callable[[Api, Ctx], None]) -> Callable[[Api], Ctx]:
    def both(api: Api) -> Ctx:
        ctx = setup(api)
        step(api, ctx)
        return ctx
    return both


def scaled(*instances: int, key: bool = False) -> Callable[[Api, Ctx], None]:
    def step(api: Api, ctx: Ctx) -> None:
        ctx["key"] = new_email("key") if key else None
        for n in instances:
            headers = {"idempotency-key": ctx["key"]} if key else None
            reply = api.call("POST", CLUSTER.format(**ctx) + "/scale", token=ctx["token"], body={"instances": n},
                             headers=headers)
            if reply.status != 202:
                raise RuntimeError(f"scale failed: {reply.status} {reply.body}")
    return step


def samples(cluster_ids: list[str], per_cluster: int) -> dict[str, Any]:
    at = int(time.time())
    return {"samples": [{"cluster_id": cid, "at": at - 60 * i, "values": {"cpu_percent": 12.5, "connections": 3}}
                        for cid in cluster_ids for i in range(per_cluster)]}


def posted_samples(api: Api, ctx: Ctx) -> None:
    reply = api.call("POST", "/v1/agent/metrics", token=agent(), body=samples([ctx["cid"]], 10))
    if reply.status != 200:
        raise RuntimeError(f"metrics failed: {reply.status} {reply.body}")


def as_agent(setup: Callable[[Api], Ctx], region: str = "nyc1") -> Callable[[Api], Ctx]:
    return lambda api: {**setup(api), "token": agent(region)}


PROVISIONING = {"observed_generation": 1, "phase": "provisioning", "ready_instances": 0}


def reported(api: Api, ctx: Ctx) -> None:
    report_status(api, agent(), ctx["cid"], **PROVISIONING)


def reap() -> str:
    """app.reap with the event EventBridge sends; returns what the sweep it ran (chalicelib.lifecycle.sweep) did."""
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


def stale_and_overdue(api: Api) -> Ctx:
    from chalicelib.store import cluster_records, keys

    past = int(time.time()) - 7200
    stale = cluster_records.get_cluster(with_cluster()(api)["cid"])
    assert stale is not None
    cluster_records.touch_unsettled(stale, at=past)
    ctx = with_cluster()(api)
    operation = cluster_records.get_operation(ctx["cid"], ctx["op"])
    assert operation is not None
    _, due = keys.open_operation(past, ctx["cid"], ctx["op"])
    operation.update(actions=[cluster_records.Operation.deadline.set(past), cluster_records.Operation.gsi2sk.set(due)])
    return {}


IDEMPOTENT_WRITE = (
    "read the idempotency record in the same BatchGetItem as the session (its key is the caller and the header) "
    "and write it, completed, inside the mutation's transaction (attribute_not_exists), instead of a claim PutItem "
    "before and an UpdateItem after; keeping the separate idempotency layer, the minimum is 2 more than without a key"
)
REPLAY = ("one BatchGetItem of the session and the idempotency record: a live record is replayed without the "
          "failing claim PutItem (which also costs a write unit) and the GetItem after it")
MEMBERSHIPS = "one BatchGetItem of session, actor and target memberships + the transaction"
S = Scenario
running = with_cluster(running=True)
new_key: Callable[[Ctx], dict[str, str]] = lambda c: {"idempotency-key": new_email("key")}  # noqa: E731
login: Callable[[Ctx], Any] = lambda c: {"email": c["email"], "password": PASSWORD}  # noqa: E731
wrong: Callable[[Ctx], Any] = lambda c: {"email": c["email"], "password": WRONG}  # noqa: E731

SCENARIOS: list[Scenario] = [
    # unauthenticated and meta
    S("GET /health", "GET", "/health", 200),
    S("GET /openapi.json", "GET", "/openapi.json", 200),
    S("OPTIONS /v1/orgs (CORS preflight)", "OPTIONS", "/v1/orgs", 204,
      headers=lambda c: {"origin": "http://localhost:3000", "access-control-request-method": "GET"}),
    S("GET /v1/auth/me with a forged token (401)", "GET", "/v1/auth/me", 401,
      setup=lambda api: {"token": "eyJhbGciOiJIUzI1NiJ9.e30.invalid"}),
    # accounts and sessions
    S("POST /v1/auth/register (new organization)", "POST", "/v1/auth/register", 201,
      body=lambda c: {"email": new_email(), "password": PASSWORD, "name": "Bench User",
                      "organization_name": "Bench Org"}),
    S("POST /v1/auth/register (with invitation)", "POST", "/v1/auth/register", 201, invited,
      lambda c: {"email": c["email"], "password": PASSWORD, "name": "Invited", "invitation_token": c["invitation"]},
      minimum=2, how="BatchGetItem the invitation and its org together (the token names both) + one transaction "
                     "carrying the account, membership, session and refresh token (7 items)"),
    S("POST /v1/auth/login (success)", "POST", "/v1/auth/login", 200, owner, login),
    S("POST /v1/auth/login (success after a failure)", "POST", "/v1/auth/login", 200, failed_logins(1), login),
    S("POST /v1/auth/login (wrong password, first failure)", "POST", "/v1/auth/login", 401, owner, wrong),
    S("POST /v1/auth/login (wrong password, repeated)", "POST", "/v1/auth/login", 401, failed_logins(1), wrong,
      minimum=2, how="only if the e-mail claim carried the password hash (one GetItem instead of claim then user)"),
    S("POST /v1/auth/login (unknown e-mail)", "POST", "/v1/auth/login", 401,
      body=lambda c: {"email": new_email("nobody"), "password": PASSWORD}),
    S("POST /v1/auth/login (locked out, 429)", "POST", "/v1/auth/login", 429, locked_out, login),
    S("POST /v1/auth/refresh", "POST", "/v1/auth/refresh", 200, owner, lambda c: {"refresh_token": c["refresh"]},
      minimum=3, how="drop the session GetItem: the transaction already conditions on the session being live, and "
                     "the refresh record's expires_ttl already equals the session's expires_at"),
    S("POST /v1/auth/refresh (reused token: revokes the session)", "POST", "/v1/auth/refresh", 401, refreshed,
      lambda c: {"refresh_token": c["refresh"]}),
    S("POST /v1/auth/logout", "POST", "/v1/auth/logout", 204, owner),
    S("GET /v1/auth/me", "GET", "/v1/auth/me", 200, owner,
      minimum=1, how="one BatchGetItem of the session and the user (sid and sub are in the JWT)"),
    # organizations
    S("GET /v1/orgs", "GET", "/v1/orgs", 200, owner,
      minimum=2, how="only by copying the org name onto each membership (renames then fan out); otherwise minimal"),
    S("GET /v1/orgs/{id}", "GET", "/v1/orgs/{org}", 200, owner,
      minimum=1, how="one BatchGetItem of session, membership and org (all keys known up front)"),
    S("GET /v1/orgs/{id} as a non-member (404)", "GET", "/v1/orgs/{org}", 404, stranger),
    S("PATCH /v1/orgs/{id} (rename)", "PATCH", "/v1/orgs/{org}", 200, owner, lambda c: {"name": "Renamed"}),
    S("GET /v1/orgs/{id}/members", "GET", "/v1/orgs/{org}/members", 200, with_member()),
    S("PATCH /v1/orgs/{id}/members/{user} (member → admin)", "PATCH", "/v1/orgs/{org}/members/{user}", 200,
      with_member(), lambda c: {"role": "admin"}, minimum=2, how=MEMBERSHIPS),
    S("PATCH /v1/orgs/{id}/members/{user} (member → owner)", "PATCH", "/v1/orgs/{org}/members/{user}", 200,
      with_member(), lambda c: {"role": "owner"}, minimum=2, how=MEMBERSHIPS),
    S("DELETE /v1/orgs/{id}/members/{user} (remove a member)", "DELETE", "/v1/orgs/{org}/members/{user}", 204,
      with_member(), minimum=2, how=MEMBERSHIPS),
    S("DELETE /v1/orgs/{id}/members/{self} (leave)", "DELETE", "/v1/orgs/{org}/members/{user}", 204,
      with_member(as_member=True)),
    # invitations
    S("POST /v1/orgs/{id}/invitations", "POST", "/v1/orgs/{org}/invitations", 201, owner,
      lambda c: {"email": new_email("invitee"), "role": "member"}),
    S("GET /v1/orgs/{id}/invitations", "GET", "/v1/orgs/{org}/invitations", 200, with_invitation),
    S("DELETE /v1/orgs/{id}/invitations/{id} (revoke)", "DELETE", "/v1/orgs/{org}/invitations/{inv}", 204,
      with_invitation),
    S("POST /v1/invitations/accept (existing user)", "POST", "/v1/invitations/accept", 200, guest,
      lambda c: {"token": c["invitation"]}, minimum=2,
      how="one BatchGetItem of session, user, invitation and org (the JWT and the token name them all) "
          "+ the transaction"),
    # clusters
    S("GET /v1/catalog", "GET", "/v1/catalog", 200),
    S("POST /v1/orgs/{org}/clusters", "POST", "/v1/orgs/{org}/clusters", 202, owner, lambda c: cluster_body()),
    S("POST /v1/orgs/{org}/clusters with Idempotency-Key", "POST", "/v1/orgs/{org}/clusters", 202, owner,
      lambda c: cluster_body(), new_key, minimum=2, how=IDEMPOTENT_WRITE),
    S("GET /v1/orgs/{org}/clusters (org with 5 clusters)", "GET", "/v1/orgs/{org}/clusters", 200,
      with_cluster(clusters=5)),
    S("GET /v1/orgs/{org}/clusters?status=running (1 of 5 running)", "GET", "/v1/orgs/{org}/clusters?status=running",
      200, with_cluster(running=True, clusters=5)),
    S("GET .../clusters/{id}", "GET", CLUSTER, 200, with_cluster()),
    S("PATCH .../clusters/{id} (ip_allowlist)", "PATCH", CLUSTER, 202, running,
      lambda c: {"ip_allowlist": ["203.0.113.0/24"]}),
    S("PATCH .../clusters/{id} (rename)", "PATCH", CLUSTER, 202, running,
      lambda c: {"name": f"renamed-{c['name']}"[:40]}),
    S("PATCH .../clusters/{id} (deletion_protection off)", "PATCH", CLUSTER, 202,
      with_cluster(running=True, deletion_protection=True), lambda c: {"deletion_protection": False}),
    S("POST .../clusters/{id}/scale", "POST", CLUSTER + "/scale", 202, running, lambda c: {"instances": 2}),
    S("POST .../clusters/{id}/scale with Idempotency-Key", "POST", CLUSTER + "/scale", 202, running,
      lambda c: {"instances": 2}, new_key, minimum=2, how=IDEMPOTENT_WRITE),
    S("POST .../clusters/{id}/scale, replayed (same key and body)", "POST", CLUSTER + "/scale", 202,
      then(running, scaled(2, key=True)), lambda c: {"instances": 2}, lambda c: {"idempotency-key": c["key"]},
      minimum=1, how=REPLAY),
    S("DELETE .../clusters/{id}", "DELETE", CLUSTER, 202, running),
    S("GET .../clusters/{id}/operations (3 operations)", "GET", CLUSTER + "/operations", 200,
      then(running, scaled(2, 3))),
    S("GET .../clusters/{id}/operations/{op}", "GET", CLUSTER + "/operations/{op}", 200, with_cluster(),
      minimum=1, how="one BatchGetItem of session, membership, cluster and operation (all named by the JWT and the "
                     "path)"),
    S("GET .../clusters/{id}/credentials", "GET", CLUSTER + "/credentials", 200, running),
    S("GET .../clusters/{id}/metrics (10 samples in the window)", "GET", CLUSTER + "/metrics", 200,
      then(running, posted_samples)),
    # the agent
    S("POST /v1/agent/heartbeat", "POST", "/v1/agent/heartbeat", 200, lambda api: {"token": agent()},
      lambda c: {"agent_version": "1.2.3"}, minimum=1,
      how="one UpdateItem conditioned on the token's hash, region and not being revoked (a failed condition is "
          "the 401) instead of GetItem then UpdateItem"),
    S("GET /v1/agent/clusters (resync, region with 3 clusters)", "GET", "/v1/agent/clusters", 200,
      as_agent(with_cluster(clusters=3, region="sgp1"), "sgp1")),
    S("GET /v1/agent/clusters/{id} (desired state)", "GET", "/v1/agent/clusters/{cid}", 200,
      as_agent(with_cluster())),
    S("POST /v1/agent/clusters/{id}/status (changing: provisioning)", "POST", "/v1/agent/clusters/{cid}/status", 200,
      as_agent(with_cluster()), lambda c: PROVISIONING),
    S("POST /v1/agent/clusters/{id}/status (changing: ready, closes the operation)", "POST",
      "/v1/agent/clusters/{cid}/status", 200, as_agent(with_cluster()),
      lambda c: {"observed_generation": 1, "phase": "ready", "ready_instances": 1,
                 "endpoint": {"host": "db.example.net", "port": 5432}}),
    S("POST /v1/agent/clusters/{id}/status (unchanged repeat)", "POST", "/v1/agent/clusters/{cid}/status", 200,
      as_agent(then(with_cluster(), reported)), lambda c: PROVISIONING),
    S("POST /v1/agent/metrics (2 clusters × 5 samples)", "POST", "/v1/agent/metrics", 200,
      as_agent(with_cluster(clusters=2)), lambda c: samples(c["ids"], 5), minimum=2,
      how="the agent token in the same BatchGetItem as the samples' clusters + the BatchWriteItem"),
    # the scheduled reaper, in-process
    S("reaper sweep (nothing due; 5 regions)", "CALL", "app.reap", 0, call=reap, expect="requeued=0, failed=0"),
    S("reaper sweep (1 stale cluster, 1 overdue operation)", "CALL", "app.reap", 0, stale_and_overdue, call=reap,
      expect="requeued=1, failed=1"),
]


@dataclass
class Measured:
    scenario: Scenario
    status: str
    expected: str
    calls: int
    attempts: int
    counted: list[str]  # the table's cells from breakdown to SQS
    times: list[str]  # DynamoDB, request, app CPU (ms)

    @property
    def lower(self) -> int | None:
        """The scenario's recorded minimum when it is below today's count."""
        minimum = self.scenario.minimum
        return minimum if minimum is not None and minimum < self.calls else None


def run(api: Api, item: Scenario, ctx: Ctx) -> tuple[str, str]:
    """The one counted request (or in-process call): the status it got and the one expected."""
    if item.call is not None:
        return item.call(), item.expect
    reply = api.call(item.method, item.path.format(**ctx), token=ctx.get("token"),
                     body=item.body(ctx) if item.body else None, headers=item.headers(ctx) if item.headers else {})
    replayed = " (replayed)" if reply.headers.get("idempotent-replayed") == "true" else ""
    return f"{reply.status}{replayed}", f"{item.status}{replayed}"


def measure(api: Api, counter: DynamoCalls, sqs: AwsCalls, item: Scenario, *, attempts: int = 3) -> Measured:
    """Run one scenario; retried a few times when the app answers an unexpected status."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            ctx = item.setup(api)
        except RuntimeError:
            if last:
                raise
            time.sleep(5)
            continue
        counter.reset()
        sqs.reset()
        started, cpu = time.perf_counter(), time.process_time()
        status, expected = run(api, item, ctx)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if status == expected or last:
            read, write = counter.capacity()
            index = counter.index_write_units()
            items = str(counter.items_read) if counter.items_read == counter.items_returned \
                else f"{counter.items_read} ({counter.items_returned} returned)"
            counted = [counter.breakdown(), items, f"{counter.read_bytes / 1024:.1f}" if counter.read_bytes else "0",
                       f"{units(read)} / {units(write)}" + (f" (+{units(index)} GSI)" if index else ""),
                       units(counter.reported_units), sqs.summary()]
            return Measured(item, status, expected, len(counter.calls), counter.http_attempts, counted,
                            [f"{counter.seconds * 1000:.1f}", f"{elapsed * 1000:.1f}", f"{cpu * 1000:.1f}"])
        time.sleep(5)
    raise AssertionError("unreachable")


def units(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def report(results: list[Measured]) -> None:
    heading("DynamoDB requests and items read per endpoint (one request each, in-process against moto)")
    rows = []
    for r in results:
        status = r.status if r.status == r.expected else f"**{r.status}** (expected {r.expected})"
        rows.append([r.scenario.name, status, r.calls, *r.counted, "" if r.lower is None else f"{r.lower}"])
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
        if r.lower is not None:
            print(f"- **{r.scenario.name}**: {r.calls} → {r.lower}: {r.scenario.how}.")
    total_now = sum(r.calls for r in results)
    total_min = sum(r.calls if r.lower is None else r.lower for r in results)
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
    rows = [[r.scenario.name, *r.times] for r in results]
    print(markdown_table(["endpoint", "DynamoDB", "request", "app CPU"], rows))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with app_in_process(consumed_capacity=True) as (api, counter):
        sqs = AwsCalls()
        sqs.attach(sqs_client(), "sqs")
        report([measure(api, counter, sqs, item) for item in SCENARIOS])


if __name__ == "__main__":
    main()
