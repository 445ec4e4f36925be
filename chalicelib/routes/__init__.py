"""HTTP routes, one router per concept: parse, authorize, one domain call, return."""

from chalicelib.routes import auth, meta, orgs
from chalicelib.web import Router

ROUTERS: list[Router] = [meta.router, auth.router, orgs.router]
