"""Latency per endpoint: p50/p95 of the cluster and agent routes (and a few account/organization ones),
in-process (chalice's test client) against moto.

Endpoints are interleaved: each round sends one request to every endpoint (the slow or state-consuming
ones every other round), so load from other work on the machine spreads over all of them alike. State is
prepared outside the timed requests: each organization has one role (5 clusters to read; a pool of
clusters to patch, scale and delete; an organization that creates). The agent reports a mutated cluster
ready (untimed) once it is 3 generations behind, so open operations do not pile up on the cluster record;
metrics batches rewrite the same 10 samples, so the table does not grow with them.

moto is slower the larger the table: it answers every Query by walking every item, and deep-copies the
table for every item of a TransactWriteItems (moto/dynamodb/models/__init__.py, transact_write_items). The
table's item count before and after the rounds is printed; app CPU is the figure that does not depend on it.

    .venv/bin/python -m bench.endpoint_latency [--rounds 100]
"""

from __future__ import annotations

import argparse
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.counting import DynamoCalls, shared_client
from bench.inprocess import (
    Api,
    Reply,
    agent_token,
    app_in_process,
    create_cluster,
    reap,
    register,
    report_status,
    settle,
)
from bench.report import heading, load_average, markdown_table, median, ms, percentile
from devstack.harness import cluster_body, cluster_path, clusters_path


@dataclass
class Endpoint:
    name: str
    send: Callable[[], Any]  # the timed request; returns the Reply (or anything for in-process calls)
    status: int | None = 200
    after: Callable[[Any], None] | None = None  # untimed follow-up with the answer
    every: int = 1  # run in every `every`-th round
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    dynamo: list[float] = field(default_factory=list)
    requests: Counter[int] = field(default_factory=Counter)

    def row(self) -> list[str]:
        s = self.seconds
        calls = "/".join(str(n) for n in sorted(self.requests))
        return [self.name, str(len(s)), calls, ms(percentile(s, 50)), ms(percentile(s, 95)), ms(max(s)),
                ms(median(self.dynamo)), ms(median(self.cpu))]


