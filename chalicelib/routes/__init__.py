"""HTTP routes, one router per concept: parse, authorize, one domain call, return."""

from chalicelib.routes import agent, auth, clusters, meta, orgs
from chalicelib.web import Router

ROUTERS: list[Router] = [meta.router, auth.router, orgs.router, clusters.router, agent.router]
