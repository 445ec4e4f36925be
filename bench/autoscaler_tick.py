"""Autoscaler cost: what one tick reads while the fleet of autoscaled clusters grows with 10 candidates due at
every level, and what metrics ingestion costs for autoscaled clusters.

The fleet is written straight into the table through the store layer (running `Cluster` items of nyc1 with an
autoscaling policy, each with a quiet `AutoscaleState` beside it, out of the candidates index; 25 items per
BatchWriteItem). At each level 10 more clusters get a state whose scale-up window is covered (a candidate due
now). Then, counted on the botocore client every entity shares (requests, items read from the responses) and on
the app's SQS client:

- the tick with its 10 due candidates (each is scaled up one instance through lifecycle.change),
- the tick right after (nothing due),
- POST /v1/agent/metrics with 100 samples of quiet autoscaled clusters (states unchanged: not written),
- POST /v1/agent/metrics with 100 samples that open scale-up runs (states written and indexed).

The counts are the result; the times are moto's (moto answers a Query by walking every item of the table).

    .venv/bin/python -m bench.autoscaler_tick [--levels 10,1000,10000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.counting import AwsCalls, sqs_client
from bench.inprocess import agent_token, app_in_process
from bench.report import heading, load_average, machine, markdown_table

REGION = "nyc1"
CANDIDATES = 10
BATCH = 100
POLICY = {"min_instances": 1, "max_instances": 3}


@dataclass
class Row:
    level: int
    probe: str
    answer: str
    requests: int
    breakdown: str
    items_read: int
    items_returned: int
    sqs: str
    ms: float


def cluster(n: int, *, password: str, at: int, prefix: str) -> Any:
    from chalicelib.autoscaling import AutoscalingPolicy
    from chalicelib.store import cluster_records

    cluster_id = f"cls_{prefix}{n:07d}{uuid.uuid4().hex[:6]}"
    record = cluster_records.new_cluster(
        cluster_id, org_id=f"org_{prefix}{n // 10:06d}", name=f"pg-{prefix}-{n}", region=REGION,
        postgres_version="17", size="db-s-1vcpu-2gb", instances=1, storage_gb=20, ip_allowlist=[],
        deletion_protection=False, db_password=password, status="running", generation=1, observed_generation=1,
        ready_instances=1, endpoint_host=f"{cluster_id.replace('_', '-')}.db.example.net", endpoint_port=5432,
        was_running=True, open_operations={}, version=2, created_at=at, updated_at=at,
        autoscaling=AutoscalingPolicy.model_validate(POLICY).model_dump(),
    )
    cluster_records._index(record)  # the indexes follow the record, as a store write would set them
    return record


def state_of(record: Any, values: dict[str, float], *, at: int, samples: int) -> Any:
    """The record's state after `samples` samples of `values`, 30 s apart, the last at `at`, as ingestion keeps it."""
    from chalicelib.autoscaler import _facts
    from chalicelib.autoscaling import Reading, State, due_at, fold, stored_policy
    from chalicelib.settings import get_settings
    from chalicelib.store.autoscale_records import Entry

    settings, policy = get_settings(), stored_policy(record.autoscaling)
    state: State | None = None
    for i in range(samples):
        state = fold(state, policy, Reading.of(at - (samples - 1 - i) * 30, values),
                     max_gap=settings.autoscale_max_sample_gap, trend_window=settings.autoscale_trend_window)
    assert state is not None
    return Entry(cluster_id=record.id, region=REGION, state=state.to_json(), last_at=state.last_at,
                 due_at=due_at(policy, state, _facts(record)))


def seed(records: list[Any], entries: list[Any], *, at: int) -> None:
    from chalicelib.settings import get_settings
    from chalicelib.store import autoscale_records
    from chalicelib.store.cluster_records import Cluster

    with Cluster.batch_write() as batch:
        for record in records:
            batch.save(record)
    autoscale_records.put_states(entries, at=at, retention=get_settings().metrics_retention)


