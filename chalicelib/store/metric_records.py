"""Metric rollups: per cluster, bucket size and bucket, what the samples in that bucket add up to.

A rollup holds, per metric, the sum, count, maximum and last value of the samples folded into it (a list, to keep
the item under 1 KB) and the time of the newest of them (`last_at`). It is read and written whole: a write
is conditional on the `last_at` it was read with (or on being new), so two writers folding into the same
bucket never lose each other's samples; the loser reads again. It expires when no window reads it any more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pynamodb.attributes import JSONAttribute, UnicodeAttribute

from chalicelib.store import keys
from chalicelib.store.table import ConditionFailed, IntegerAttribute, Item, LostRace, transaction

TRANSACTION_ITEMS = 100  # DynamoDB's limit of items in one TransactWriteItems


class MetricRollup(Item):
    cluster_id = UnicodeAttribute()
    bucket_seconds = IntegerAttribute()
    start = IntegerAttribute()
    last_at = IntegerAttribute()
    aggregates = JSONAttribute()  # {metric: [sum, count, max, last]}


@dataclass
class Rollup:
    """One bucket's aggregates; `read_last_at` is the `last_at` it was read with (None: not stored yet)."""

    cluster_id: str
    bucket_seconds: int
    start: int
    last_at: int | None = None
    aggregates: dict[str, list[int | float]] = field(default_factory=dict)
    read_last_at: int | None = None


RollupKey = tuple[str, int, int]  # cluster id, bucket seconds, bucket start


def _rollup(item: MetricRollup) -> Rollup:
    aggregates: dict[str, list[int | float]] = item.aggregates
    return Rollup(cluster_id=item.cluster_id, bucket_seconds=item.bucket_seconds, start=item.start,
                  last_at=item.last_at, aggregates=aggregates, read_last_at=item.last_at)


def rollups(wanted: list[RollupKey]) -> dict[RollupKey, Rollup]:
    """The stored rollups among `wanted` (one strongly consistent BatchGetItem per 100 keys); absent ones are new."""
    found = {(item.cluster_id, item.bucket_seconds, item.start): _rollup(item) for item in MetricRollup.batch_get(
        [keys.metric_rollup(*key) for key in dict.fromkeys(wanted)], consistent_read=True)}
    return {key: found.get(key) or Rollup(*key) for key in wanted}


def put_rollups(changed: list[Rollup], *, expires: dict[int, int]) -> None:
    """Write the rollups in transactions of up to 100, each conditional on the `last_at` it was read with.

    `expires` gives, per bucket size, the seconds after a bucket's start at which its rollup expires.
    Raises LostRace when another writer changed one of them meanwhile (read again and fold again: the
    transactions before the failing one were made), Contention when one was being written at that moment.
    """
    for first in range(0, len(changed), TRANSACTION_ITEMS):
        try:
            _put(changed[first:first + TRANSACTION_ITEMS], expires=expires)
        except ConditionFailed as e:
            raise LostRace() from e


def _put(rollups: list[Rollup], *, expires: dict[int, int]) -> None:
    with transaction() as tx:
        for rollup in rollups:
            assert rollup.last_at is not None
            item = MetricRollup(
                *keys.metric_rollup(rollup.cluster_id, rollup.bucket_seconds, rollup.start),
                cluster_id=rollup.cluster_id, bucket_seconds=rollup.bucket_seconds, start=rollup.start,
                last_at=rollup.last_at, aggregates=rollup.aggregates,
                expires_ttl=rollup.start + expires[rollup.bucket_seconds],
            )
            condition: Any = (MetricRollup.pk.does_not_exist() if rollup.read_last_at is None
                              else MetricRollup.last_at == rollup.read_last_at)
            tx.save(item, condition=condition, label="rollup")


def rollups_of(cluster_id: str, bucket_seconds: int, *, first: int, last: int) -> list[Rollup]:
    """The cluster's rollups of that bucket size whose buckets start from `first` to `last`, oldest first (one Query)."""
    return [_rollup(item) for item in MetricRollup.query(
        keys.metric_rollups(cluster_id, bucket_seconds),
        MetricRollup.sk.between(keys.bucket_start(first), keys.bucket_start(last)),
    )]
