"""The autoscaler: metrics fold into each autoscaled cluster's state as they arrive (`observe`), and every minute
`tick` decides for the candidates only — the states whose decision is due — and changes a cluster through
`lifecycle.change`, as a user's change would be made, with the actor `autoscaler` and the reason on the
operation. A cluster that is not running or has an operation open is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib import errors, lifecycle
from chalicelib.autoscaling import Decision, Facts, Reading, State, decide, due_at, fold, stored_policy
from chalicelib.clock import now
from chalicelib.settings import Settings
from chalicelib.store import autoscale_records, cluster_records
from chalicelib.store.autoscale_records import Entry
from chalicelib.store.cluster_records import DELETED, Cluster, Sample

log = logging.getLogger("orochi.autoscaler")
ACTOR = "autoscaler"
TICK_SECONDS = 60


def _facts(cluster: Cluster) -> Facts:
    return Facts(instances=cluster.instances, storage_gb=cluster.storage_gb,
                 instances_changed_at=cluster.instances_changed_at, storage_changed_at=cluster.storage_changed_at)


def _autoscaled(cluster: Cluster | None) -> bool:
    return bool(cluster is not None and cluster.status != DELETED and cluster.autoscaling
                and cluster.autoscaling.get("enabled", True))


def _settled(cluster: Cluster) -> bool:
    """Running, with no operation open: the only clusters the autoscaler changes."""
    return cluster.status == "running" and not cluster.open_operations


def observe(settings: Settings, clusters: dict[str, Cluster], samples: list[Sample]) -> None:
    """Fold samples into the states of the clusters with an enabled policy, and index those a decision may be due for.

    A quiet state (no run open, not a candidate, no new trend point) is not written again.
    """
    mine: dict[str, list[Sample]] = {}
    for sample in samples:
        if _autoscaled(clusters.get(sample.cluster_id)):
            mine.setdefault(sample.cluster_id, []).append(sample)
    if not mine:
        return
    stored = autoscale_records.states_of(list(mine))
    writes: list[Entry] = []
    for cluster_id, taken in mine.items():
        cluster = clusters[cluster_id]
        policy = stored_policy(cluster.autoscaling)
        before = stored.get(cluster_id)
        previous = State.from_json(before.state) if before is not None else None
        state = previous
        for sample in sorted(taken, key=lambda s: s.at):
            reading = Reading.of(sample.at, sample.values, storage_gb=cluster.storage_gb)
            state = fold(state, policy, reading, max_gap=settings.autoscale_max_sample_gap,
                         trend_window=settings.autoscale_trend_window)
        assert state is not None
        due = due_at(policy, state, _facts(cluster)) if _settled(cluster) else None
        unchanged = (before is not None and previous is not None and due is None and before.due_at is None
                     and previous.quiet() and state.quiet() and (previous.policy, previous.trend) == (state.policy, state.trend))
        if not unchanged:
            writes.append(Entry(cluster_id=cluster_id, region=cluster.region, state=state.to_json(),
                                last_at=state.last_at, due_at=due))
    autoscale_records.put_states(writes, at=now(), retention=settings.metrics_retention)


@dataclass(frozen=True)
class Tick:
    candidates: int
    changed: int
    errors: int


def tick(settings: Settings) -> Tick:
    """Decide for every candidate whose decision is due, act, and move or clear its index entry.

    A candidate that could not be handled is logged and counted in `errors`; the next tick tries it again.
    """
    at, seen, changed, problems = now(), 0, 0, 0
    for region in settings.region_slugs:
        due = autoscale_records.candidates(region, due_by=at)
        if not due:
            continue
        clusters = cluster_records.clusters_by_id([entry.cluster_id for entry in due])
        for entry in due:
            seen += 1
            try:
                changed += _consider(settings, entry, clusters.get(entry.cluster_id), at=at)
            except errors.AppError as e:
                log.warning("autoscaling decision left for the next tick",
                            extra={"cluster_id": entry.cluster_id, "error": e.message})
                problems += 1
    result = Tick(candidates=seen, changed=changed, errors=problems)
    log.info("autoscale", extra={"candidates": seen, "changed": changed, "errors": problems})
    return result


def _consider(settings: Settings, entry: Entry, cluster: Cluster | None, *, at: int) -> int:
    """1 if the cluster was changed, else 0; the entry leaves the index or moves to when it is next due."""
    if cluster is None or not _autoscaled(cluster):
        autoscale_records.reindex(entry, due_at=None)
        return 0
    policy, state, facts = stored_policy(cluster.autoscaling), State.from_json(entry.state), _facts(cluster)
    decision = decide(policy, state, facts, now=at, max_gap=settings.autoscale_max_sample_gap) if _settled(cluster) else None
    if decision is None:
        fresh = state.last_at is not None and at - state.last_at <= settings.autoscale_max_sample_gap
        later = due_at(policy, state, facts) if fresh else None
        autoscale_records.reindex(entry, due_at=None if later is None else max(later, at + TICK_SECONDS))
        return 0
    _apply(settings, cluster, decision)
    autoscale_records.reindex(entry, due_at=None)  # the next samples index it again, after the change's cooldown
    return 1


def _apply(settings: Settings, seen: Cluster, decision: Decision) -> lifecycle.Change:
    def load() -> Cluster:
        cluster = cluster_records.get_cluster(seen.id)
        if cluster is None or cluster.status == DELETED:
            raise errors.NotFound("cluster not found")
        return cluster

    def edit(cluster: Cluster) -> None:
        if (not _settled(cluster) or (cluster.instances, cluster.storage_gb, cluster.autoscaling)
                != (seen.instances, seen.storage_gb, seen.autoscaling)):
            raise errors.Conflict("the cluster changed since the autoscaler decided")
        if decision.instances is not None:
            cluster.instances = decision.instances
        if decision.storage_gb is not None:
            cluster.storage_gb = decision.storage_gb
        return None

    change = lifecycle.change(settings, load, kind="scale", edit=edit, if_match=None, actor=ACTOR,
                              reason=decision.reason)
    log.info("autoscaled", extra={"cluster_id": seen.id, "operation_id": change.operation.id, "reason": decision.reason})
    return change
