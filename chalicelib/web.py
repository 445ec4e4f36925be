"""The HTTP edge: declared routes, body and query parsing, authentication, the error shape.

A route is declared once with its pydantic models; the same declaration drives request parsing,
the response shape and the OpenAPI document.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from chalice.app import Blueprint, Response
from chalice.app import Request
from pydantic import BaseModel, ValidationError

from chalicelib import errors, idempotency, ratelimits, telemetry
from chalicelib.principal import Principal
from chalicelib.settings import Settings, get_settings
from chalicelib.shapes import HEADER_PATTERNS
from chalicelib.store.table import counting_calls, request_scope, throttled

if TYPE_CHECKING:
    from chalicelib.store.org_records import Member

log = logging.getLogger("orochi.web")

MAX_BODY_BYTES = 1024 * 1024
# DynamoDB over its capacity after the client's retries: the caller may retry in a moment (RFC 9110 15.6.4).
THROTTLED = "the service is over its capacity right now; retry after the time in Retry-After"
THROTTLED_RETRY_AFTER = 2
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EMPTY_BODY = re.compile(rb"[ \t\r\n]*(?:\{[ \t\r\n]*\})?[ \t\r\n]*")  # nothing, or `{}`, in JSON whitespace
_local = threading.local()

Auth = Literal["user", "agent", "none"]
# Whose requests a route counts (see chalicelib/ratelimits.py): the authenticated principal's, the client
# address's (login and registration, before any principal exists), or none.
RateLimit = Literal["principal", "address", "none"]
B = TypeVar("B", bound=BaseModel)


@dataclass
class Call(Generic[B]):
    """One parsed, authenticated request as a route handler sees it."""

    settings: Settings
    params: dict[str, str]
    body: B
    query: Any
    principal: Principal | None
    headers: dict[str, str]
    source_ip: str
    membership: Member | None = None

    @property
    def user(self) -> Principal:
        assert self.principal is not None and self.principal.kind == "user"
        return self.principal

    @property
    def member(self) -> Member:
        """The caller's membership of the organization in the path (routes that declare a permission)."""
        assert self.membership is not None
        return self.membership

    @property
    def agent(self) -> Principal:
        assert self.principal is not None and self.principal.kind == "agent"
        return self.principal


@dataclass
class Reply:
    """A handler's answer when it needs a status or headers other than the route's defaults.

    A `str` body is sent as it is, in the content type the route `produces`.
    """

    body: BaseModel | dict[str, Any] | str | None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Callable[[Call[Any]], Any]
    summary: str
    description: str
    tag: str
    status: int
    auth: Auth
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    errors: tuple[int, ...]
    headers: tuple[str, ...]
    idempotent: bool
    permission: str | None
    rate_limit: RateLimit
    produces: str | None = None  # the content type of a success that is not JSON (its body is text)
    # A declared request header whose presence makes the body optional: an empty body or `{}` is then no body.
    body_optional_with: str | None = None
    # Response headers the success answer may carry, and what each means (for the document).
    response_headers: Mapping[str, str] = field(default_factory=dict)
    # What an error status means on this route, where the generic text would mislead (for the document).
    error_descriptions: Mapping[int, str] = field(default_factory=dict)


Authenticator = Callable[[Settings, str, dict[str, str]], Principal]
Authorizer = Callable[[Principal, str, str], "Member"]
_authenticators: dict[str, Authenticator] = {}
_authorizers: list[Authorizer] = []


def register_authenticator(kind: Literal["user", "agent"], authenticator: Authenticator) -> None:
    """`authenticator(settings, bearer_token, path_params)` returns the principal or raises Unauthorized.

    It may read ahead, in the same round trip as its own lookup, the items the path names.
    """
    _authenticators[kind] = authenticator


def register_authorizer(authorizer: Authorizer) -> None:
    """`authorizer(principal, org_id, permission)` returns the caller's membership (handed to the route as
    `call.member`) or raises NotFound / Forbidden. Routes under /v1/orgs/{org_id} name their permission."""
    _authorizers[:] = [authorizer]


