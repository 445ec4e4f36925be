"""Scale independence: what an organization's cluster list and a region's resync read while the table fills
with other organizations' clusters in other regions.

One organization keeps 5 clusters in ams3 (created through the API). Other organizations' clusters (10 per
organization, spread over nyc1, sfo3, fra1 and sgp1) are written straight into the table through the store
layer (`cluster_records.put_many`: indexed `Cluster` items, 25 per BatchWriteItem), in
steps up to the largest level. At each level the script counts, for one request each, the DynamoDB requests
and the items DynamoDB read (from the responses), and times `--samples` requests of each.

The counts are the result; the times are moto's. moto answers every Query (table or GSI) by walking every
item in the table (moto/dynamodb/models/table.py) and deep-copies the table for every item of a TransactWriteItems
(moto/dynamodb/models/__init__.py), so its latency grows with the table while DynamoDB's does not.

    .venv/bin/python -m bench.scale_independence [--levels 10,1000,10000] [--samples 20]
"""

from __future__ import annotations

import argparse
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.counting import DynamoCalls
from bench.inprocess import Api, agent_token, app_in_process, create_cluster, reap, register
from bench.report import heading, load_average, markdown_table, ms, percentile
from devstack.harness import cluster_path, clusters_path

HOME_REGION = "ams3"
OTHER_REGIONS = ("nyc1", "sfo3", "fra1", "sgp1")
PER_ORG = 10  # ORG_CLUSTER_QUOTA's default
OWN_CLUSTERS = 5


@dataclass
class Probe:
    name: str
    call: Callable[[], Any]
    check: Callable[[Any], str]  # "" when the answer is right, else what is wrong
    answer: Callable[[Any], str]  # what it answered, in a few words


@dataclass
class Row:
    level: int
    probe: str
    requests: int
    breakdown: str
    items_read: int
    items_returned: int
    answer: str
    read_kb: float
    read_units: float
    p50: float
    p95: float
    cpu_p50: float
    problem: str


def seed(count: int, *, start: int, password: str) -> float:
    """Write `count` more clusters of other organizations; returns the seconds it took."""
    from chalicelib.store import cluster_records

    started = time.perf_counter()
    at = int(time.time()) - 86400
    clusters = []
    for n in range(start, start + count):
        org_id, cluster_id = f"org_seed{n // PER_ORG:06d}", f"cls_seed{n:07d}{uuid.uuid4().hex[:6]}"
        clusters.append(cluster_records.new_cluster(
            cluster_id, org_id=org_id, name=f"pg-seed-{n}",
            region=OTHER_REGIONS[n % len(OTHER_REGIONS)], postgres_version="17", size="db-s-1vcpu-2gb",
            instances=1, storage_gb=20, ip_allowlist=[], deletion_protection=False, db_password=password,
            status="running", generation=1, observed_generation=1, ready_instances=1,
            endpoint_host=f"{cluster_id.replace('_', '-')}.db.example.net", endpoint_port=5432,
            was_running=True, open_operations={}, version=2, created_at=at + n, updated_at=at + n,
        ))
    cluster_records.put_many(clusters)
    return time.perf_counter() - started


def probes(api: Api) -> tuple[list[Probe], Any]:
    from chalicelib.settings import get_settings

    owner = register(api)
    own = [create_cluster(api, owner, region=HOME_REGION)["cluster"]["id"] for _ in range(OWN_CLUSTERS)]
    agent = agent_token(HOME_REGION)
    busy_agent = agent_token(OTHER_REGIONS[0])
    settings = get_settings()

    def http(method: str, path: str, token: str) -> Callable[[], Any]:
        return lambda: api.call(method, path, token=token)

    def listing(reply: Any) -> str:
        if reply.status != 200:
            return f"status {reply.status}"
        got = sorted(c["id"] for c in reply.body["items"])
        return "" if got == sorted(own) else f"answered {len(got)} clusters, expected its {len(own)}"

    def one(reply: Any) -> str:
        return "" if reply.status == 200 else f"status {reply.status}"

    def listed(reply: Any) -> str:
        return f"{len(reply.body['items'])} clusters"

    def full_resync() -> tuple[int, int]:
        """Every page of the busy region's resync at limit=100; (pages, clusters listed)."""
        pages = clusters = 0
        cursor = None
        while True:
            path = "/v1/agent/clusters?limit=100" + (f"&cursor={cursor}" if cursor else "")
            reply = api.call("GET", path, token=busy_agent)
            if reply.status != 200:
                raise RuntimeError(f"resync failed: {reply.status} {reply.body}")
            pages, clusters = pages + 1, clusters + len(reply.body["items"])
            cursor = reply.body.get("next_cursor")
            if not cursor:
                return pages, clusters

    messages = itertools.cycle(["a", "b"])

    def report() -> Any:
        return api.call("POST", f"/v1/agent/clusters/{own[1]}/status", token=agent, body={
            "observed_generation": 1, "phase": "provisioning", "ready_instances": 0, "message": next(messages)})

    report()  # the first report also moves the create operation to running; later ones change only the message

    return [
        Probe(f"GET /v1/orgs/{{org}}/clusters (its {OWN_CLUSTERS})", http("GET", clusters_path(owner.org_id),
                                                                           owner.access_token), listing, listed),
        Probe(f"GET /v1/agent/clusters as {HOME_REGION} (its {OWN_CLUSTERS})", http("GET", "/v1/agent/clusters", agent),
              listing, listed),
        Probe("GET .../clusters/{id} (control: by key)", http("GET", cluster_path(owner.org_id, own[0]),
                                                               owner.access_token), one, lambda _: "1 cluster"),
        Probe(f"POST /v1/agent/clusters/{{id}}/status as {HOME_REGION} (changing; a write)", report,
              one, lambda _: "applied"),
        Probe("reaper sweep (nothing due)", reap, lambda _: "", lambda _: "nothing to do"),
        Probe(f"full resync of {OTHER_REGIONS[0]} (every page, limit=100; grows with that region, by design)",
              full_resync, lambda _: "", lambda got: f"{got[0]} page{'s' if got[0] != 1 else ''}, {got[1]:,} clusters"),
    ], settings


