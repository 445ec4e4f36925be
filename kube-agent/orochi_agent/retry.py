"""Exponential backoff with jitter: the one retry policy of the agent."""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 64  # base·2^64 seconds is past any cap


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, …): half of min(cap, base·2^(attempt-1)) plus a
    uniform share of the other half, so retries spread out and never spin."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)  # 2.0 ** 1024 would raise OverflowError
    ceiling = min(cap, base * 2.0 ** doublings)
    return ceiling / 2 + random.uniform(0, ceiling / 2)
