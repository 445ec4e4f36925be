"""Reading a PostgreSQL instance's metrics exporter (CNPG's, plain HTTP on the pod's port 9187).

The agent reaches the pods directly (the instances' NetworkPolicy admits the agent's namespace on 9187) rather
than through the API server's pod proxy: that would need `pods/proxy` on every namespace, a grant that reaches
any port of any pod, and would put every scrape through the API server. Standard library HTTP: only the API
client imports urllib3.
"""

from __future__ import annotations

import http.client

MAX_BYTES = 8 * 2**20


class ScrapeError(Exception):
    """The exporter did not answer, or not with metrics."""


def scrape(host: str, port: int, *, timeout: float = 5.0, path: str = "/metrics") -> str:
    """The exporter's text (Prometheus text format)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "text/plain; version=0.0.4"})
        response = connection.getresponse()
        body = response.read(MAX_BYTES + 1)
    except (OSError, http.client.HTTPException) as e:
        raise ScrapeError(f"{host}:{port}: {type(e).__name__}: {e}") from e
    finally:
        connection.close()
    if response.status != 200:
        raise ScrapeError(f"{host}:{port}{path} answered {response.status}")
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"{host}:{port}{path} answered more than {MAX_BYTES} bytes")
    return body.decode("utf-8", errors="replace")