def endpoints(api: Api, *, deletes: int) -> list[Endpoint]:
    """The endpoints with their state: prepared here, through the API (and the store for agent tokens)."""
    reader, creator, mutator = register(api), register(api), register(api)
    member_tokens = reader.access_token
    ams3, nyc1, sgp1 = agent_token("ams3"), agent_token("nyc1"), agent_token("sgp1")

    mine = [create_cluster(api, reader, region="ams3") for _ in range(5)]
    for created in mine:
        settle(api, ams3, created["cluster"])
    first, first_op = mine[0]["cluster"], mine[0]["operation"]["id"]
    for instances in (2, 1):  # 3 operations on the first cluster
        reply = api.call("POST", cluster_path(reader.org_id, first["id"]) + "/scale", token=member_tokens,
                         body={"instances": instances})
        settle(api, ams3, reply.body["cluster"])
    at = int(time.time())
    api.call("POST", "/v1/agent/metrics", token=ams3, body={"samples": [
        {"cluster_id": first["id"], "at": at - 60 * i, "values": {"cpu_percent": 10.0 + i}} for i in range(10)]})

    pool = [create_cluster(api, mutator)["cluster"] for _ in range(10)]
    for cluster in pool:
        settle(api, nyc1, cluster)
    instances = {c["id"]: c["instances"] for c in pool}
    turn = itertools.cycle(pool)
    doomed = iter([create_cluster(api, mutator)["cluster"] for _ in range(deletes)])
    replay_cluster = pool[0]
    replay_key = f"replay-{uuid.uuid4().hex}"
    replay_body = {"instances": 2}
    api.call("POST", cluster_path(mutator.org_id, replay_cluster["id"]) + "/scale", token=mutator.access_token,
             body=replay_body, headers={"idempotency-key": replay_key})
    changing = create_cluster(api, creator, region="sgp1")["cluster"]
    unchanged = create_cluster(api, creator, region="sgp1")["cluster"]
    steady = {"observed_generation": 1, "phase": "provisioning", "ready_instances": 0, "message": "steady"}
    report_status(api, sgp1, unchanged["id"], **steady)
    flip = itertools.cycle(["a", "b"])
    clock = itertools.count(1)

    def get(path: str, token: str) -> Callable[[], Reply]:
        return lambda: api.call("GET", path, token=token)

    def mutation(method: str, suffix: str, body: Callable[[dict[str, Any]], Any], key: bool = False) -> Callable[[], Reply]:
        def send() -> Reply:
            cluster = next(turn)
            headers = {"idempotency-key": uuid.uuid4().hex} if key else None
            reply = api.call(method, cluster_path(mutator.org_id, cluster["id"]) + suffix, token=mutator.access_token,
                             body=body(cluster), headers=headers)
            return reply
        return send

    def scale_body(cluster: dict[str, Any]) -> dict[str, Any]:
        instances[cluster["id"]] = 2 if instances[cluster["id"]] == 1 else 1
        return {"instances": instances[cluster["id"]]}

    def patch_body(cluster: dict[str, Any]) -> dict[str, Any]:
        return {"ip_allowlist": [f"203.0.113.{next(clock) % 250}/32"]}

    def settle_after(reply: Reply) -> None:
        cluster = reply.body["cluster"]
        if cluster["generation"] - cluster["observed_generation"] >= 3:
            settle(api, nyc1, cluster)

    def delete() -> Reply:
        cluster = next(doomed)
        return api.call("DELETE", cluster_path(mutator.org_id, cluster["id"]), token=mutator.access_token)

    base = int(time.time()) - 3600

    def samples() -> dict[str, Any]:
        return {"samples": [{"cluster_id": c["cluster"]["id"], "at": base - i, "values": {"cpu_percent": 42.0}}
                            for c in mine[:2] for i in range(5)]}

    org = f"/v1/orgs/{reader.org_id}"
    return [
        Endpoint("GET /v1/catalog", lambda: api.call("GET", "/v1/catalog")),
        Endpoint("GET /v1/auth/me", get("/v1/auth/me", member_tokens)),
        Endpoint("GET /v1/orgs", get("/v1/orgs", member_tokens)),
        Endpoint("GET /v1/orgs/{id}", get(org, member_tokens)),
        Endpoint("GET /v1/orgs/{id}/members", get(org + "/members", member_tokens)),
        Endpoint("POST /v1/orgs/{org}/clusters", lambda: api.call(
            "POST", clusters_path(creator.org_id), token=creator.access_token, body=cluster_body(region="fra1")),
            status=202, every=2),
        Endpoint("POST /v1/orgs/{org}/clusters with Idempotency-Key", lambda: api.call(
            "POST", clusters_path(creator.org_id), token=creator.access_token, body=cluster_body(region="fra1"),
            headers={"idempotency-key": uuid.uuid4().hex}), status=202, every=2),
        Endpoint("GET /v1/orgs/{org}/clusters (5 clusters)", get(clusters_path(reader.org_id), member_tokens)),
        Endpoint("GET .../clusters/{id}", get(cluster_path(reader.org_id, first["id"]), member_tokens)),
        Endpoint("PATCH .../clusters/{id} (ip_allowlist)", mutation("PATCH", "", patch_body), status=202,
                 after=settle_after),
        Endpoint("POST .../clusters/{id}/scale", mutation("POST", "/scale", scale_body), status=202, after=settle_after),
        Endpoint("POST .../clusters/{id}/scale with Idempotency-Key", mutation("POST", "/scale", scale_body, key=True),
                 status=202, after=settle_after),
        Endpoint("POST .../clusters/{id}/scale, replayed", lambda: api.call(
            "POST", cluster_path(mutator.org_id, replay_cluster["id"]) + "/scale", token=mutator.access_token,
            body=replay_body, headers={"idempotency-key": replay_key}), status=202),
        Endpoint("DELETE .../clusters/{id}", delete, status=202, every=2),
        Endpoint("GET .../clusters/{id}/operations (3)", get(cluster_path(reader.org_id, first["id"]) + "/operations",
                                                             member_tokens)),
        Endpoint("GET .../clusters/{id}/operations/{op}", get(
            cluster_path(reader.org_id, first["id"]) + f"/operations/{first_op}", member_tokens)),
        Endpoint("GET .../clusters/{id}/credentials", get(cluster_path(reader.org_id, first["id"]) + "/credentials",
                                                          member_tokens)),
        Endpoint("GET .../clusters/{id}/metrics (10 samples)", get(
            cluster_path(reader.org_id, first["id"]) + "/metrics", member_tokens)),
        Endpoint("POST /v1/agent/heartbeat", lambda: api.call("POST", "/v1/agent/heartbeat", token=ams3,
                                                               body={"agent_version": "1.2.3"})),
        Endpoint("GET /v1/agent/clusters (5 clusters)", get("/v1/agent/clusters", ams3)),
        Endpoint("GET /v1/agent/clusters/{id} (desired state)", get(f"/v1/agent/clusters/{first['id']}", ams3)),
        Endpoint("POST /v1/agent/clusters/{id}/status (changing)", lambda: api.call(
            "POST", f"/v1/agent/clusters/{changing['id']}/status", token=sgp1,
            body={"observed_generation": 1, "phase": "provisioning", "ready_instances": 0, "message": next(flip)})),
        Endpoint("POST /v1/agent/clusters/{id}/status (unchanged repeat)", lambda: api.call(
            "POST", f"/v1/agent/clusters/{unchanged['id']}/status", token=sgp1, body=steady)),
        Endpoint("POST /v1/agent/metrics (2 clusters × 5 samples)", lambda: api.call(
            "POST", "/v1/agent/metrics", token=ams3, body=samples())),
        Endpoint("reaper sweep (app.reap, nothing due)", reap, status=None),
    ]


