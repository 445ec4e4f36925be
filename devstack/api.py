"""Serve app.py with chalice's local server, configured only by the current environment.

`chalice local` overlays the stage's variables from .chalice/config.json; tests start the API with
their own settings instead (another table, short TTLs), through the same local gateway.

    python -m devstack.api --port 8001 [--clock-file PATH]

With `--clock-file`, the API's clock runs that many seconds (a number in the file, 0 when it is empty
or absent) ahead of the system clock: tests move time forward by writing it instead of sleeping.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import time
from pathlib import Path

from chalice.config import Config
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer


class _Handler(ChaliceRequestHandler):
    # chalice writes the headers and the body in two sends; with Nagle on, the body waits for the client's
    # delayed ACK of the headers, which adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def _generic_handle(self) -> None:
        # API Gateway puts the caller's address in the request context (`identity.sourceIp`, what per-address rate
        # limits count by); chalice's local gateway always says 127.0.0.1. Each connection has its own gateway.
        self.local_gateway.event_converter.LOCAL_SOURCE_IP = self.client_address[0]
        super()._generic_handle()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--clock-file", type=Path, help="a file holding the clock's offset in seconds")
    args = parser.parse_args()
    import app
    from chalicelib import clock

    if args.clock_file is not None:
        clock.use(offset_clock(args.clock_file))

    # As chalice's create_local_server does: keep `current_request` per thread, or concurrent requests read
    # each other's body and headers (the Authorization header included).
    CustomLocalChalice.__bases__ = (LocalChalice, type(app.app))
    app.app.__class__ = CustomLocalChalice
    config = Config.create(chalice_app=app.app, app_name="orochi-control-plane")
    server = LocalDevServer(app.app, config, args.host, args.port, handler_cls=_Handler)
    server.serve_forever()


def offset_clock(path: Path) -> Callable[[], float]:
    """The system clock plus the offset in seconds that `path` holds (read on every call)."""

    def offset_time() -> float:
        try:
            offset = float(path.read_text() or 0)
        except FileNotFoundError:
            offset = 0.0
        return time.time() + offset

    return offset_time


if __name__ == "__main__":
    main()
