"""Print the dev stage's OpenAPI document as JSON, without starting a server.

The dashboard keeps this document checked in (dashboard/openapi.json) and generates its API types from it;
`npm run check:api` compares a fresh copy against it, so a change of the API fails the dashboard's build.
"""

from __future__ import annotations

import json
import sys

from chalicelib import openapi
from chalicelib.routes import ROUTERS
from chalicelib.routes.meta_routes import VERSION
from chalicelib.settings import Settings
from devstack.run import stage_environment


def main() -> None:
    document = openapi.document(ROUTERS, version=VERSION, settings=Settings.from_env(stage_environment()))
    json.dump(document, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
