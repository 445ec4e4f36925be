"""Statistics and markdown output of the benchmarks, and the machine they ran on."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def sec(value: float | None, digits: int = 2) -> str:
    """Seconds (or any figure) to `digits` places; – for an unknown one."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = next((line.split()[1] for line in memory if line.startswith("Mem:")), "unknown")
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": str(os.cpu_count()), "memory": total, "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform()}


def banner(title: str) -> None:
    """The run's title, machine and load average, as every benchmark starts its output."""
    info = machine()
    print(f"# {title}\n\n{info['date']} · {info['cpus']} CPUs ({info['cpu']}) · {info['memory']} RAM · "
          f"Python {info['python']} · {info['platform']}\n\n_load average {load_average()} at start_", flush=True)


def heading(title: str) -> None:
    print(f"\n## {title}\n", flush=True)
