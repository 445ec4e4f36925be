"""`orochi-agent` / `python -m orochi_agent`: wiring only. Settings from the environment, clients, the driver."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

from orochi_agent import __version__, logs
from orochi_agent.agent import Agent
from orochi_agent.clients.api import Api
from orochi_agent.clients.queue import Queue
from orochi_agent.drivers.base import Driver
from orochi_agent.settings import Settings, SettingsError
from orochi_agent.telemetry import Telemetry

if TYPE_CHECKING:
    from orochi_agent.leadership import Leadership


def build_driver(settings: Settings, telemetry: Telemetry) -> tuple[Driver, Leadership | None]:
    """The driver the settings name, and for cnpg the Lease that elects the replica running the region's loops.
    Each driver's libraries are imported only when it is the one that runs."""
    if settings.driver == "local":
        from orochi_agent.drivers.local import LocalDriver

        local = settings.local
        return LocalDriver(data_dir=local.data_dir, server_user=local.server_user,
                           storage_bytes_per_gb=local.storage_bytes_per_gb,
                           stop_servers_on_close=local.stop_servers_on_exit), None
    from orochi_agent.clients.kube import Kube
    from orochi_agent.drivers.cnpg import CnpgDriver
    from orochi_agent.leadership import Leadership

    kube = Kube.from_config(settings.kube.kubeconfig)
    telemetry.count_kube_calls(kube.calls)
    driver = CnpgDriver(kube=kube, storage_class=settings.kube.storage_class,
                        operator_namespace=settings.kube.operator_namespace,
                        scrape_namespaces=(settings.kube.namespace, *settings.kube.scrape_namespaces),
                        internal_cidrs=settings.kube.internal_cidrs)
    leadership = Leadership(kube=kube, namespace=settings.kube.namespace, name=f"orochi-agent-{settings.region}",
                            identity=settings.kube.identity, duration=settings.kube.lease_duration,
                            renew_every=settings.kube.lease_duration / 3)
    return driver, leadership


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as e:
        print(f"orochi-agent: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    telemetry = Telemetry()
    driver, leadership = build_driver(settings, telemetry)
    agent = Agent(
        settings=settings,
        queue=Queue(url=settings.queue_url, wait_seconds=settings.poll_wait_seconds,
                    visibility_timeout=settings.visibility_timeout),
        api=Api(url=settings.api_url, token=settings.agent_token, timeout=settings.api_timeout_seconds,
                user_agent=f"orochi-agent/{__version__}"),
        driver=driver,
        telemetry=telemetry,
        leadership=leadership,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop.set())
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
