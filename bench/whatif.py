"""What-if for the cold start: the same `import app` + first request with one change applied in the
child process only (the product code is not modified), interleaved with `import boto3`.

Changes tried: the cyclic garbage collector disabled during the import, then the objects the import
created moved out of its reach (`gc.freeze()`, so the first collection does not walk them); every
pydantic model built
lazily (`defer_build=True`, set on BaseModel's config before any model exists); pydantic's plugin
discovery (an entry-point scan of every installed distribution) disabled. The first request is
GET /health and then GET /v1/auth/me with an invalid token (authentication and the error shape,
no DynamoDB), so deferred models that the request needs are paid for in the figure.

    .venv/bin/python -m bench.whatif [--pairs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.cold_start import BOTO3_IMPORT, Runner, Variant, proxy_event, run_child, snapshot
from bench.common import app_environment, heading, markdown_table, median, ms


@dataclass(frozen=True)
class WhatIf:
    name: str
    before_import: str = ""  # statements run after the timer starts, before `import app`
    after_import: str = ""
    env: dict[str, str] = field(default_factory=dict)


GC_OFF = WhatIf("gc off during import, then gc.freeze()", "import gc; gc.disable()", "gc.freeze(); gc.enable()")
DEFER = WhatIf("pydantic defer_build", "import pydantic; pydantic.BaseModel.model_config['defer_build'] = True")
NO_PLUGINS = WhatIf("PYDANTIC_DISABLE_PLUGINS=__all__", env={"PYDANTIC_DISABLE_PLUGINS": "__all__"})
WHAT_IFS = [
    WhatIf("as is"),
    GC_OFF,
    DEFER,
    NO_PLUGINS,
    WhatIf("all three", f"{GC_OFF.before_import}; {DEFER.before_import}", GC_OFF.after_import, NO_PLUGINS.env),
]

CHILD = """\
import time; _t0 = time.perf_counter()
import json, sys
{before}
import app
{after}
_t1 = time.perf_counter()
first = app.app(json.loads(sys.argv[1])[0], None)
_t2 = time.perf_counter()
second = app.app(json.loads(sys.argv[1])[1], None)
_t3 = time.perf_counter()
result = {{"import": _t1 - _t0, "request": _t3 - _t1, "total": _t3 - _t0,
          "status": first["statusCode"] * 1000 + second["statusCode"]}}
print('BENCH ' + json.dumps(result), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    args = parser.parse_args()
    events = json.dumps([proxy_event("GET", "/health"), proxy_event("GET", "/v1/auth/me", token="not.a.jwt")])
    # No AWS endpoint is contacted: nothing here reaches DynamoDB.
    base_env = {**app_environment("http://127.0.0.1:9", "whatif"), "PYTHONDONTWRITEBYTECODE": "1", "LOG_LEVEL": "INFO"}
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as tmp:
        code_dir = snapshot(Path(tmp) / "compiled", compile_=True)
        runners = {w.name: Runner([sys.executable], {**base_env, **w.env}, code_dir, code_dir) for w in WHAT_IFS}
        variants = {
            w.name: Variant(w.name, w.name, CHILD.format(before=w.before_import, after=w.after_import), code_dir,
                            events, 200_401)
            for w in WHAT_IFS
        }
        boto3 = Variant("boto3", "import boto3", BOTO3_IMPORT, code_dir)
        plain = runners["as is"]
        order = [(plain, boto3), *((runners[name], variant) for name, variant in variants.items())]
        for runner, variant in order:  # warm-up
            run_child(runner, variant)
        results: dict[str, list[dict[str, float]]] = {variant.key: [] for _, variant in order}
        for round_ in range(args.pairs):
            for runner, variant in order if round_ % 2 == 0 else order[::-1]:
                results[variant.key].append(run_child(runner, variant))

    heading(f"What-if: import app + 2 requests with one change ({args.pairs} interleaved rounds; medians, ms)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    b_total = median([s["total"] for s in results["boto3"]])
    b_cpu = median([s["cpu"] for s in results["boto3"]])
    base_total = median([s["total"] for s in results["as is"]])
    base_cpu = median([s["cpu"] for s in results["as is"]])
    rows = []
    for key, samples in results.items():
        total, cpu = median([s["total"] for s in samples]), median([s["cpu"] for s in samples])
        rows.append([key, ms(median([s["import"] for s in samples])), ms(median([s["request"] for s in samples])),
                     ms(total), ms(cpu), f"{total / b_total:.2f}×", f"{cpu / b_cpu:.2f}×",
                     "" if key == "boto3" else f"{(total - base_total) * 1000:+.1f} / {(cpu - base_cpu) * 1000:+.1f}"])
    print(markdown_table(["variant", "import", "2 requests", "in-process total", "process CPU", "÷ boto3 (total)",
                          "÷ boto3 (CPU)", "Δ vs as is (total / CPU)"], rows))


if __name__ == "__main__":
    main()
