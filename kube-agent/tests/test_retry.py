"""The agent's one retry policy: jittered exponential backoff within its cap, however long an outage lasts."""

from __future__ import annotations

import pytest

from orochi_agent.retry import backoff


# (attempt, ceiling) with base 0.5 s and cap 60 s: doubling from the base, then the cap; 1,025 retries into an outage
# (about 17 hours at the cap) used to overflow computing 2.0 ** 1024.
@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (1_025, 60.0),
                                                  (1_026, 60.0), (10**6, 60.0)])
def test_every_wait_is_between_half_and_all_of_its_ceiling(attempt: int, ceiling: float) -> None:
    waits = [backoff(attempt, base=0.5, cap=60.0) for _ in range(200)]
    assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
    assert len(set(waits)) > 1  # jittered
