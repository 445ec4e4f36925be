"""Operator commands, run with the control plane's environment (AWS credentials and settings):

    python -m chalicelib.admin agent-token create --region nyc1
    python -m chalicelib.admin agent-token revoke agt_XXXX
"""

from __future__ import annotations

import argparse
import sys

from chalicelib import agents
from chalicelib.errors import AppError
from chalicelib.settings import get_settings
from chalicelib.store import base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description="Orochi DB operator commands")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("agent-token", help="create or revoke a region's agent token")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token; it is printed once")
    create.add_argument("--region", required=True)
    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    args = parser.parse_args(argv)

    settings = get_settings()
    base.configure(table_name=settings.table_name)
    try:
        if args.action == "create":
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


if __name__ == "__main__":
    sys.exit(main())
