"""Run a module as `python -m` does, on a test Stack's clock (the offset file its API reads, see devstack/api.py):

    python -m devstack.clocked CLOCK_FILE MODULE [ARGS...]

so that what runs outside the API (the reaper through devstack.scheduler, chalicelib.admin) sees the time the
test moved the API to.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from chalicelib import clock
from devstack.api import offset_clock


def main() -> None:
    clock_file, module, *args = sys.argv[1:]

    clock.use(offset_clock(Path(clock_file)))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
