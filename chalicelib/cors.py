"""CORS for a list of allowed origins (chalice's own CORSConfig takes a single origin).

Every path gets an explicit OPTIONS route so API Gateway forwards preflights to the app; the
middleware answers them and adds the allow headers to every response whose Origin is listed, credentials
included (the browser session's refresh cookie, see chalicelib/session_cookie.py): always with that exact
origin, never `*`.
"""

from __future__ import annotations

from collections.abc import Callable

from chalice.app import Chalice, Response
from chalice.app import Request

from chalicelib.settings import Settings, get_settings

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-Match, X-Orochi-Session, X-Request-ID"
EXPOSED_HEADERS = "ETag, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, X-Request-ID"
PREFLIGHT_MAX_AGE = "600"


def install(app: Chalice) -> None:
    """Add OPTIONS to every route registered so far and the CORS middleware (call after the blueprints)."""
    for path, methods in list(app.routes.items()):
        if "OPTIONS" not in methods:
            app.route(path, methods=["OPTIONS"], content_types=list({ct for m in methods.values() for ct in m.content_types}))(
                _preflight(", ".join(sorted([*methods, "OPTIONS"])))
            )
    app.register_middleware(_cors, "http")


def _preflight(allowed_methods: str) -> Callable[..., Response]:
    def preflight(**_params: str) -> Response:
        return Response(body="", status_code=204, headers={"Access-Control-Allow-Methods": allowed_methods})

    return preflight


def listed_origin(settings: Settings, origin: str) -> str | None:
    """The `Origin` header's origin when ALLOWED_ORIGINS lists it; None otherwise (absent included)."""
    origin = origin.rstrip("/")
    return origin if origin and origin in settings.allowed_origins else None


def _cors(event: Request, get_response: Callable[[Request], Response]) -> Response:
    response = get_response(event)
    origin = listed_origin(get_settings(), event.headers.get("origin", ""))
    vary = response.headers.get("Vary")
    response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if event.method == "OPTIONS":
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    elif event.method == "OPTIONS":
        response.headers.pop("Access-Control-Allow-Methods", None)
    return response
