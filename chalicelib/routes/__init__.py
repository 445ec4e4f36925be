"""HTTP routes, one router per concept: parse, authorize, one domain call, return."""

from chalicelib.routes import account_routes, agent_routes, cluster_routes, meta_routes, org_routes
from chalicelib.web import Router

ROUTERS: list[Router] = [
    meta_routes.router, account_routes.router, org_routes.router, cluster_routes.router, agent_routes.router,
]
