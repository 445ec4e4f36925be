"""Fire app.py's scheduled functions on their rates, as EventBridge does in production.

    python -m devstack.scheduler            # until stopped
    python -m devstack.scheduler --once     # fire each function once, then exit
    python -m devstack.scheduler --once --only autoscaler    # one function (tests run it on their API's clock: devstack.clocked)
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

from chalice.app import Rate, ScheduledEventConfig

_UNIT_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


def scheduled_functions() -> list[tuple[str, float, Callable[[dict[str, Any], Any], Any]]]:
    """(name, period in seconds, handler) for each rate-scheduled function of app.py."""
    app_module = importlib.import_module("app")
    functions = []
    for source in app_module.app.event_sources:
        if isinstance(source, ScheduledEventConfig) and isinstance(source.schedule_expression, Rate):
            rate = source.schedule_expression
            module, _, attribute = source.handler_string.rpartition(".")
            handler = getattr(importlib.import_module(module), attribute)
            functions.append((source.name, float(rate.value * _UNIT_SECONDS[rate.unit]), handler))
    return functions


def event(name: str) -> dict[str, Any]:
    return {
        "version": "0", "id": f"local-{time.time_ns()}", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{name}"], "detail": {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="fire each scheduled function once and exit")
    parser.add_argument("--only", action="append", help="fire only this scheduled function (repeatable)")
    args = parser.parse_args()
    functions = [f for f in scheduled_functions() if not args.only or f[0] in args.only]
    due = {name: time.monotonic() + (0 if args.once else period) for name, period, _ in functions}
    if not args.once:
        print("scheduler: " + ", ".join(f"{name} every {period:g} s" for name, period, _ in functions), flush=True)
    while True:
        for name, period, handler in functions:
            if time.monotonic() >= due[name]:
                handler(event(name), None)
                due[name] = time.monotonic() + period
        if args.once:
            return
        time.sleep(1)


if __name__ == "__main__":
    main()
