"""The agent's own wire models agree with the API's generated /openapi.json and with the jobs it enqueues.

The agent imports nothing of the control plane, so this is where the two sides meet: what the agent sends
must be accepted by the API's schema (every field known, every required field present, types and bounds
no looser), and what the agent expects must be promised by it (every field it requires is a required field
of the API's answer, with the same type).
"""

from __future__ import annotations

from typing import Any

import pytest
from orochi_agent import models
from pydantic import BaseModel

from chalicelib.jobs import ReconcileJob
from conftest import Stack

Schema = dict[str, Any]
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems",
          "maxItems")
SENT = [  # (path, method, agent model of the request body)
    ("/v1/agent/heartbeat", "post", models.Heartbeat),
    ("/v1/agent/clusters/{cluster_id}/status", "post", models.StatusReport),
    ("/v1/agent/metrics", "post", models.MetricsBatch),
]
RECEIVED = [  # (path, method, agent model of the 200 answer)
    ("/v1/agent/heartbeat", "post", models.HeartbeatOut),
    ("/v1/agent/clusters", "get", models.RegionClusterPage),
    ("/v1/agent/clusters/{cluster_id}", "get", models.DesiredState),
    ("/v1/agent/clusters/{cluster_id}/status", "post", models.ReportOut),
    ("/v1/agent/metrics", "post", models.MetricsAccepted),
]


