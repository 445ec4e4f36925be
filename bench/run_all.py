"""Run every benchmark, each in its own process (the app reads its settings once per process).

    .venv/bin/python -m bench.run_all            # or: make bench
    .venv/bin/python -m bench.run_all cold_start # only the named ones
    .venv/bin/python -m bench.run_all dynamo_calls scale_independence endpoint_latency  # the cluster/agent ones
    .venv/bin/python -m bench.run_all agent_loop  # the real loop: API (HTTP) + agent + PostgreSQL servers
    .venv/bin/python -m bench.run_all cnpg_loop   # the real loop with the cnpg driver: + Kubernetes and CNPG
    .venv/bin/python -m bench.run_all dashboard_bundle  # what the web console weighs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench.report import machine
from devstack.harness import ROOT

BENCHMARKS = ["cold_start", "dynamo_calls", "login_latency", "scale_independence", "endpoint_latency",
              "autoscaler_tick", "metrics_series", "agent_loop", "cnpg_loop", "dashboard_bundle"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name", help=f"only these, of: {' '.join(BENCHMARKS)}")
    chosen = parser.parse_args().names or BENCHMARKS
    if unknown := sorted(set(chosen) - set(BENCHMARKS)):
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    info = machine()
    print(f"# Orochi DB control plane benchmarks\n\n{info['date']} · {info['cpus']} CPUs ({info['cpu']}) · "
          f"{info['memory']} RAM · Python {info['python']} · {info['platform']}", flush=True)
    failed = []
    for name in chosen:
        started = time.perf_counter()
        print(f"\n_{name}: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start_", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT)
        print(f"\n_{name}: {time.perf_counter() - started:.0f} s_", flush=True)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
