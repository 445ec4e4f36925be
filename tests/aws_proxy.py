"""A proxy in front of moto for tests that need AWS to misbehave: it forwards every request, except those its
`intercept` answers itself (a throttling error) or swallows (a call that never returns)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """What the proxy answers instead of moto; `body` None: it answers nothing and drops the connection."""

    status: int
    body: bytes | None


# The request's X-Amz-Target (e.g. "DynamoDB_20120810.Query") and body; None forwards it.
Intercept = Callable[[str, bytes], Answer | None]


class AwsProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, intercept: Intercept) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream)
        self.intercept = intercept

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def aws_proxy(upstream: str, intercept: Intercept) -> Iterator[AwsProxy]:
    server = AwsProxy(upstream, intercept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Forward(BaseHTTPRequestHandler):
    server: AwsProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        own = self.server.intercept(self.headers.get("X-Amz-Target", ""), body)
        if own is not None:
            if own.body is None:
                self.close_connection = True
                return
            self._send(own.status, [("Content-Type", "application/x-amz-json-1.0")], own.body)
            return
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request("POST", self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        kept = [(name, value) for name, value in answer.getheaders()
                if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date")]
        self._send(answer.status, kept, payload)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST
