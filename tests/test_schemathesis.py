"""Property-based tests of the running API against the OpenAPI document it serves (schemathesis).

Every documented operation gets generated valid and invalid requests as a signed-in user, and every check
schemathesis has runs on every answer: never a 5xx; a documented status, content type, headers and body;
valid data accepted (`positive_data_acceptance`), invalid data refused (`negative_data_rejection`),
authentication enforced (`ignored_auth`), and so on. The document states exactly what the API accepts.

Two runs: hypothesis fuzzing through schemathesis' Python API (`operation.as_strategy`, one pytest
test per operation and mode, steered at the user's own organization half the time so the happy paths
run too), and schemathesis' CLI with `--checks all` for its coverage and stateful phases
(tests/test_schemathesis_cli.py, on a stack of its own so the two run side by side). schemathesis' own pytest loader for a schema
known only at run time (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it reads
`Function._nodeid`), hence plain hypothesis around `as_strategy`.

Checks that do nothing here, and why: `object_level_authorization` needs a second identity configured for
schemathesis; `max_response_time` needs a limit, and tests do not time answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from chalicelib.routes import ROUTERS
from chalicelib.web import Operation
from conftest import Account, Stack

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
# What both runs share. A request the document accepts may still be refused for the state of what it acts on:
# a stale If-Match (412), or a rule no JSON Schema can state, across fields or against the stored cluster (422:
# storage only grows, instances stay inside the autoscaling policy, autoscaling.max_storage_gb is at least
# storage_gb). Whatever the document refuses is a 400, and nothing it accepts is.
CONFIG = f"""
hooks = "{HOOKS}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]
"""
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
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json", config=SchemathesisConfig.from_str(CONFIG),
                                         timeout=60)


def test_every_check_schemathesis_has_is_enabled(api_schema: Any) -> None:
    """The Python-API runs leave `checks` unset: schemathesis then runs every check its configuration enables."""
    load_all_checks()
    config = api_schema.config.checks_config_for()
    names = CHECKS.get_all_names()
    assert {"negative_data_rejection", "positive_data_acceptance", "ignored_auth", "use_after_free"} <= set(names)
    assert [name for name in names if not config.get_by_name(name=name).enabled] == []


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
        # A generated bearer token becomes a real one; a case that leaves the credentials out (negative mode)
        # goes without, and must get its 401.
        headers = None
        if op.auth != "none" and "Authorization" in (case.headers or {}):
            if op.auth == "agent":
                token = world.agent_token
            elif (op.method, op.path) in SESSION_ENDING:
                token = _fresh_session(stack, world.user)
            else:
                token = world.user.access_token
            headers = {"Authorization": f"Bearer {token}"}
        case.call_and_validate(base_url=stack.url, session=stack.http, headers=headers, timeout=60)

    call()


def _fresh_session(stack: Stack, account: Account) -> str:
    response = stack.call("POST", "/v1/auth/login", json={"email": account.email, "password": account.password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
