"""The dashboard's weight: what a first visit downloads, and each route's chunk, raw and gzipped, from a production
build (`vite build` into a scratch folder, timed). The first visit is index.html, its entry script and styles and the
modules they preload; a route's chunk is fetched when the route is first opened (TanStack Router's code splitting).

    .venv/bin/python -m bench.dashboard_bundle
"""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import banner, heading, markdown_table
from devstack.harness import ROOT

DASHBOARD = ROOT / "dashboard"


def gzipped(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def kib(size: int) -> str:
    return f"{size / 1024:.1f}"


def main() -> None:
    banner("The dashboard's bundle")
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        out = Path(scratch) / "dist"
        started = time.perf_counter()
        subprocess.run(["node", "node_modules/vite/bin/vite.js", "build", "--outDir", str(out), "--emptyOutDir",
                        "--logLevel", "warn"], cwd=DASHBOARD, check=True)
        built = time.perf_counter() - started
        index = (out / "index.html").read_text()
        first = [out / ref.lstrip("/") for ref in re.findall(r'(?:src|href)="(/assets/[^"]+)"', index)]
        assets = sorted((out / "assets").iterdir(), key=lambda p: p.stat().st_size, reverse=True)
        rows = [[p.name, "first visit" if p in first else "on its route", kib(p.stat().st_size), kib(gzipped(p))]
                for p in assets if p.suffix in (".js", ".css")]
        heading("Files (KiB)")
        print(markdown_table(["file", "loaded", "raw", "gzip -9"], rows))
        first_raw = sum(p.stat().st_size for p in first)
        first_gz = sum(gzipped(p) for p in first)
        total_gz = sum(gzipped(p) for p in assets if p.suffix in (".js", ".css"))
        heading("Summary")
        print(markdown_table(["figure", "value"], [
            ["vite build (s)", f"{built:.1f}"],
            ["first visit: files", len(first)],
            ["first visit: raw KiB", kib(first_raw)],
            ["first visit: gzip KiB", kib(first_gz)],
            ["every JS and CSS file: gzip KiB", kib(total_gz)],
        ]))


if __name__ == "__main__":
    main()
