"""Exponential backoff with jitter: the one retry policy of the agent."""

from __future__ import annotations

import random


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, …): half of min(cap, base·2^(attempt-1)) plus a
    uniform share of the other half, so retries spread out and never spin."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
