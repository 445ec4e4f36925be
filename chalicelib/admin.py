"""Operator commands, run with the control plane's environment (AWS credentials and settings):

    python -m chalicelib.admin agent-token create --region nyc1
    python -m chalicelib.admin agent-token revoke agt_XXXX
    python -m chalicelib.admin agent list [--region nyc1]
"""

from __future__ import annotations

import argparse
import sys

from chalicelib import agents, clock
from chalicelib.errors import AppError
from chalicelib.settings import Settings, get_settings
from chalicelib.store import table

AGENT_COLUMNS = ("TOKEN ID", "REGION", "VERSION", "DRIVER", "CLUSTERS", "HEARTBEAT", "STATE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description="Orochi DB operator commands")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("agent-token", help="create or revoke a region's agent token")
    token_actions = token.add_subparsers(dest="action", required=True)
    create = token_actions.add_parser("create", help="create a token; it is printed once")
    create.add_argument("--region", required=True)
    revoke = token_actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    agent = commands.add_parser("agent", help="the regions' agents")
    agent_actions = agent.add_subparsers(dest="action", required=True)
    listing = agent_actions.add_parser("list", help="each agent token with its last heartbeat, live or revoked")
    listing.add_argument("--region", help="only this region (default: every region)")
    args = parser.parse_args(argv)

    settings = get_settings()
    table.configure(table_name=settings.table_name)
    try:
        if args.command == "agent":
            print(agent_table(settings, args.region, at=clock.now()))
        elif args.action == "create":
            created = agents.create_token(settings, args.region)
            print(f"agent token id: {created.id}\nregion: {created.region}\n"
                  f"token (shown once, store it in the agent's secret): {created.token}")
        else:
            agents.revoke_token(args.token_id)
            print(f"revoked {args.token_id}")
    except AppError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


def agent_table(settings: Settings, region: str | None, *, at: int) -> str:
    """One line per agent under a header, columns at least two spaces apart; `-` where the agent said nothing."""
    rows = [AGENT_COLUMNS, *(
        (a.id, a.region, a.agent_version or "-", a.driver or "-", "-" if a.clusters is None else str(a.clusters),
         "never" if a.last_seen_at is None else f"{age(at - a.last_seen_at)} ago",
         "revoked" if a.revoked_at is not None else "live")
        for a in agents.list_agents(settings, region)
    )]
    widths = [max(len(row[i]) for row in rows) for i in range(len(AGENT_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def age(seconds: int) -> str:
    """`seconds` in its largest whole unit: 12s, 5m, 3h, 2d."""
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


if __name__ == "__main__":
    sys.exit(main())
