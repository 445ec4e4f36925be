"""The local agents of `make run`: one `orochi-agent` with the local driver per region, each with its own token.

    LOCAL_AGENT_REGIONS=nyc1,fra1 make run      # default: every region of the dev catalog
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_HEALTH_PORT = 8081


def regions(env: dict[str, str], catalog_regions: tuple[str, ...]) -> tuple[str, ...]:
    """LOCAL_AGENT_REGIONS, or every region of the catalog; an unknown region is an error naming it."""
    wanted = tuple(r.strip() for r in env.get("LOCAL_AGENT_REGIONS", "").split(",") if r.strip())
    unknown = [r for r in wanted if r not in catalog_regions]
    if unknown:
        raise SystemExit(f"LOCAL_AGENT_REGIONS names regions the dev catalog lacks: {', '.join(unknown)} "
                         f"(it has {', '.join(catalog_regions)})")
    return wanted or catalog_regions


def check_catalog(postgres_images: tuple[tuple[str, str], ...]) -> None:
    """Every PostgreSQL version the dev catalog offers is one the local driver can serve here, and vice versa."""
    from orochi_agent.drivers.local.binaries import find_installations

    offered, served = sorted(v for v, _ in postgres_images), sorted(find_installations())
    if offered != served:
        raise SystemExit(f"the dev catalog offers PostgreSQL {', '.join(offered)} but the local driver serves "
                         f"{', '.join(served) or 'none'} on this machine: set POSTGRES_IMAGES in the dev stage "
                         "of .chalice/config.json to match")


def create_token(env: dict[str, str], region: str) -> str:
    """A new agent token of `region` from the operator command (it prints the token last, once)."""
    done = subprocess.run([sys.executable, "-m", "chalicelib.admin", "agent-token", "create", "--region", region],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def agent_environment(env: dict[str, str], *, region: str, token: str, api_url: str, health_port: int) -> dict[str, str]:
    """The agent's environment: the API, its token and queue, the local driver; its servers stop with it."""
    return {
        **env,
        "OROCHI_API_URL": api_url,
        "OROCHI_AGENT_TOKEN": token,
        "OROCHI_REGION": region,
        "OROCHI_QUEUE_URL": env["JOB_QUEUE_URL_TEMPLATE"].format(region=region),
        "OROCHI_DRIVER": "local",
        "OROCHI_HEALTH_PORT": str(health_port),
        "OROCHI_LOCAL_STOP_SERVERS_ON_EXIT": env.get("OROCHI_LOCAL_STOP_SERVERS_ON_EXIT", "true"),
    }


def start(env: dict[str, str], *, regions: tuple[str, ...], api_url: str) -> list[tuple[str, int, subprocess.Popen[bytes]]]:
    """Start one agent per region; (region, health port, process) of each."""
    agent = str(Path(sys.executable).with_name("orochi-agent"))
    started = []
    for index, region in enumerate(regions):
        port = FIRST_HEALTH_PORT + index
        agent_env = agent_environment(env, region=region, token=create_token(env, region), api_url=api_url,
                                      health_port=port)
        # A session of its own: Ctrl-C reaches `make run`, which stops the agents before the API they report to.
        started.append((region, port, subprocess.Popen([agent], cwd=ROOT, env=agent_env, start_new_session=True)))
    return started
