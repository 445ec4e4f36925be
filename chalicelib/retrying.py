"""The control plane's one policy for writes that lost a race.

A conditional write that failed only because another request changed what it depended on in between
(the store raises LostRace: a stale cluster version, DynamoDB's TransactionConflict, a record that
moved between a failed write and the read after it) is attempted again on fresh state: at most
ATTEMPTS times, sleeping a random time up to BASE_DELAY·2ⁿ (capped at MAX_DELAY) between attempts.
When every attempt lost, the caller gets errors.Contention (409 `concurrent_update`): a give-up is
never silent. Anything else an attempt raises propagates at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from chalicelib import errors
from chalicelib.store.table import LostRace

T = TypeVar("T")
ATTEMPTS = 8
BASE_DELAY = 0.01
MAX_DELAY = 0.2


def until_won(attempt: Callable[[], T], *, what: str) -> T:
    """`attempt()` (which must read what it depends on afresh each time), retried while it loses a race."""
    for n in range(ATTEMPTS):
        try:
            return attempt()
        except LostRace:
            if n == ATTEMPTS - 1:
                break
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**n)))
    raise errors.Contention(f"{what} is being changed by other requests at the same moment; retry")
