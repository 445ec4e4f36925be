"""Metrics cost: what one GET …/clusters/{id}/metrics costs for each window when the cluster sent 10 samples and
when it sent 20,000 (30 s apart: almost 7 days), and what one POST /v1/agent/metrics of 100 clusters costs.

Counted on the botocore client every entity shares: requests (with a breakdown), items read (Count / Responses)
and items returned. The 100-cluster batch runs first, on a small table (moto deep-copies the table for every item
of a TransactWriteItems, so its milliseconds would otherwise measure the table). The 10 samples are then posted
through the API, uncounted; the 20,000 are folded into rollups by `metric_series.fold` (the ingestion's own fold)
and written with BatchWriteItem (through the API, moto's copies make that take hours).

    .venv/bin/python -m bench.metrics_series [--query 'window={window}']

`--query` is the query string of the read, `{window}` (1h, 24h, 7d) and `{seconds}` filled in: the code before
the series endpoint took `--query 'window_seconds={seconds}&limit=100'`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from bench.inprocess import agent_token, app_in_process, create_cluster, register
from bench.report import heading, load_average, machine, markdown_table
from devstack.harness import cluster_path

REGION = "nyc1"
FLEET = 100
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
INTERVAL = 30
BATCH = 500
VALUES = {"cpu_percent": 35.0, "memory_percent": 60.0, "storage_used_gb": 3.5, "storage_used_percent": 17.5,
          "connections": 12, "max_connections": 100, "database_size_gb": 2.0, "replication_lag_seconds": 0.2,
          "transactions_per_second": 140.0}


@dataclass
class Row:
    probe: str
    answer: str
    requests: int
    breakdown: str
    items_read: int
    items_returned: int
    read_units: float
    write_units: float
    ms: float


def seed_rollups(samples: list[dict[str, Any]]) -> None:
    """Fold the samples as ingestion does and write the rollups straight into the table, 25 per BatchWriteItem."""
    from chalicelib import metric_series
    from chalicelib.store import keys
    from chalicelib.store.cluster_records import Sample
    from chalicelib.store.metric_records import MetricRollup, Rollup

    grouped: dict[tuple[str, int, int], list[Sample]] = {}
    for s in samples:
        for bucket in metric_series.EXPIRES:
            grouped.setdefault((s["cluster_id"], bucket, s["at"] - s["at"] % bucket), []).append(
                Sample(s["cluster_id"], s["at"], s["values"]))
    with MetricRollup.batch_write() as batch:
        for (cluster_id, bucket, start), taken in grouped.items():
            rollup = Rollup(cluster_id, bucket, start)
            metric_series.fold(rollup, taken)
            batch.save(MetricRollup(*keys.metric_rollup(cluster_id, bucket, start), cluster_id=cluster_id,
                                    bucket_seconds=bucket, start=start, last_at=rollup.last_at,
                                    aggregates=rollup.aggregates,
                                    expires_ttl=start + metric_series.EXPIRES[bucket]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="window={window}", help="the read's query string ({window}, {seconds})")
    parser.add_argument("--samples", default="10,20000", help="samples of each cluster read")
    args = parser.parse_args()
    levels = [int(x) for x in args.samples.split(",")]
    with app_in_process(ORG_CLUSTER_QUOTA=str(FLEET + len(levels) + 1)) as (api, counter):
        agent = agent_token(REGION)
        owner = register(api)
        rows: list[Row] = []

        def probe(name: str, call: Any) -> None:
            counter.reset()
            started = time.perf_counter()
            reply = call()
            elapsed = time.perf_counter() - started
            if reply.status != 200:
                raise RuntimeError(f"{name}: {reply.status} {reply.body}")
            body = reply.body
            answer = (f"accepted {body['accepted']}" if "accepted" in body
                      else f"{len(body['points'])} points" if "points" in body else f"{len(body['items'])} samples")
            read_units, write_units = counter.capacity()
            rows.append(Row(name, answer, len(counter.calls), counter.breakdown(), counter.items_read,
                            counter.items_returned, read_units, write_units, elapsed * 1000))

        def post(samples: list[dict[str, Any]]) -> Any:
            return api.call("POST", "/v1/agent/metrics", token=agent, body={"samples": samples})

        fleet = [create_cluster(api, owner, postgres_version="18")["cluster"]["id"] for _ in range(FLEET)]
        now = int(time.time())
        probe(f"POST /v1/agent/metrics, {FLEET} clusters × 1 sample",
              lambda: post([{"cluster_id": c, "at": now - 60, "values": VALUES} for c in fleet]))
        probe(f"POST /v1/agent/metrics, {FLEET} clusters × 1 sample, the next one",
              lambda: post([{"cluster_id": c, "at": now - 30, "values": VALUES} for c in fleet]))

        for level in levels:
            cluster_id = create_cluster(api, owner, postgres_version="18")["cluster"]["id"]
            started, end = time.perf_counter(), int(time.time())
            samples = [{"cluster_id": cluster_id, "at": end - INTERVAL * n, "values": VALUES} for n in range(level)]
            samples.reverse()
            if level <= BATCH:
                reply = post(samples)
                if reply.status != 200:
                    raise RuntimeError(f"seeding: {reply.status} {reply.body}")
            else:
                seed_rollups(samples)
            print(f"_{level:,} samples of {cluster_id} posted in {time.perf_counter() - started:.1f} s; "
                  f"load average {load_average()}_", flush=True)
            for window, seconds in WINDOWS.items():
                query = args.query.format(window=window, seconds=seconds)
                probe(f"GET …/metrics?{query}, {level:,} samples sent",
                      lambda q=query, c=cluster_id: api.call("GET", cluster_path(owner.org_id, c) + "/metrics?" + q,
                                                             token=owner.access_token))

    facts = machine()
    heading("Metrics: one read per window, one ingestion batch")
    print(f"{facts['date']}; {facts['cpus']} CPUs ({facts['cpu']}), {facts['memory']}; Python {facts['python']}; "
          f"load average after: {load_average()}\n")
    print(markdown_table(
        ["probe", "answer", "DynamoDB requests", "breakdown", "items read", "items returned", "read units (est.)",
         "write units (est.)", "ms (moto)"],
        [[r.probe, r.answer, r.requests, r.breakdown, r.items_read, r.items_returned, f"{r.read_units:g}",
          f"{r.write_units:g}", f"{r.ms:.0f}"] for r in rows]))


if __name__ == "__main__":
    main()
