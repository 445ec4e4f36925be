"""The OpenAPI 3.1 document, generated from the declared routes and their pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib.catalog import document_bounds
from chalicelib.ratelimits import WINDOW
from chalicelib.settings import Settings
from chalicelib.shapes import HEADER_DESCRIPTIONS, HEADER_PATTERNS, Out
from chalicelib.web import Operation, Router

_PATH_PARAM = re.compile(r"{(\w+)}")
_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Invalid request", 401: "Not authenticated",
    403: "Not allowed for this role", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
    412: "Precondition failed", 413: "Body too large", 422: "Unprocessable", 429: "Too many requests",
    503: "Over capacity right now (the database throttled the request): retry after Retry-After seconds",
}
_SECURITY = {"user": "bearerAuth", "agent": "agentToken"}
# What a rate-limited route's answers carry (chalicelib/ratelimits.py): always on a success and on its 429, and on
# any other answer once the request was counted (after authentication; a 401 or 413 comes before).
_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": ({"type": "integer", "minimum": 1}, "requests allowed in the caller's one-minute window"),
    "RateLimit-Remaining": ({"type": "integer", "minimum": 0}, "requests left in the window"),
    "RateLimit-Reset": ({"type": "integer", "minimum": 1, "maximum": WINDOW}, "seconds until the window resets"),
}


class ErrorBody(Out):
    code: str
    message: str
    request_id: str
    details: list[dict[str, Any]] | None = None


class Error(Out):
    error: ErrorBody


def document(routers: list[Router], *, version: str, settings: Settings) -> dict[str, Any]:
    """The document of `routers` as an API running with `settings` validates: the catalog's values and bounds
    (regions, versions, sizes, storage) are stated from them."""
    operations = [op for router in routers for op in router.operations]
    models: set[type[BaseModel]] = {Error, *(m for op in operations for m in (op.body, op.response) if m is not None)}
    refs, schemas = _schemas(models)
    schemas = document_bounds(schemas, settings)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Orochi DB control plane", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "agentToken": {"type": "http", "scheme": "bearer", "description": "a region's agent token"},
            },
        },
    }


def _schemas(models: set[type[BaseModel]]) -> tuple[dict[Any, Any], dict[str, Any]]:
    ordered = sorted(models, key=lambda m: m.__name__)
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if not issubclass(m, Out) else "serialization") for m in ordered
    ]
    refs, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    return {model: refs[(model, mode)] for model, mode in keys}, defs.get("$defs", {})


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": op.handler.__name__,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [*_path_parameters(op.path), *_query_parameters(op.query), *_header_parameters(op.headers)],
        "responses": _responses(op, refs),
    }
    if op.description:
        spec["description"] = op.description
    if op.body is not None:
        spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[op.body]}}}
        if op.body_optional_with is not None:
            spec["requestBody"]["description"] = f"With the `{op.body_optional_with}` header it may be empty or `{{}}`."
    spec["security"] = [{_SECURITY[op.auth]: []}] if op.auth in _SECURITY else []
    if op.permission is not None:
        spec["x-permission"] = op.permission
    return spec


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PATH_PARAM.findall(path)]


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": _present(prop)}
            for name, prop in schema["properties"].items()]


def _present(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema when it is sent: an optional one's `None` means absent, never a value."""
    branches = [branch for branch in prop.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **branches[0]}
    return {k: v for k, v in prop.items() if not (k == "default" and v is None)}


def _header_parameters(headers: tuple[str, ...]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in headers:
        parameter = {"name": name, "in": "header", "required": False,
                     "schema": {"type": "string", "pattern": HEADER_PATTERNS[name]}}
        if name in HEADER_DESCRIPTIONS:
            parameter["description"] = HEADER_DESCRIPTIONS[name]
        parameters.append(parameter)
    return parameters


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    request_id = {"X-Request-ID": {"required": True, "schema": {"type": "string", "minLength": 1},
                                   "description": "the request id"}}
    success: dict[str, Any] = {"description": _STATUS_TEXT[op.status], "headers": request_id}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": refs[op.response]}}
    elif op.produces is not None:
        success["content"] = {op.produces.split(";")[0]: {"schema": {"type": "string"}}}
    if op.rate_limit != "none":
        success["headers"] = {**request_id, **_rate_limit_headers(required=True)}
    success["headers"] = {**success["headers"], **{
        name: {"required": False, "schema": {"type": "string"}, "description": description}
        for name, description in op.response_headers.items()}}
    responses = {str(op.status): success}
    codes = {400, 413, 503} | ({401} if op.auth != "none" else set()) | ({429} if op.rate_limit != "none" else set())
    for code in sorted(codes | set(op.errors)):
        headers = {**request_id, **({"Retry-After": {"schema": {"type": "string"}}} if code in (429, 503) else {})}
        if op.rate_limit != "none":
            headers.update(_rate_limit_headers(required=code == 429))
        responses[str(code)] = {
            "description": op.error_descriptions.get(code, _STATUS_TEXT[code]), "headers": headers,
            "content": {"application/json": {"schema": refs[Error]}},
        }
    return responses


def _rate_limit_headers(*, required: bool) -> dict[str, Any]:
    return {name: {"required": required, "schema": schema, "description": description}
            for name, (schema, description) in _RATE_LIMIT_HEADERS.items()}
