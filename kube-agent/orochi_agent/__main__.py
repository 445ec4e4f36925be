"""`orochi-agent` / `python -m orochi_agent`: wiring only. Settings from the environment, clients, the driver."""

from __future__ import annotations

import os
import signal
import sys

from orochi_agent import __version__, logs
from orochi_agent.agent import Agent
from orochi_agent.clients.api import Api
from orochi_agent.clients.queue import Queue
from orochi_agent.drivers.base import Driver
from orochi_agent.settings import Settings, SettingsError
from orochi_agent.telemetry import Telemetry


def build_driver(settings: Settings) -> Driver:
    from orochi_agent.drivers.local import LocalDriver

    local = settings.local
    return LocalDriver(data_dir=local.data_dir, server_user=local.server_user,
                       storage_bytes_per_gb=local.storage_bytes_per_gb,
                       stop_servers_on_close=local.stop_servers_on_exit)


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as e:
        print(f"orochi-agent: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    agent = Agent(
        settings=settings,
        queue=Queue(url=settings.queue_url, wait_seconds=settings.poll_wait_seconds,
                    visibility_timeout=settings.visibility_timeout),
        api=Api(url=settings.api_url, token=settings.agent_token, timeout=settings.api_timeout_seconds,
                user_agent=f"orochi-agent/{__version__}"),
        driver=build_driver(settings),
        telemetry=Telemetry(),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop.set())
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