QUIET = {"cpu_percent": 50.0, "connections": 50, "max_connections": 100, "storage_used_gb": 5.0}
BUSY = {"cpu_percent": 91.0, "connections": 10, "max_connections": 100, "storage_used_gb": 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,1000,10000", help="autoscaled clusters in the table, ascending")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with app_in_process() as (api, counter):
        from chalicelib import autoscaler, crypto
        from chalicelib.settings import get_settings

        settings = get_settings()
        sqs = AwsCalls()
        sqs.attach(sqs_client(), "sqs")
        agent = agent_token(REGION)
        password = crypto.cipher(settings).encrypt("x" * 43, context="cluster:seed:db_password")
        rows: list[Row] = []
        quiet: list[Any] = []
        seeded = 0

        def probe(level: int, name: str, call: Any, answer: Any) -> None:
            counter.reset()
            sqs.reset()
            started = time.perf_counter()
            result = call()
            elapsed = time.perf_counter() - started
            rows.append(Row(level, name, answer(result), len(counter.calls), counter.breakdown(), counter.items_read,
                            counter.items_returned, sqs.summary(), elapsed * 1000))

        stamps = [0]

        def ingest(records: list[Any], values: dict[str, float]) -> Any:
            at = stamps[0] = max(int(time.time()), stamps[0] + 1)  # each batch newer than the one before
            reply = api.call("POST", "/v1/agent/metrics", token=agent, body={"samples": [
                {"cluster_id": r.id, "at": at, "values": values} for r in records]})
            if reply.status != 200:
                raise RuntimeError(f"metrics refused: {reply.status} {reply.body}")
            return reply

        for level in levels:
            at = int(time.time())
            started = time.perf_counter()
            grow = level - CANDIDATES - seeded
            fresh = [cluster(n, password=password, at=at - 86400, prefix="q") for n in range(seeded, seeded + grow)]
            seed(fresh, [state_of(r, QUIET, at=at, samples=3) for r in fresh], at=at)
            quiet += fresh
            seeded += grow
            due = [cluster(n, password=password, at=at - 86400, prefix=f"c{level}x") for n in range(CANDIDATES)]
            seed(due, [state_of(r, BUSY, at=int(time.time()), samples=6) for r in due], at=at)
            print(f"_level {level:,}: seeded {grow:,} quiet + {CANDIDATES} due in {time.perf_counter() - started:.1f} s; "
                  f"load average {load_average()}_", flush=True)

            probe(level, f"tick, {CANDIDATES} candidates due", lambda: autoscaler.tick(settings),
                  lambda t: f"{t.candidates} candidates, {t.changed} scaled, {t.errors} errors")
            probe(level, "tick, nothing due", lambda: autoscaler.tick(settings),
                  lambda t: f"{t.candidates} candidates")
            sample = fresh[:BATCH]
            if sample:
                probe(level, f"metrics batch, {len(sample)} quiet autoscaled clusters", lambda: ingest(sample, QUIET),
                      lambda r: f"accepted {r.body['accepted']}")
                probe(level, f"metrics batch, {len(sample)} clusters opening a scale-up run",
                      lambda: ingest(sample, BUSY), lambda r: f"accepted {r.body['accepted']}")
                ingest(sample, QUIET)  # close the runs again for the next level
                autoscaler.tick(settings)

    facts = machine()
    heading(f"Autoscaler tick: {CANDIDATES} candidates due among N autoscaled clusters of {REGION}")
    print(f"{facts['date']}; {facts['cpus']} CPUs ({facts['cpu']}), {facts['memory']}; Python {facts['python']}; "
          f"load average after: {load_average()}\n")
    print(markdown_table(
        ["autoscaled clusters", "probe", "answer", "DynamoDB requests", "breakdown", "items read",
         "items returned", "SQS", "ms (moto)"],
        [[f"{r.level:,}", r.probe, r.answer, r.requests, r.breakdown, r.items_read, r.items_returned, r.sqs,
          f"{r.ms:.0f}"] for r in rows]))


if __name__ == "__main__":
    main()
