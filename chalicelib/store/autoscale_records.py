"""Each autoscaled cluster's autoscaling state (runs of its metrics) and the sparse index of candidates.

The state lives beside its cluster (`keys.autoscale_state`) as its own item, so the cluster record keeps its
own indexes. While a decision may be due, the item is in gsi3 under its region's candidates partition, sorted
by when it is due: the autoscaler's tick reads only those, whatever the size of the fleet. It expires
`retention` seconds after it was last written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import JSONAttribute, UnicodeAttribute

from chalicelib.store import keys
from chalicelib.store.table import IntegerAttribute, OptionalIntegerAttribute, Item, written


class AutoscaleState(Item):
    cluster_id = UnicodeAttribute()
    region = UnicodeAttribute()
    state = JSONAttribute()
    last_at = OptionalIntegerAttribute()  # the latest sample folded: a re-index is conditional on it
    due_at = OptionalIntegerAttribute()
    updated_at = IntegerAttribute()


@dataclass(frozen=True)
class Entry:
    cluster_id: str
    region: str
    state: dict[str, Any]
    last_at: int | None
    due_at: int | None


def _entry(item: AutoscaleState) -> Entry:
    return Entry(cluster_id=item.cluster_id, region=item.region, state=dict(item.state), last_at=item.last_at,
                 due_at=item.due_at)


def states_of(cluster_ids: list[str]) -> dict[str, Entry]:
    """The stored states of those clusters that have one (one BatchGetItem per 100)."""
    if not cluster_ids:
        return {}
    wanted = [keys.autoscale_state(cluster_id) for cluster_id in dict.fromkeys(cluster_ids)]
    return {item.cluster_id: _entry(item) for item in AutoscaleState.batch_get(wanted, consistent_read=True)}


def _item(entry: Entry, *, at: int, retention: int) -> AutoscaleState:
    item = AutoscaleState(*keys.autoscale_state(entry.cluster_id), cluster_id=entry.cluster_id, region=entry.region,
                          state=entry.state, last_at=entry.last_at, due_at=entry.due_at, updated_at=at,
                          expires_ttl=at + retention)
    if entry.due_at is not None:
        item.gsi3pk, item.gsi3sk = keys.autoscale_candidate(entry.region, entry.due_at, entry.cluster_id)
    return item


def put_states(entries: list[Entry], *, at: int, retention: int) -> None:
    """Write the states (BatchWriteItem, 25 a request), each in the candidates index exactly while it has a due time."""
    if not entries:
        return
    with AutoscaleState.batch_write() as batch:
        for entry in entries:
            batch.save(_item(entry, at=at, retention=retention))


def candidates(region: str, *, due_by: int) -> list[Entry]:
    """The region's states whose decision is due at or before `due_by`, soonest first."""
    return [_entry(item) for item in AutoscaleState.query(
        keys.autoscale_candidates_of_region(region), AutoscaleState.gsi3sk < keys.due_before(due_by + 1),
        index_name="gsi3")]


def reindex(entry: Entry, *, due_at: int | None) -> bool:
    """Move the state in the candidates index (out of it with None) unless a newer sample was folded meanwhile."""
    item = AutoscaleState(*keys.autoscale_state(entry.cluster_id))
    if due_at is None:
        actions: list[Any] = [AutoscaleState.due_at.remove(), AutoscaleState.gsi3pk.remove(),
                              AutoscaleState.gsi3sk.remove()]
    else:
        _, gsi3sk = keys.autoscale_candidate(entry.region, due_at, entry.cluster_id)
        actions = [AutoscaleState.due_at.set(due_at),
                   AutoscaleState.gsi3pk.set(keys.autoscale_candidates_of_region(entry.region)),
                   AutoscaleState.gsi3sk.set(gsi3sk)]
    unchanged = (AutoscaleState.last_at == entry.last_at if entry.last_at is not None
                 else AutoscaleState.last_at.does_not_exist())
    return written(lambda: item.update(actions=actions, condition=AutoscaleState.pk.exists() & unchanged))
