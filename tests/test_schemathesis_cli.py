"""schemathesis' CLI against the running API, every check (`--checks all`), positive and negative data: its coverage
phase (boundary values, missing and mistyped fields, unexpected methods) and its stateful phase (links between
operations, which `use_after_free` and `ensure_resource_availability` need), as a user and as an agent.

A module of its own, on a stack of its own, so it runs beside the Python-API fuzzing of tests/test_schemathesis.py
(which shares its configuration, hooks and world).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Stack
from test_schemathesis import CONFIG, MAX_EXAMPLES, World, _fresh_session, world  # noqa: F401 (the fixture)

# TRACE (and QUERY) never reach the app: chalice's local server answers them itself with an HTML 501.
CLI_CONFIG = CONFIG + """
[phases.coverage]
unexpected-methods = ["get", "put", "post", "delete", "options", "patch"]

[parameters]
"""


@pytest.mark.parametrize("principal", ["user", "agent"])
def test_coverage_and_stateful_phases_find_nothing(
    stack: Stack, world: World, tmp_path: Path, principal: str,  # noqa: F811 (the fixture imported above)
) -> None:
    known = "".join(f'"path.{name}" = "{value}"\n' for name, value in world.known.items() if name != "user_id")
    (tmp_path / "schemathesis.toml").write_text(CLI_CONFIG + known)
    if principal == "agent":
        token, selection = world.agent_token, ["--include-tag", "agent"]
    else:
        # Logging out would end the session every other operation runs with; the fuzzing above covers it.
        token = _fresh_session(stack, world.user)
        selection = ["--exclude-tag", "agent", "--exclude-path", "/v1/auth/logout"]
    # One worker: with several, hypothesis' lambda descriptions call ast.parse from many threads, which CPython 3.11
    # can fail with "SystemError: AST constructor recursion depth mismatch".
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")), "--config-file", "schemathesis.toml", "--no-color",
            "run", f"{stack.url}/openapi.json", "--phases", "examples,coverage,stateful", "--workers", "1", *selection,
            "--checks", "all", "--mode", "all", "--max-examples", str(MAX_EXAMPLES),
            "--header", f"Authorization: Bearer {token}", "--generation-database", "none", "--request-timeout", "60",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Coverage" in result.stdout and "Stateful" in result.stdout and "passed" in result.stdout, result.stdout[-3000:]
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
