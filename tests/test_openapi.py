"""The OpenAPI document the API serves: valid OpenAPI 3.1, complete, and generated from the pydantic models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pydantic import BaseModel

from chalicelib.catalog import SIZES, document_bounds
from chalicelib.routes import ROUTERS
from chalicelib.settings import Settings
from chalicelib.shapes import HEADER_PATTERNS
from chalicelib.web import Operation
from conftest import ROOT, Account, Stack, cluster_body

OPERATIONS = [op for router in ROUTERS for op in router.operations]
SCHEMAS = "#/components/schemas/"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = stack.call("GET", "/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def _label(op: Operation) -> str:
    return f"{op.method} {op.path}"


def _spec(document: dict[str, Any], op: Operation) -> dict[str, Any]:
    return document["paths"][op.path][op.method.lower()]


def _component(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    assert set(ref) == {"$ref"} and ref["$ref"].startswith(SCHEMAS), ref
    return document["components"]["schemas"][ref["$ref"].removeprefix(SCHEMAS)]


def _model_schema(model: type[BaseModel], mode: str, settings: Settings) -> dict[str, Any]:
    """The model's own JSON Schema, with the catalog of `settings` filled in as the API does."""
    schema = model.model_json_schema(mode=mode, ref_template=SCHEMAS + "{model}")  # type: ignore[arg-type]
    schema.pop("$defs", None)
    return dict(document_bounds(schema, settings))


def _validator(document: dict[str, Any], ref: dict[str, Any]) -> OAS31Validator:
    return OAS31Validator({**ref, "components": document["components"]})


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)  # raises on the first problem


def test_document_lists_exactly_the_routes_the_app_serves(stack: Stack, document: dict[str, Any]) -> None:
    """Compared with chalice's own route table (not only the routers), so a route added any other way shows up."""
    table = "import json, app; print(json.dumps({path: sorted(methods) for path, methods in app.app.routes.items()}))"
    served = subprocess.run([sys.executable, "-c", table], cwd=ROOT, env=stack.env, capture_output=True, text=True,
                            check=True, timeout=180)
    app_routes = {(method, path) for path, methods in json.loads(served.stdout).items() for method in methods
                  if method != "OPTIONS"}
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item
                  if method in METHODS}
    declared = {(op.method, op.path) for op in OPERATIONS}
    assert documented == app_routes
    assert declared == app_routes
    assert len(declared) == len(OPERATIONS), "an operation is declared twice"


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in document["paths"].values() for method, op in item.items() if method in METHODS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
def test_path_parameters_are_documented(document: dict[str, Any], op: Operation) -> None:
    documented = [p["name"] for p in _spec(document, op).get("parameters", []) if p["in"] == "path"]
    assert documented == re.findall(r"{(\w+)}", op.path)


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.body is not None], ids=_label)
def test_request_body_is_the_pydantic_models_schema(stack: Stack, document: dict[str, Any], op: Operation) -> None:
    assert op.body is not None
    body = _spec(document, op)["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["application/json"]
    ref = body["content"]["application/json"]["schema"]
    assert ref == {"$ref": SCHEMAS + op.body.__name__}
    assert _component(document, ref) == _model_schema(op.body, "validation", Settings.from_env(stack.env))


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.body is None], ids=_label)
def test_operations_without_a_body_model_document_none(document: dict[str, Any], op: Operation) -> None:
    assert "requestBody" not in _spec(document, op)


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
def test_success_response_is_the_pydantic_models_schema(stack: Stack, document: dict[str, Any], op: Operation) -> None:
    success = _spec(document, op)["responses"][str(op.status)]
    assert success["headers"]["X-Request-ID"]["required"] is True
    if op.response is None:
        expected = {op.produces.split(";")[0]: {"schema": {"type": "string"}}} if op.produces else None
        assert success.get("content") == expected
        return
    ref = success["content"]["application/json"]["schema"]
    assert _component(document, ref) == _model_schema(op.response, "serialization", Settings.from_env(stack.env))


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
def test_error_responses_reference_the_error_shape(document: dict[str, Any], op: Operation) -> None:
    responses = _spec(document, op)["responses"]
    errors = {int(code) for code in responses if int(code) >= 400}
    expected = {400, 413, 503, *op.errors} | ({401} if op.auth != "none" else set()) | ({429} if op.rate_limit != "none" else set())
    assert errors == expected
    for code in errors:
        assert responses[str(code)]["content"] == {"application/json": {"schema": {"$ref": SCHEMAS + "Error"}}}
        assert responses[str(code)]["headers"]["X-Request-ID"]["required"] is True
    for code in errors & {429, 503}:
        assert "Retry-After" in responses[str(code)]["headers"]