@pytest.fixture(scope="module")
def document(stack: Stack) -> Schema:
    response = stack.call("GET", "/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


class Resolver:
    def __init__(self, root: Schema, prefix: str) -> None:
        self.root, self.prefix = root, prefix

    def __call__(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix(self.prefix)
            schema = self.root[name]
        return schema


def _variants(schema: Schema, resolve: Resolver) -> list[Schema]:
    """The non-null alternatives of a schema (`X | None` is anyOf [X, null])."""
    schema = resolve(schema)
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return [resolve(option) for option in options if resolve(option).get("type") != "null"]


def _types(schema: Schema, resolve: Resolver) -> set[str]:
    found = set()
    for variant in _variants(schema, resolve):
        kind = variant.get("type", "object" if "properties" in variant else "any")
        found |= {kind} | ({"number"} if kind == "integer" else set())
    return found


def _agent_schema(model: type[BaseModel], mode: str) -> tuple[Schema, Resolver]:
    schema = model.model_json_schema(mode=mode, ref_template="#/$defs/{model}")  # type: ignore[arg-type]
    return schema, Resolver(schema.get("$defs", {}), "#/$defs/")


def _compare_sent(agent: Schema, api: Schema, a: Resolver, b: Resolver, where: str) -> list[str]:
    problems: list[str] = []
    agent_variants, api_variants = _variants(agent, a), _variants(api, b)
    if not agent_variants or not api_variants:
        return problems
    mine, theirs = agent_variants[0], api_variants[0]
    if "properties" in theirs:
        fields, accepted = mine.get("properties", {}), theirs["properties"]
        problems += [f"{where}.{name}: the API does not accept it" for name in fields if name not in accepted]
        problems += [f"{where}.{name}: required by the API, optional for the agent"
                     for name in theirs.get("required", []) if name not in mine.get("required", [])]
        for name in fields.keys() & accepted.keys():
            problems += _compare_sent(fields[name], accepted[name], a, b, f"{where}.{name}")
        return problems
    if theirs.get("type") == "array":
        problems += _bounds(mine, theirs, where)
        return problems + _compare_sent(mine.get("items", {}), theirs.get("items", {}), a, b, f"{where}[]")
    if not _types(agent, a) <= _types(api, b):
        problems.append(f"{where}: the agent sends {sorted(_types(agent, a))}, the API takes {sorted(_types(api, b))}")
    if "enum" in theirs and not set(mine.get("enum", [mine.get("const")])) <= set(theirs["enum"]):
        problems.append(f"{where}: the agent may send {mine.get('enum')}, the API takes {theirs['enum']}")
    return problems + _bounds(mine, theirs, where)


def _bounds(mine: Schema, theirs: Schema, where: str) -> list[str]:
    """The agent's bounds are at least as tight as the API's, so nothing it sends is refused for range."""
    problems = []
    for bound in BOUNDS:
        if bound not in theirs:
            continue
        lower = bound.startswith(("minimum", "exclusiveMinimum", "min"))
        if bound not in mine or (mine[bound] < theirs[bound] if lower else mine[bound] > theirs[bound]):
            problems.append(f"{where}: the API has {bound}={theirs[bound]}, the agent {mine.get(bound)}")
    return problems


def _compare_received(agent: Schema, api: Schema, a: Resolver, b: Resolver, where: str) -> list[str]:
    problems: list[str] = []
    mine, theirs = _variants(agent, a)[0], _variants(api, b)[0]
    if "properties" in mine:
        promised = theirs.get("properties", {})
        for name in mine.get("required", []):
            if name not in promised:
                problems.append(f"{where}.{name}: the agent requires it, the API never sends it")
            elif name not in theirs.get("required", []) and "default" not in promised[name]:
                problems.append(f"{where}.{name}: the agent requires it, the API may leave it out")
        for name in mine["properties"].keys() & promised.keys():
            problems += _compare_received(mine["properties"][name], promised[name], a, b, f"{where}.{name}")
        return problems
    if mine.get("type") == "array":
        return _compare_received(mine.get("items", {}), theirs.get("items", {}), a, b, f"{where}[]")
    if not _types(api, b) <= _types(agent, a) | {"any"} and "any" not in _types(agent, a):
        problems.append(f"{where}: the API sends {sorted(_types(api, b))}, the agent takes {sorted(_types(agent, a))}")
    return problems


@pytest.mark.parametrize(("path", "method", "model"), SENT, ids=[m.__name__ for _, _, m in SENT])
def test_what_the_agent_sends_is_what_the_api_accepts(document: Schema, path: str, method: str,
                                                      model: type[BaseModel]) -> None:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    agent, resolve_agent = _agent_schema(model, "serialization")
    api = Resolver(document["components"]["schemas"], "#/components/schemas/")
    assert _compare_sent(agent, body, resolve_agent, api, model.__name__) == []


@pytest.mark.parametrize(("path", "method", "model"), RECEIVED, ids=[m.__name__ for _, _, m in RECEIVED])
def test_what_the_agent_expects_is_what_the_api_answers(document: Schema, path: str, method: str,
                                                        model: type[BaseModel]) -> None:
    answer = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    agent, resolve_agent = _agent_schema(model, "validation")
    api = Resolver(document["components"]["schemas"], "#/components/schemas/")
    assert _compare_received(agent, answer, resolve_agent, api, model.__name__) == []


def test_the_agent_reads_the_jobs_the_api_enqueues() -> None:
    job = ReconcileJob(cluster_id="cls_1", org_id="org_1", region="nyc1", generation=3, enqueued_at=1_700_000_000)
    parsed = models.Job.model_validate_json(job.body())
    assert (parsed.cluster_id, parsed.org_id, parsed.region, parsed.generation, parsed.enqueued_at, parsed.kind) == (
        "cls_1", "org_1", "nyc1", 3, 1_700_000_000, "reconcile")


def test_the_comparison_catches_drift(document: Schema) -> None:
    """The checks above can fail: a field the API does not know, a looser bound and a missing promise are caught."""

    class Drifted(models.Outgoing):
        observed_generation: int
        phase: str
        ready_instances: int
        colour: str

    class Expecting(models.Wire):
        applied: bool
        shard: int

    api = Resolver(document["components"]["schemas"], "#/components/schemas/")
    report = document["paths"]["/v1/agent/clusters/{cluster_id}/status"]["post"]
    sent, resolve = _agent_schema(Drifted, "serialization")
    found = _compare_sent(sent, report["requestBody"]["content"]["application/json"]["schema"], resolve, api, "r")
    assert "r.colour: the API does not accept it" in found
    assert any(p.startswith("r.ready_instances: the API has maximum=") for p in found)
    received, resolve = _agent_schema(Expecting, "validation")
    answer = report["responses"]["200"]["content"]["application/json"]["schema"]
    assert _compare_received(received, answer, resolve, api, "o") == ["o.shard: the agent requires it, the API never sends it"]
