"""The time the control plane runs on, in whole seconds since the epoch.

Production reads the system clock. The test server installs another source so that tests move time
forward instead of sleeping; nothing else calls `use`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_source: Callable[[], float] = time.time


def now() -> int:
    return int(_source())


def use(source: Callable[[], float]) -> None:
    """Read the time from `source` from now on (the test server's injected clock)."""
    global _source
    _source = source
