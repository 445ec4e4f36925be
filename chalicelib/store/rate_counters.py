"""Request counters of rate limits: `RATE#<caller>#<window start>`/`RATE`, one per caller and window, expiring by TTL."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute
from pynamodb.exceptions import UpdateError

from chalicelib.store.base import Item, condition_failed


class RateCounter(Item):
    count = NumberAttribute(null=True)

    @staticmethod
    def key(caller: str, window_start: int) -> tuple[str, str]:
        return f"RATE#{caller}#{window_start}", "RATE"


def take(caller: str, *, window_start: int, limit: int, expires_at: int) -> int | None:
    """Count one request in `caller`'s window: the window's count with this request, or None when `limit`
    requests were already counted in it (this one is not counted).

    One conditional UpdateItem (ADD under `count < limit`), the only write: concurrent requests can never
    be counted past `limit`, and the item is created by the first request of its window.
    """
    counter = RateCounter(*RateCounter.key(caller, window_start))
    try:
        counter.update(
            actions=[RateCounter.count.add(1), RateCounter.expires_ttl.set(expires_at)],
            condition=RateCounter.count.does_not_exist() | (RateCounter.count < limit),
        )
    except UpdateError as e:
        if condition_failed(e):
            return None
        raise
    return int(counter.count or 0)