def test_error_shape_is_code_message_request_id_and_optional_details(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    body = _component(document, error["properties"]["error"])
    assert set(body["required"]) == {"code", "message", "request_id"}
    assert set(body["properties"]) == {"code", "message", "request_id", "details"}


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
def test_security_matches_the_routes_authentication(document: dict[str, Any], op: Operation) -> None:
    expected = {"user": [{"bearerAuth": []}], "agent": [{"agentToken": []}], "none": []}[op.auth]
    assert _spec(document, op)["security"] == expected
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["agentToken"]["scheme"] == "bearer"


def test_real_error_answers_match_the_documented_error_shape(
    stack: Stack, document: dict[str, Any], owner: Account,
) -> None:
    validator = _validator(document, {"$ref": SCHEMAS + "Error"})
    answers = [
        stack.call("GET", "/v1/auth/me"),  # 401
        stack.call("POST", "/v1/auth/login", data="{not json", headers={"Content-Type": "application/json"}),  # 400
        stack.call("POST", "/v1/auth/register", json={"email": "nope", "password": "x"}),  # 400 with details
        stack.call("GET", "/v1/orgs/org_doesnotexist", token=owner.access_token),  # 404
        stack.call("PUT", "/v1/auth/me", token=owner.access_token),  # 405, answered by chalice and reshaped
    ]
    assert [a.status_code for a in answers] == [401, 400, 400, 404, 405]
    for answer in answers:
        body = answer.json()
        validator.validate(body)
        assert body["error"]["request_id"] == answer.headers["X-Request-ID"]
    assert answers[2].json()["error"]["details"]


def test_served_responses_match_their_documented_schemas(
    stack: Stack, document: dict[str, Any], owner: Account,
) -> None:
    for method, path, status in [("GET", "/health", 200), ("GET", "/openapi.json", 200), ("GET", "/v1/auth/me", 200),
                                 ("GET", "/v1/orgs", 200), ("GET", f"/v1/orgs/{owner.org_id}", 200)]:
        answer = stack.call(method, path, token=owner.access_token)
        assert answer.status_code == status, answer.text
        template = path.replace(owner.org_id, "{org_id}")
        documented = document["paths"][template][method.lower()]["responses"][str(status)]
        ref = documented["content"]["application/json"]["schema"]
        _validator(document, ref).validate(answer.json())


CATALOG = {"REGIONS": "ams3:Amsterdam 3,tor1:Toronto 1", "POSTGRES_IMAGES": "17=ghcr.io/cloudnative-pg/postgresql:17.6",
           "STORAGE_GB_MIN": "20", "STORAGE_GB_MAX": "500"}


def _catalog_fields(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = document["components"]["schemas"]
    create, scale = schemas["ClusterCreate"]["properties"], schemas["ScaleRequest"]["properties"]
    storage = schemas["StorageAutoscaling"]["properties"]
    return {"region": create["region"], "postgres_version": create["postgres_version"], "size": create["size"],
            "storage_gb": create["storage_gb"], "scale.storage_gb": scale["storage_gb"]["anyOf"][0],
            "scale.size": scale["size"]["anyOf"][0], "storage.max_gb": storage["max_gb"]["anyOf"][0]}


def test_catalog_bound_fields_state_the_catalog_the_api_runs_with(stack_factory: Any) -> None:
    stack = stack_factory(**CATALOG)
    fields = _catalog_fields(stack.call("GET", "/openapi.json").json())
    assert fields["region"]["enum"] == ["ams3", "tor1"]
    assert fields["postgres_version"]["enum"] == ["17"]
    assert fields["size"]["enum"] == fields["scale.size"]["enum"] == [size.slug for size in SIZES]
    for name in ("storage_gb", "scale.storage_gb", "storage.max_gb"):
        assert (fields[name]["minimum"], fields[name]["maximum"]) == (20, 500), name
    catalog = stack.call("GET", "/v1/catalog").json()
    assert [r["slug"] for r in catalog["regions"]] == fields["region"]["enum"]
    assert catalog["storage_gb"] == {"min": 20, "max": 500}


@pytest.mark.parametrize(("field", "value", "accepted"), [
    ("region", "tor1", True), ("region", "nyc1", False), ("postgres_version", "16", False),
    ("storage_gb", 20, True), ("storage_gb", 19, False), ("storage_gb", 500, True), ("storage_gb", 501, False),
    ("autoscaling", {"min_instances": 1, "max_instances": 2, "storage": {"max_gb": 501}}, False),
    ("autoscaling", {"min_instances": 1, "max_instances": 2, "storage": {"max_gb": 500}}, True),
    ("autoscaling", {"min_instances": 1, "max_instances": 2, "storage": {"threshold_percent": 80}}, False),
    ("autoscaling", {"min_instances": 2, "max_instances": 1}, False),
])
def test_the_api_accepts_what_the_documented_catalog_states(stack_factory: Any, field: str, value: Any,
                                                             accepted: bool) -> None:
    stack = stack_factory(**CATALOG)
    owner = stack.register()
    body = cluster_body(**{"region": "tor1", "postgres_version": "17", "storage_gb": 30, field: value})
    response = stack.post_cluster(owner, body)
    assert response.status_code == (202 if accepted else 400), response.text
    document = stack.call("GET", "/openapi.json").json()
    valid = _validator(document, {"$ref": SCHEMAS + "ClusterCreate"}).is_valid(body)
    assert valid is accepted


def test_cross_field_rules_are_stated_in_the_document(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, valid, invalid in [
        ("ScaleRequest", {"size": "db-s-2vcpu-4gb"}, {"instances": None, "size": None}),
        ("ClusterPatch", {"name": None}, {}),
        ("AutoscalingPolicy", {"min_instances": 3, "max_instances": 3}, {"min_instances": 4, "max_instances": 3}),
        ("StorageAutoscaling", {"enabled": False}, {"threshold_percent": 80}),
        ("RegisterRequest", {"email": "a@example.com", "password": "long enough", "name": "A", "invitation_token": "t"},
         {"email": "a@example.com", "password": "long enough", "name": "A"}),
    ]:
        validator = _validator(document, {"$ref": SCHEMAS + name})
        assert validator.is_valid(valid), name
        assert not validator.is_valid(invalid), name
    assert "anyOf" in schemas["AutoscalingPolicy"]


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.query is not None], ids=_label)
def test_query_parameters_are_never_null(document: dict[str, Any], op: Operation) -> None:
    for parameter in _spec(document, op)["parameters"]:
        if parameter["in"] == "query":
            assert "anyOf" not in parameter["schema"] and parameter["schema"].get("type") != "null", parameter
            assert "default" not in parameter["schema"] or parameter["schema"]["default"] is not None


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.headers], ids=_label)
def test_request_headers_state_the_pattern_the_api_checks(document: dict[str, Any], op: Operation) -> None:
    headers = {p["name"]: p["schema"] for p in _spec(document, op)["parameters"] if p["in"] == "header"}
    assert headers == {name: {"type": "string", "pattern": HEADER_PATTERNS[name]} for name in op.headers}