def measure(level: int, probe: Probe, counter: DynamoCalls, samples: int) -> Row:
    counter.reset()
    answer = probe.call()
    read_units = counter.capacity()[0]
    requests, breakdown = len(counter.calls), counter.breakdown()
    items_read, items_returned, read_kb = counter.items_read, counter.items_returned, counter.read_bytes / 1024
    problem, said = probe.check(answer), probe.answer(answer)
    seconds, cpu = [], []
    for _ in range(samples):
        started, cpu_started = time.perf_counter(), time.process_time()
        probe.call()
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return Row(level, probe.name, requests, breakdown, items_read, items_returned, said, read_kb, read_units,
               percentile(seconds, 50), percentile(seconds, 95), percentile(cpu, 50), problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,1000,10000", help="other clusters in the table, ascending")
    parser.add_argument("--samples", type=int, default=20, help="timed requests per probe and level")
    parser.add_argument("--resync-samples", type=int, default=3, help="timed full resyncs per level")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with app_in_process() as (api, counter):
        from chalicelib import crypto

        found, settings = probes(api)
        password = crypto.cipher(settings).encrypt("x" * 43, context="cluster:seed:db_password")
        rows: list[Row] = []
        seeding: list[tuple[int, int, float, int]] = []
        seeded = 0
        for level in levels:
            counter.reset()
            seconds = seed(level - seeded, start=seeded, password=password)
            seeding.append((level, level - seeded, seconds, len(counter.calls)))
            seeded = level
            print(f"_seeded {level} other clusters ({seconds:.1f} s for this step); load average {load_average()}_",
                  flush=True)
            for probe in found:
                samples = args.resync_samples if probe.name.startswith("full resync") else args.samples
                rows.append(measure(level, probe, counter, samples))

    heading(f"Scale independence: {OWN_CLUSTERS} clusters of one organization in {HOME_REGION}, N other clusters "
            f"(10 per organization) in {', '.join(OTHER_REGIONS)}")
    print(f"load average after: {load_average()}\n")
    table = []
    for r in rows:
        items = f"{r.items_read}" if r.items_read == r.items_returned else f"{r.items_read} ({r.items_returned} returned)"
        flag = f" **{r.problem}**" if r.problem else ""
        table.append([f"{r.level:,}", r.probe + flag, r.answer, r.requests, r.breakdown, items, f"{r.read_kb:.1f}",
                      f"{r.read_units:g}", ms(r.p50), ms(r.p95), ms(r.cpu_p50)])
    print(markdown_table(["other clusters", "probe", "answer", "DynamoDB requests", "breakdown", "items read",
                          "KB read", "≈ RRU", "p50 ms (moto)", "p95 ms (moto)", "app CPU p50 ms"], table))

    heading("Items read by level")
    names = list(dict.fromkeys(r.probe for r in rows))
    header = ["probe", *[f"{level:,} other" for level in levels], "independent of the others?"]
    summary = []
    for name in names:
        mine = [r for r in rows if r.probe == name]
        cells = [f"{r.requests} req / {r.items_read} items" for r in mine]
        same = len({(r.requests, r.items_read) for r in mine}) == 1
        summary.append([name, *cells, "yes" if same else "no (grows)"])
    print(markdown_table(header, summary))

    heading("Seeding (Cluster.batch_write through the store layer, into moto)")
    print(markdown_table(["level", "clusters written", "seconds", "BatchWriteItem requests", "clusters/s"],
                         [[f"{level:,}", f"{n:,}", f"{s:.1f}", calls, f"{n / s:,.0f}" if s else "—"]
                          for level, n, s, calls in seeding]))


if __name__ == "__main__":
    main()
