"""Request counters of rate limits: one per caller and window, expiring by TTL; see `keys` for where they live."""

from __future__ import annotations

from chalicelib.store import keys
from chalicelib.store.table import Item, OptionalIntegerAttribute, written


class RateCounter(Item):
    requests = OptionalIntegerAttribute(attr_name="count")


def take(caller: str, *, window_start: int, limit: int, expires_at: int) -> int | None:
    """Count one request in `caller`'s window: the window's count with this request, or None when `limit`
    requests were already counted in it (this one is not counted).

    One conditional UpdateItem (ADD under `count < limit`), the only write: concurrent requests can never
    be counted past `limit`, and the item is created by the first request of its window.
    """
    counter = RateCounter(*keys.rate_counter(caller, window_start))
    counted = written(lambda: counter.update(
        actions=[RateCounter.requests.add(1), RateCounter.expires_ttl.set(expires_at)],
        condition=RateCounter.requests.does_not_exist() | (RateCounter.requests < limit),
    ))
    return int(counter.requests or 0) if counted else None
