"""Run a command against the local stack of `make run`: start it, wait until it says it is up, run the command,
stop the stack, exit with the command's status. `make test` runs the dashboard's end-to-end tests this way.
The stack's output goes to .devstack/with_stack.log, and its end is printed when something failed.

    python -m devstack.with_stack -- node node_modules/@playwright/test/cli.js test
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from devstack.run import READY, ROOT

LOG = ROOT / ".devstack" / "with_stack.log"
START_TIMEOUT_SECONDS = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwd", type=Path, default=ROOT, help="where the command runs")
    parser.add_argument("command", nargs="+", help="the command (after --)")
    args = parser.parse_args()
    stack = subprocess.Popen([sys.executable, "-m", "devstack.run"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    up = threading.Event()

    LOG.parent.mkdir(exist_ok=True)

    def relay() -> None:
        assert stack.stdout is not None
        with LOG.open("w") as log:
            for line in stack.stdout:
                log.write(line)
                log.flush()
                if line.strip() == READY:
                    up.set()
        up.set()  # the stack ended: stop waiting

    threading.Thread(target=relay, daemon=True).start()
    status = 1
    try:
        if not up.wait(START_TIMEOUT_SECONDS) or stack.poll() is not None:
            print(f"the local stack did not come up (exit {stack.poll()})", file=sys.stderr)
        else:
            status = subprocess.run(args.command, cwd=args.cwd, env=os.environ).returncode
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGTERM)  # devstack.run stops its agents first, then the rest
            try:
                stack.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()
    if status != 0:
        print(f"the local stack's output ({LOG}), its end:\n" + "".join(LOG.read_text().splitlines(True)[-60:]),
              file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