class Router:
    """A chalice Blueprint whose routes are declared with their models (one router per concept)."""

    def __init__(self, name: str, *, tag: str) -> None:
        self.blueprint = Blueprint(name)
        self.tag = tag
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        auth: Auth = "user",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        headers: tuple[str, ...] = (),
        idempotent: bool = False,
        permission: str | None = None,
        rate_limit: RateLimit | None = None,
        produces: str | None = None,
        body_optional_with: str | None = None,
        response_headers: Mapping[str, str] | None = None,
        error_descriptions: Mapping[int, str] | None = None,
    ) -> Callable[[Callable[[Call[Any]], Any]], Callable[[Call[Any]], Any]]:
        """Declare a route. The handler's docstring is its summary (the first line) and description (the rest)."""
        assert body_optional_with is None or (body is not None and body_optional_with in headers)
        assert set(error_descriptions or {}) <= set(errors)

        def declare(handler: Callable[[Call[Any]], Any]) -> Callable[[Call[Any]], Any]:
            summary, _, description = inspect.cleandoc(handler.__doc__ or handler.__name__.replace("_", " ")).partition("\n")
            operation = Operation(
                method=method, path=path, handler=handler, tag=self.tag, status=status, auth=auth,
                summary=summary, description=description.strip(),
                body=body, query=query, response=response, errors=errors,
                headers=(*headers, "Idempotency-Key") if idempotent else headers, idempotent=idempotent,
                permission=permission, rate_limit=rate_limit or ("none" if auth == "none" else "principal"),
                produces=produces,
                body_optional_with=body_optional_with, response_headers=dict(response_headers or {}),
                error_descriptions=dict(error_descriptions or {}),
            )
            self.operations.append(operation)

            def view(**params: str) -> Response:
                return _serve(operation, self.blueprint.current_request, params)

            view.__name__ = handler.__name__
            self.blueprint.route(path, methods=[method], content_types=_ANY_CONTENT_TYPE)(view)
            return handler

        return declare