def table_items() -> int:
    """Items in the table (a Scan with Select=COUNT, outside any timed request)."""
    from chalicelib.store.table import Item

    client, total, start = shared_client(), 0, None
    while True:
        page = client.scan(TableName=Item.Meta.table_name, Select="COUNT",
                           **({"ExclusiveStartKey": start} if start else {}))
        total += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return total


def run(endpoint: Endpoint, counter: DynamoCalls, *, timed: bool) -> None:
    counter.reset()
    started, cpu = time.perf_counter(), time.process_time()
    answer = endpoint.send()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if endpoint.status is not None and answer.status != endpoint.status:
        raise RuntimeError(f"{endpoint.name} answered {answer.status}: {answer.body}")
    if timed:
        endpoint.seconds.append(elapsed)
        endpoint.cpu.append(cpu)
        endpoint.dynamo.append(counter.seconds)
        endpoint.requests[len(counter.calls)] += 1
    if endpoint.after is not None:
        endpoint.after(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="requests per endpoint (half for the slow ones)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    args = parser.parse_args()
    with app_in_process(ORG_CLUSTER_QUOTA="100000") as (api, counter):
        started = time.perf_counter()
        found = endpoints(api, deletes=(args.warmup + args.rounds + 1) // 2)
        prepared = time.perf_counter() - started
        load_before, items_before = load_average(), table_items()
        started = time.perf_counter()
        for round_ in range(args.warmup + args.rounds):
            timed = round_ >= args.warmup
            for endpoint in found:
                if round_ % endpoint.every == 0:
                    run(endpoint, counter, timed=timed)
        elapsed = time.perf_counter() - started
        items_after = table_items()

    heading(f"Latency per endpoint (in-process against moto, {args.rounds} interleaved rounds; ms)")
    print(f"Prepared in {prepared:.0f} s; rounds took {elapsed:.0f} s. Load average before the rounds "
          f"{load_before}, after {load_average()}. Items in the table: {items_before:,} before the rounds, "
          f"{items_after:,} after.\n")
    print(markdown_table(["endpoint", "n", "DynamoDB requests", "p50", "p95", "max", "DynamoDB p50", "app CPU p50"],
                         [e.row() for e in found]))
    print("\nDynamoDB requests: per request (several values when they varied). DynamoDB p50: wall time inside the "
          "botocore calls (moto on loopback, one request at a time). App CPU: CPU time of this process "
          "(app, pydantic, botocore; moto runs in another process), the steadier figure on a shared machine.")


if __name__ == "__main__":
    main()
