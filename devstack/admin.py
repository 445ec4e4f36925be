"""The operator commands of chalicelib.admin against the local stack (the dev stage's settings).

    python -m devstack.admin agent-token create --region nyc1
"""

from __future__ import annotations

import os
import sys

from devstack.run import stage_environment


def main() -> int:
    os.environ.update(stage_environment())
    from chalicelib import admin

    return admin.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
