"""Orochi DB control plane: wiring only."""

import gc

# Building the routes' pydantic models allocates heavily; collecting during the import only slows the
# cold start (see docs/benchmarks.md). Everything built here lives as long as the process, so it is frozen.
gc.disable()

from typing import Any

from chalice.app import Chalice, Rate

from chalicelib import agents, auth, autoscaler, cors, lifecycle, logs, orgs, telemetry, web
from chalicelib.routes import ROUTERS
from chalicelib.settings import get_settings
from chalicelib.store import table

settings = get_settings()
logs.configure(settings.log_level)
table.configure(table_name=settings.table_name)

app = Chalice(app_name="orochi-control-plane")
web.register_authenticator("user", auth.authenticate)
web.register_authenticator("agent", agents.authenticate)
web.register_authorizer(orgs.authorize)
for router in ROUTERS:
    app.register_blueprint(router.blueprint)
cors.install(app)
app.register_middleware(web.envelope, "http")
gc.freeze()
gc.enable()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reap(event: Any) -> None:
    lifecycle.sweep(settings)
    telemetry.agent_heartbeats(settings)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="autoscaler")
def autoscale(event: Any) -> None:
    autoscaler.tick(settings)
