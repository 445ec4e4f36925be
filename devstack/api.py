"""Serve app.py with chalice's local server, configured only by the current environment.

`chalice local` overlays the stage's variables from .chalice/config.json; tests start the API with
their own settings instead (another table, short TTLs), through the same local gateway.

    python -m devstack.api --port 8001
"""

from __future__ import annotations

import argparse

from chalice.config import Config
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer


class _Handler(ChaliceRequestHandler):
    # chalice writes the headers and the body in two sends; with Nagle on, the body waits for the client's
    # delayed ACK of the headers, which adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    import app

    # As chalice's create_local_server does: keep `current_request` per thread, or concurrent requests read
    # each other's body and headers (the Authorization header included).
    CustomLocalChalice.__bases__ = (LocalChalice, type(app.app))
    app.app.__class__ = CustomLocalChalice
    config = Config.create(chalice_app=app.app, app_name="orochi-control-plane")
    server = LocalDevServer(app.app, config, args.host, args.port, handler_cls=_Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
