"""Orochi DB control plane: wiring only."""

from chalice import Chalice

from chalicelib import auth, cors, logs, web
from chalicelib.routes import ROUTERS
from chalicelib.settings import get_settings
from chalicelib.store import base as store

settings = get_settings()
logs.configure(settings.log_level)
store.configure(table_name=settings.table_name)

app = Chalice(app_name="orochi-control-plane")
web.register_authenticator("user", auth.authenticate)
for router in ROUTERS:
    app.register_blueprint(router.blueprint)
cors.install(app)
app.register_middleware(web.envelope, "http")
