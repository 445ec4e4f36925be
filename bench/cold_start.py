"""Cold start: fresh processes importing `app` and serving a first request, interleaved with fresh
processes importing boto3 alone; then `python -X importtime -c "import app"`'s worst offenders.

Each child times itself from its first statement (after the interpreter is up) and prints one
`BENCH {json}` line; the parent also measures the whole process (wall and CPU time, interpreter
start-up included). The request goes through `app.app(event, context)` with an API Gateway proxy
event, as Lambda calls it.

The app is imported from a snapshot of app.py and chalicelib/ taken at the start (so concurrent
edits cannot change it mid-run), once byte-compiled and once as source only. Children never write
bytecode (PYTHONDONTWRITEBYTECODE=1), like Lambda, whose /var/task is read-only: a module without
a .pyc is compiled from source on every cold start.

    .venv/bin/python -m bench.cold_start [--pairs 15] [--package ZIP]

`--package ZIP` runs the children on a deployment package instead, as Lambda would: ZIP (from
`chalice package --stage prod DIR`, which needs the app's settings in the environment) is
extracted and is the only thing on the path besides the standard library (the base interpreter
with `-S`). "compiled" is then the whole package byte-compiled, "source" the package as shipped;
chalice ships no bytecode, so B_src is boto3 compiled from source as in such a Lambda.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.inprocess import moto_stack
from bench.report import heading, markdown_table, median, ms
from devstack.harness import ROOT

# The children share this preamble so every variant measures the same span.
_PREAMBLE = "import time; _t0 = time.perf_counter()\nimport json, sys\n"
_REPORT = "print('BENCH ' + json.dumps(result), flush=True)\n"

APP_REQUEST = _PREAMBLE + """\
import app
_t1 = time.perf_counter()
response = app.app(json.loads(sys.argv[1]), None)
_t2 = time.perf_counter()
result = {"import": _t1 - _t0, "request": _t2 - _t1, "total": _t2 - _t0, "status": response["statusCode"]}
""" + _REPORT

REGISTER = _PREAMBLE + """\
import app
response = app.app(json.loads(sys.argv[1]), None)
result = {"status": response["statusCode"], "body": response["body"]}
""" + _REPORT

BOTO3_IMPORT = _PREAMBLE + """\
import boto3
_t1 = time.perf_counter()
result = {"import": _t1 - _t0, "request": 0.0, "total": _t1 - _t0, "status": 0}
""" + _REPORT

BOTO3_GET_ITEM = _PREAMBLE + """\
import boto3
_t1 = time.perf_counter()
client = boto3.client("dynamodb")
client.get_item(TableName=sys.argv[1], Key={"pk": {"S": "USER#nobody"}, "sk": {"S": "PROFILE"}}, ConsistentRead=True)
_t2 = time.perf_counter()
result = {"import": _t1 - _t0, "request": _t2 - _t1, "total": _t2 - _t0, "status": 200}
""" + _REPORT


@dataclass(frozen=True)
class Runner:
    """How children start: the interpreter's argv prefix, their environment, and the code they import.

    Children run in `compiled` or `source` (the directory is sys.path[0]): snapshots of app.py and
    chalicelib with and without bytecode, or with --package the extracted package with and without.
    """

    python: list[str]
    env: dict[str, str]
    compiled: Path
    source: Path
    package: bool = False


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    code: str
    cwd: Path
    argument: str = ""
    expected_status: int = 0


def proxy_event(method: str, path: str, *, body: Any = None, token: str | None = None) -> dict[str, Any]:
    """A minimal API Gateway (REST, proxy integration) event for a route without path parameters."""
    headers = {"Content-Type": "application/json", "Host": "api.example.com"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path, "httpMethod": method, "path": f"/api{path}", "stage": "api",
            "requestId": "bench-request", "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def snapshot(target: Path, *, compile_: bool, package: Path | None = None) -> Path:
    """The extracted `package`, or a copy of app.py and chalicelib/ (no bytecode); byte-compiled when `compile_`."""
    if package:
        shutil.unpack_archive(str(package), str(target), format="zip")
    else:
        target.mkdir(parents=True)
        shutil.copy2(ROOT / "app.py", target / "app.py")
        shutil.copytree(ROOT / "chalicelib", target / "chalicelib",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if compile_ and not compileall.compile_dir(str(target), quiet=1, workers=(os.cpu_count() or 1) if package else 1):
        raise RuntimeError(f"compileall failed in {target}")
    return target


def run_child(runner: Runner, variant: Variant) -> dict[str, Any]:
    args = [*runner.python, "-c", variant.code] + ([variant.argument] if variant.argument else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, cwd=variant.cwd, env=runner.env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant.label} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1][6:])
    if variant.expected_status and result["status"] != variant.expected_status:
        raise RuntimeError(f"{variant.label} answered {result['status']}, expected {variant.expected_status}:\n"
                           f"{done.stdout[-2000:]}")
    return {**result, "wall": wall, "cpu": cpu}


def setup_account(runner: Runner) -> tuple[str, str, str]:
    """Register one user through the app (in a child) and return (email, password, access token)."""
    email, password = "cold-start@example.com", "correct horse battery staple"
    event = proxy_event("POST", "/v1/auth/register", body={
        "email": email, "password": password, "name": "Cold Start", "organization_name": "Cold Start Org",
    })
    registered = run_child(runner, Variant("register", "registration", REGISTER, runner.compiled, json.dumps(event),
                                           201))
    return email, password, json.loads(registered["body"])["access_token"]


def variants(runner: Runner) -> list[Variant]:
    email, password, token = setup_account(runner)
    health = json.dumps(proxy_event("GET", "/health"))
    login = json.dumps(proxy_event("POST", "/v1/auth/login", body={"email": email, "password": password}))
    me = json.dumps(proxy_event("GET", "/v1/auth/me", token=token))
    compiled, source = runner.compiled, runner.source
    return [
        Variant("A", "import app + GET /health", APP_REQUEST, compiled, health, 200),
        Variant("B", "import boto3", BOTO3_IMPORT, compiled),
        Variant("A_src", "A with the package as shipped (no bytecode)" if runner.package
                else "A with app.py + chalicelib compiled from source", APP_REQUEST, source, health, 200),
        Variant("A_login", "import app + POST /v1/auth/login (DynamoDB + Argon2id)", APP_REQUEST, compiled, login, 200),
        Variant("A_me", "import app + GET /v1/auth/me (DynamoDB, no KDF)", APP_REQUEST, compiled, me, 200),
        Variant("C", "reference: import boto3 + client + 1 GetItem", BOTO3_GET_ITEM, compiled,
                runner.env["TABLE_NAME"], 200),
        *([Variant("B_src", "B with boto3 and botocore compiled from source", BOTO3_IMPORT, source)]
          if runner.package else []),
    ]


def measure(runner: Runner, chosen: list[Variant], pairs: int) -> dict[str, list[dict[str, float]]]:
    for variant in chosen:  # warm-up: files in the page cache
        run_child(runner, variant)
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for round_ in range(pairs):
        order = chosen if round_ % 2 == 0 else chosen[::-1]  # alternate the order so drift hits all alike
        for variant in order:
            results[variant.key].append(run_child(runner, variant))
    return results


def _median(samples: list[dict[str, float]], key: str) -> float:
    return median([s[key] for s in samples])


def report(runner: Runner, pairs: int) -> None:
    chosen = variants(runner)
    heading(f"Cold start ({pairs} interleaved rounds; medians, ms)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    results = measure(runner, chosen, pairs)
    rows = []
    for variant in chosen:
        samples = results[variant.key]
        rows.append([f"{variant.key}: {variant.label}",
                     *(ms(_median(samples, key)) for key in ("import", "request", "total", "wall", "cpu")),
                     f"{ms(min(s['total'] for s in samples))}–{ms(max(s['total'] for s in samples))}"])
    print(markdown_table(["variant", "import", "first request", "in-process total", "process wall", "process CPU",
                          "in-process range"], rows))
    a, b = results["A"], results["B"]
    per_round = sorted(x["total"] / y["total"] for x, y in zip(a, b, strict=True))
    print(f"\nA/B (import app + GET /health vs import boto3): "
          f"in-process {_median(a, 'total') / _median(b, 'total'):.2f}×, "
          f"process wall {_median(a, 'wall') / _median(b, 'wall'):.2f}×, "
          f"process CPU {_median(a, 'cpu') / _median(b, 'cpu'):.2f}×; per-round in-process ratios median "
          f"{median(per_round):.2f}× (range {per_round[0]:.2f}–{per_round[-1]:.2f}); target ≤ 1.30×")
    compiling = "the whole package" if runner.package else "the app's own modules"
    extra = _median(results["A_src"], "total") - _median(a, "total")
    print(f"A_src/B: {_median(results['A_src'], 'total') / _median(b, 'total'):.2f}× "
          f"(compiling {compiling} from source costs {ms(extra)} ms)")
    if "B_src" in results:
        print(f"A_src/B_src (both as shipped, no bytecode): "
              f"{_median(results['A_src'], 'total') / _median(results['B_src'], 'total'):.2f}×")
    print(f"A_login/B: {_median(results['A_login'], 'total') / _median(b, 'total'):.2f}×; "
          f"A_me/C (first DynamoDB request, app vs bare boto3): "
          f"{_median(results['A_me'], 'total') / _median(results['C'], 'total'):.2f}×")


def import_profile(runner: Runner, statement: str, runs: int = 3) -> dict[str, tuple[float, float]]:
    """Median (self, cumulative) microseconds per module over `runs` runs of `python -X importtime`."""
    samples: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _ in range(runs):
        done = subprocess.run([*runner.python, "-X", "importtime", "-c", statement], cwd=runner.compiled,
                              env=runner.env, capture_output=True, text=True, check=True)
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
            samples[name.strip()].append((int(self_us), int(cumulative_us)))
    return {
        name: (median([s for s, _ in values]), median([c for _, c in values]))
        for name, values in samples.items()
    }


def report_imports(runner: Runner, top: int = 15) -> None:
    app_profile = import_profile(runner, "import app")
    boto_profile = import_profile(runner, "import boto3")
    heading(f'python -X importtime -c "import app": top {top} by cumulative time (byte-compiled; median of 3 runs)')
    ranked = sorted(app_profile.items(), key=lambda item: item[1][1], reverse=True)[:top]
    print(markdown_table(["module", "cumulative ms", "self ms"],
                         [[name, f"{c / 1000:.1f}", f"{s / 1000:.1f}"] for name, (s, c) in ranked]))

    heading(f"Top {top} modules by self time in `import app` (ms)")
    by_self = sorted(app_profile.items(), key=lambda item: item[1][0], reverse=True)[:top]
    rows = [[name, f"{s / 1000:.1f}", "yes" if name in boto_profile else "no"] for name, (s, _) in by_self]
    print(markdown_table(["module", "self ms", "also imported by `import boto3`"], rows))

    heading("Self import time by top-level package (ms): what `import app` adds to `import boto3`")
    by_package: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, (s, _) in app_profile.items():
        package = name.split(".")[0]
        by_package[package][0] += s
        if name not in boto_profile:
            by_package[package][1] += s
    rows = sorted(by_package.items(), key=lambda item: item[1][1], reverse=True)
    shown = [[package, f"{all_ / 1000:.1f}", f"{extra / 1000:.1f}"] for package, (all_, extra) in rows if extra >= 2000]
    print(markdown_table(["package", "self ms in `import app`", "of which not imported by `import boto3`"], shown))
    total_app = sum(v[0] for v in by_package.values())
    total_extra = sum(v[1] for v in by_package.values())
    boto_total = sum(s for s, _ in boto_profile.values())
    print(f"\nSum of self times: import app {total_app / 1000:.1f} ms, import boto3 {boto_total / 1000:.1f} ms, "
          f"modules only app imports {total_extra / 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--package", type=Path, help="a deployment.zip from `chalice package` (see the module doc)")
    args = parser.parse_args()
    python = [getattr(sys, "_base_executable", sys.executable), "-S"] if args.package else [sys.executable]
    where = f"on {args.package} extracted" if args.package else "in the project's virtualenv"
    print(f"\nChildren run as `{' '.join(python)}` {where}, with PYTHONDONTWRITEBYTECODE=1.")
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp, moto_stack(LOG_LEVEL="INFO") as stack_env:
        root = Path(tmp)
        compiled = snapshot(root / "compiled", compile_=True, package=args.package)
        source = snapshot(root / "source", compile_=False, package=args.package)
        env = {**stack_env, "PYTHONDONTWRITEBYTECODE": "1"}
        runner = Runner(python=python, env=env, compiled=compiled, source=source, package=bool(args.package))
        report(runner, args.pairs)
        report_imports(runner)


if __name__ == "__main__":
    main()
