"""Property-based tests of the running API against the OpenAPI document it serves (schemathesis).

Every documented operation gets generated valid and invalid requests as a signed-in user, and every
answer must be documented: never a 5xx, a documented status, content type and headers, and a body
that matches the response schema.

Two runs: hypothesis fuzzing through schemathesis' Python API (`operation.as_strategy`, one pytest
test per operation and mode, steered at the user's own organization half the time so the happy paths
run too), and schemathesis' coverage phase through its CLI (boundary values, missing and mistyped
fields, unexpected methods). schemathesis' own pytest loader for a schema known only at run time
(`schemathesis.pytest.from_fixture`) fails under pytest 9 (it reads `Function._nodeid`), hence plain
hypothesis around `as_strategy`.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib.routes import ROUTERS
from chalicelib.web import Operation
from conftest import Account, Stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 25
SESSION_ENDING = {("POST", "/v1/auth/logout")}
REGION = "nyc1"
OPERATIONS = [op for router in ROUTERS for op in router.operations]
# Negative mode needs something to make invalid: a parameter, a body, or credentials.
NEGATABLE = [op for op in OPERATIONS if op.body or op.query or op.headers or "{" in op.path or op.auth != "none"]


def _label(op: Operation) -> str:
    return f"{op.method} {op.path}"


@dataclass
class World:
    """What the fuzzed requests act on: a user with their organization and a cluster, and an agent of its region."""

    user: Account
    agent_token: str
    known: dict[str, str]  # path parameter -> an existing value, used half the time instead of a generated one


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    user = stack.register(organization_name="Fuzzed Org")
    created = stack.create_cluster(user, name="fuzzed", region=REGION)
    return World(user=user, agent_token=stack.agent(REGION), known={
        "org_id": user.org_id, "user_id": user.user_id,
        "cluster_id": created["cluster"]["id"], "operation_id": created["operation"]["id"],
    })


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json", timeout=60)


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
def test_valid_requests_get_documented_answers(api_schema: Any, stack: Stack, world: World, op: Operation) -> None:
    _fuzz(api_schema, stack, world, op, GenerationMode.POSITIVE)


@pytest.mark.parametrize("op", NEGATABLE, ids=_label)
def test_invalid_requests_get_documented_answers(api_schema: Any, stack: Stack, world: World, op: Operation) -> None:
    _fuzz(api_schema, stack, world, op, GenerationMode.NEGATIVE)


def _fuzz(api_schema: Any, stack: Stack, world: World, op: Operation, mode: GenerationMode) -> None:
    operation = api_schema[op.path][op.method]

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode), data=st.data())
    def call(case: schemathesis.Case, data: st.DataObject) -> None:
        for name in case.path_parameters or {}:
            if name in world.known and data.draw(st.booleans(), label=f"existing {name}"):
                case.path_parameters[name] = world.known[name]
        if op.auth == "agent":
            token = world.agent_token
        elif (op.method, op.path) in SESSION_ENDING:
            token = _fresh_session(stack, world.user)
        else:
            token = world.user.access_token
        case.call_and_validate(base_url=stack.url, session=stack.http, headers={"Authorization": f"Bearer {token}"},
                               checks=CHECKS, timeout=60)

    call()


def _fresh_session(stack: Stack, account: Account) -> str:
    response = stack.call("POST", "/v1/auth/login", json={"email": account.email, "password": account.password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# TRACE (and QUERY) never reach the app: chalice's local server answers them itself with an HTML 501.
COVERAGE_CONFIG = """
[phases.coverage]
unexpected-methods = ["get", "put", "post", "delete", "options", "patch"]

[parameters]
"""


@pytest.mark.parametrize("principal", ["user", "agent"])
def test_coverage_phase_finds_no_undocumented_answer(
    stack: Stack, world: World, tmp_path: Path, principal: str,
) -> None:
    known = "".join(f'"path.{name}" = "{value}"\n' for name, value in world.known.items() if name != "user_id")
    (tmp_path / "schemathesis.toml").write_text(COVERAGE_CONFIG + known)
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
            "run", f"{stack.url}/openapi.json", "--phases", "examples,coverage", "--workers", "1", *selection,
            "--checks", ",".join(check.__name__ for check in CHECKS), "--header", f"Authorization: Bearer {token}",
            "--generation-database", "none", "--request-timeout", "60",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Coverage" in result.stdout and "passed" in result.stdout, result.stdout[-3000:]
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
