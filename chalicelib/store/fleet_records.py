"""Fleet-wide counts kept without a scan: live clusters by status, open operations, failed operations.

Every count is changed by an ADD in the same transaction as the write that changes what it counts
(`cluster_records.create` and `save`, `close_operation`), so it is exact from the moment it was first
written. A count is spread over `SHARDS` items (each change picks one at random) so that transactions on
unrelated clusters rarely write the same item, which would cancel one of them; reading adds the shards up,
in one Query of the FLEET partition. See `keys` for where they live.
"""

from __future__ import annotations

import random
from collections import Counter

from chalicelib.store import keys
from chalicelib.store.table import IntegerAttribute, Item, Transaction

SHARDS = 8
OPEN_OPERATIONS = "OPS#open"
FAILED_OPERATIONS = "OPS#failed"
_CLUSTERS = "CLUSTERS#"


class FleetCount(Item):
    total = IntegerAttribute(default=0)  # not `count`, which would shadow Model.count


def clusters_counter(status: str) -> str:
    return f"{_CLUSTERS}{status}"


def add(tx: Transaction, changes: Counter[str]) -> None:
    """Within `tx`, add each change (counter name → delta) to one shard of its counter; zero changes write nothing."""
    for counter, delta in changes.items():
        if delta:
            item = FleetCount(*keys.fleet_counter(counter, random.randrange(SHARDS)))
            tx.update(item, actions=[FleetCount.total.add(delta)])


def counts() -> dict[str, int]:
    """Every counter's total (the shards added up), by counter name."""
    totals: Counter[str] = Counter()
    for item in FleetCount.query(keys.FLEET):
        totals[keys.fleet_counter_name(item.sk)] += item.total
    return dict(totals)


def clusters_by_status(totals: dict[str, int]) -> dict[str, int]:
    return {name.removeprefix(_CLUSTERS): n for name, n in totals.items() if name.startswith(_CLUSTERS)}
