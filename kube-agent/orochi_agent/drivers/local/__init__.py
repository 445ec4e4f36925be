"""The `local` driver: real PostgreSQL servers on this machine (see `driver.py`)."""

from orochi_agent.drivers.local.driver import LocalDriver

__all__ = ["LocalDriver"]
