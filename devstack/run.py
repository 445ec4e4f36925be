"""`make run`: the whole system on this machine until Ctrl-C.

Starts a moto server (DynamoDB, SQS) on loopback, creates the table and queues, serves the API with
`chalice local --stage dev`, fires the scheduled functions on their rates, runs one local agent per
region (real PostgreSQL servers), and serves the built dashboard on http://localhost:5173. The dev stage in .chalice/config.json is the single source of their
settings. Ctrl-C stops the agents, which stop their servers; the servers' data stays on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from chalicelib.settings import Settings
from devstack import agents
from devstack.ports import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
API_PORT = int(os.environ.get("API_PORT", "8000"))
DASHBOARD = ROOT / "dashboard"
DASHBOARD_PORT = 5173  # an origin the dev stage allows (ALLOWED_ORIGINS)
READY = "Orochi DB is up."  # the line that says everything started (devstack.with_stack waits for it)


def stage_environment(stage: str = "dev") -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def main() -> None:
    env = {**os.environ, **stage_environment()}
    settings = Settings.from_env(env)
    agents.check_catalog(settings.postgres_images)
    agent_regions = agents.regions(env, settings.region_slugs)
    endpoint = urlparse(env["AWS_ENDPOINT_URL"])
    host, moto_port = endpoint.hostname or "127.0.0.1", endpoint.port or 5000
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        # The agents first, while the API and the queues still answer them; then the rest, newest first.
        for group in ([c for c in children if c.args[0].endswith("orochi-agent")], list(reversed(children))):
            for child in group:
                if child.poll() is None:
                    child.terminate()
            for child in group:
                try:
                    child.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    child.kill()
        print("\nlocal stack stopped", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    python = sys.executable
    moto = subprocess.Popen([python, "-m", "devstack.moto_server", "--host", host, "--port", str(moto_port)], cwd=ROOT, env=env)
    children.append(moto)
    wait_for_port(moto_port, host=host, process=moto)
    subprocess.run([python, "-m", "devstack.bootstrap"], cwd=ROOT, env=env, check=True)
    chalice = str(Path(python).with_name("chalice"))
    api = subprocess.Popen(
        [chalice, "local", "--no-autoreload", "--stage", "dev", "--host", "127.0.0.1", "--port", str(API_PORT)], cwd=ROOT, env=env
    )
    children.append(api)
    wait_for_port(API_PORT, process=api)
    children.append(subprocess.Popen([python, "-m", "devstack.scheduler"], cwd=ROOT, env=env))
    api_url = f"http://127.0.0.1:{API_PORT}"
    local_agents = agents.start(env, regions=agent_regions, api_url=api_url)
    children += [process for _, _, process in local_agents]
    # The built dashboard (`make run` builds it), served as CloudFront would: the static files and their headers.
    dashboard = subprocess.Popen(["node", "node_modules/vite/bin/vite.js", "preview", "--host", "127.0.0.1", "--port",
                                  str(DASHBOARD_PORT), "--strictPort"], cwd=DASHBOARD, env=env)
    children.append(dashboard)
    wait_for_port(DASHBOARD_PORT, process=dashboard)
    agent_lines = "".join(f"\n    {region}: health http://127.0.0.1:{port}/readyz" for region, port, _ in local_agents)
    print(f"\n{READY}\n  Dashboard: http://localhost:{DASHBOARD_PORT}\n"
          f"  API:       {api_url}  (try GET /health, /openapi.json)\n"
          f"  DynamoDB and SQS (moto): {env['AWS_ENDPOINT_URL']}\n  Scheduled functions: the reaper and the autoscaler, every minute\n"
          f"  Local agents (real PostgreSQL servers):{agent_lines}\n"
          "Press Ctrl-C to stop.", flush=True)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    print("a local stack process exited; stopping the rest", file=sys.stderr)
    stop()


if __name__ == "__main__":
    main()
