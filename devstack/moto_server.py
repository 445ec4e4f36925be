"""moto's server for DynamoDB and SQS on loopback, with DynamoDB requests applied one at a time.

DynamoDB applies each conditional write and transaction atomically; moto's threaded server checks a
condition and writes in separate steps, so two concurrent requests can both pass a condition.
Serializing DynamoDB requests restores DynamoDB's guarantee. SQS stays concurrent, so long polls
never hold up the API.

    python -m devstack.moto_server --port 5000
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialize_dynamodb(app: WsgiApp) -> WsgiApp:
    lock = threading.Lock()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app = serialize_dynamodb(DomainDispatcherApplication(create_backend_app))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per SQS long poll is noise
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
