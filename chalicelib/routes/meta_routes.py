from __future__ import annotations

import functools
from typing import Any

from chalicelib import fleet
from chalicelib.shapes import Out
from chalicelib.web import Call, Reply, Router

router = Router(__name__, tag="meta")
VERSION = "1.0.0"


class Health(Out):
    status: str
    version: str


class OpenApiDocument(Out):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


@router.route("GET", "/health", auth="none", response=Health)
def health(call: Call[Any]) -> Health:
    """Liveness of the API"""
    return Health(status="ok", version=VERSION)


@router.route("GET", "/openapi.json", auth="none", response=OpenApiDocument)
def openapi_document(call: Call[Any]) -> Reply:
    """This API's OpenAPI 3.1 document"""
    return Reply(_document())


@router.route("GET", "/metrics", auth="none", errors=(401, 404), produces=fleet.PROMETHEUS_TEXT)
def fleet_metrics(call: Call[Any]) -> Reply:
    """The fleet in Prometheus text format, for the scrape token (METRICS_TOKEN) only"""
    fleet.check_scrape_token(call.settings, call.headers.get("authorization", ""))
    return Reply(fleet.exposition(call.settings), headers={"Cache-Control": "no-store"})


@functools.cache
def _document() -> dict[str, Any]:
    """Built on first request (not at import, to keep cold starts short), then kept: the routes and settings never change."""
    from chalicelib import openapi
    from chalicelib.routes import ROUTERS
    from chalicelib.settings import get_settings

    return openapi.document(ROUTERS, version=VERSION, settings=get_settings())