COOKIE_SESSION_ROUTES = [("post", "/v1/auth/register", "201"), ("post", "/v1/auth/login", "200"),
                         ("post", "/v1/auth/refresh", "200")]


@pytest.mark.parametrize(("method", "path", "status"), COOKIE_SESSION_ROUTES)
def test_cookie_session_header_and_cookie_are_documented(document: dict[str, Any], method: str, path: str,
                                                         status: str) -> None:
    spec = document["paths"][path][method]
    header = {p["name"]: p for p in spec["parameters"] if p["in"] == "header"}["X-Orochi-Session"]
    assert header["required"] is False and header["schema"] == {"type": "string", "pattern": "^cookie$"}
    for words in ("orochi_refresh", "HttpOnly; Secure; SameSite=Strict", "Max-Age", "credentials: 'include'",
                  "origin_not_allowed"):
        assert words in header["description"], words
    set_cookie = spec["responses"][status]["headers"]["Set-Cookie"]
    assert set_cookie["required"] is False and "orochi_refresh=<refresh token>; Path=/v1/auth" in set_cookie["description"]


def test_refresh_token_is_optional_in_token_responses_and_absent_for_cookie_sessions(document: dict[str, Any]) -> None:
    token_response = document["components"]["schemas"]["TokenResponse"]
    assert "refresh_token" in token_response["properties"] and "refresh_token" not in token_response["required"]
    assert {"access_token", "token_type", "expires_in", "user"} >= set(token_response["required"]) >= {"access_token"}
    assert "X-Orochi-Session: cookie" in token_response["properties"]["refresh_token"]["description"]


def test_refresh_documents_the_cookie_flow_and_its_403(document: dict[str, Any]) -> None:
    refresh = document["paths"]["/v1/auth/refresh"]["post"]
    assert "X-Orochi-Session" in refresh["requestBody"]["description"] and refresh["requestBody"]["required"] is True
    assert "orochi_refresh" in refresh["description"]
    forbidden = refresh["responses"]["403"]
    assert forbidden["content"] == {"application/json": {"schema": {"$ref": SCHEMAS + "Error"}}}
    assert "origin_not_allowed" in forbidden["description"] and "nothing was rotated" in forbidden["description"]
    clears = document["paths"]["/v1/auth/logout"]["post"]["responses"]["204"]["headers"]["Set-Cookie"]
    assert "orochi_refresh=; Path=/v1/auth; Max-Age=0" in clears["description"]


def test_cookie_session_answers_match_the_documented_schemas(stack: Stack, document: dict[str, Any],
                                                             owner: Account) -> None:
    session = {"X-Orochi-Session": "cookie", "Origin": "http://localhost:5173"}
    login = stack.call("POST", "/v1/auth/login", json={"email": owner.email, "password": owner.password},
                       headers=session)
    assert login.status_code == 200 and "refresh_token" not in login.json(), login.text
    _validator(document, {"$ref": SCHEMAS + "TokenResponse"}).validate(login.json())
    refused = stack.call("POST", "/v1/auth/refresh", json={}, headers={"X-Orochi-Session": "cookie"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed", refused.text
    _validator(document, {"$ref": SCHEMAS + "Error"}).validate(refused.json())