# Bodies are parsed from the raw bytes whatever the declared type, so every content type is accepted
# here and a non-JSON body gets the documented 400 rather than chalice's own 415.
_ANY_CONTENT_TYPE = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/octet-stream", "*/*"]


def _serve(operation: Operation, request: Request, params: dict[str, str]) -> Response:
    with request_scope():
        return _serve_in_scope(operation, request, params)


def _serve_in_scope(operation: Operation, request: Request, params: dict[str, str]) -> Response:
    quota: ratelimits.Quota | None = None
    try:
        settings = get_settings()
        principal = _authenticate(operation.auth, settings, request, params)
        if principal is not None and principal.kind == "agent":
            _local.region = principal.region
        source_ip = (request.context.get("identity") or {}).get("sourceIp", "")
        if operation.rate_limit != "none":
            quota = ratelimits.take(settings, principal=principal if operation.rate_limit == "principal" else None,
                                    address=source_ip)
            quota.enforce()
        headers = {k.lower(): v for k, v in request.headers.items()}
        optional = operation.body_optional_with is not None and operation.body_optional_with.lower() in headers
        call: Call[Any] = Call(
            settings=settings,
            params=params,
            body=_parse_body(operation.body, request, settings, optional=optional),
            query=_parse_query(operation.query, request),
            principal=principal,
            headers=headers,
            source_ip=source_ip,
        )
        _check_headers(operation.headers, call.headers)
        if operation.permission is not None and principal is not None:
            call.membership = _authorizers[0](principal, params["org_id"], operation.permission)
        key = call.headers.get(idempotency.HEADER)
        if not (operation.idempotent and key is not None and principal is not None):
            response = _response(_answer(operation, call))
        else:
            response = _response(idempotency.run(
                settings, scope=f"{principal.kind}:{principal.id}", key=key,
                request_fingerprint=idempotency.fingerprint(request.method, request.path, _raw_body(request)),
                execute=lambda: _answer(operation, call),
            ))
    except errors.AppError as e:
        response = error_response(e)
    except Exception as e:
        if not throttled(e):
            raise
        log.warning("dynamodb throttled the request", extra={"route": operation.path})
        response = error_response(errors.Unavailable(THROTTLED, retry_after=THROTTLED_RETRY_AFTER))
    if quota is not None:
        response.headers.update(quota.headers)
    return response


def _answer(operation: Operation, call: Call[Any]) -> idempotency.Answer:
    result = operation.handler(call)
    reply = result if isinstance(result, Reply) else Reply(result)
    headers = {"Content-Type": operation.produces, **reply.headers} if operation.produces else reply.headers
    return idempotency.Answer(status=reply.status or operation.status, body=_dump(reply.body), headers=headers)


def _raw_body(request: Request) -> bytes:
    body = request.raw_body or b""
    return body.encode() if isinstance(body, str) else body


def _response(answer: idempotency.Answer) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", **answer.headers}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=answer.body, status_code=answer.status, headers=headers)


def _authenticate(auth: Auth, settings: Settings, request: Request, params: dict[str, str]) -> Principal | None:
    if auth == "none":
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("a bearer token is required")
    return _authenticators[auth](settings, token.strip(), params)


def _check_headers(declared: tuple[str, ...], headers: dict[str, str]) -> None:
    """The declared request headers that were sent match what the document states (shapes.HEADER_PATTERNS)."""
    for name in declared:
        value = headers.get(name.lower())
        if value is not None and not re.fullmatch(HEADER_PATTERNS[name], value):
            raise errors.Invalid(f"the {name} header is invalid",
                                 details=[{"field": name, "message": f"must match {HEADER_PATTERNS[name]}"}])


def _parse_body(model: type[BaseModel] | None, request: Request, settings: Settings, *,
                optional: bool = False) -> BaseModel | None:
    """The body as `model` states it; None for no model, or when `optional` and the body is empty or `{}`."""
    if model is None:
        return None
    raw = _raw_body(request)
    if optional and _EMPTY_BODY.fullmatch(raw):
        return None
    if not raw.strip():
        raise errors.Invalid("a JSON body is required", details=[{"field": "body", "message": "missing"}])
    try:
        return model.model_validate_json(raw, context={"settings": settings})
    except ValidationError as e:
        raise errors.Invalid("the request body is invalid", details=validation_details(e)) from None


def _parse_query(model: type[BaseModel] | None, request: Request) -> BaseModel | None:
    if model is None:
        return None
    try:
        return model.model_validate(dict(request.query_params or {}))
    except ValidationError as e:
        raise errors.Invalid("the query string is invalid", details=validation_details(e)) from None


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    details = []
    for problem in error.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in problem["loc"]) or "body"
        details.append({"field": location, "message": problem["msg"], "type": problem["type"]})
    return details


def _dump(body: BaseModel | dict[str, Any] | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    payload = body.model_dump(mode="json", exclude_none=True) if isinstance(body, BaseModel) else body
    return json.dumps(payload, separators=(",", ":"))


def json_response(status: int, body: BaseModel | dict[str, Any] | None, headers: dict[str, str] | None = None) -> Response:
    return Response(body=_dump(body), status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def error_response(error: errors.AppError) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message, "request_id": current_request_id()}
    if error.details:
        body["details"] = error.details
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return json_response(error.status, {"error": body}, headers)


def current_request_id() -> str:
    return getattr(_local, "request_id", "")


def envelope(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Middleware around every request: request id, body limit, documented error shape, access log, EMF figures.

    The access log line and the figures name the route by its declared path (never the raw path, a query string,
    a header or a body): request id, method, route, status, latency, DynamoDB calls, the organization in the path
    and an agent's region.
    """
    started = time.perf_counter()
    supplied = event.headers.get("x-request-id", "")
    _local.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
    _local.region = None
    with counting_calls() as calls:
        if len(event.raw_body or b"") > MAX_BODY_BYTES:
            response = error_response(errors.PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes"))
        else:
            response = _normalize(get_response(event))
    response.headers["X-Request-ID"] = _local.request_id
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    route = str((event.context or {}).get("resourcePath") or "unmatched")
    fields: dict[str, Any] = {"request_id": _local.request_id, "method": event.method, "route": route,
                              "status": response.status_code, "latency_ms": latency_ms, "dynamodb_calls": calls.made}
    org_id = (event.uri_params or {}).get("org_id")
    if org_id is not None:
        fields["org_id"] = org_id
    if _local.region is not None:
        fields["region"] = _local.region
    log.info("request", extra=fields)
    telemetry.request(route=route, method=event.method, status=response.status_code, latency_ms=latency_ms,
                      dynamodb_calls=calls.made)
    return response


def _normalize(response: Response) -> Response:
    """Chalice answers some requests itself (unknown method, an unhandled exception): give those our shape."""
    body = response.body
    if not (isinstance(body, dict) and "Code" in body and "Message" in body):
        return response
    if response.status_code == 405:
        mapped = error_response(errors.MethodNotAllowed(str(body["Message"])))
        mapped.headers.update({k: v for k, v in response.headers.items() if k.lower() == "allow"})
        return mapped
    if response.status_code >= 500:
        return error_response(errors.AppError("an internal error occurred"))
    return error_response(errors.Invalid(str(body["Message"])))
