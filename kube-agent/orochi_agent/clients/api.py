"""The control plane's agent API over HTTPS with the region's agent token. The only HTTP client of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3
from pydantic import BaseModel, ValidationError

from orochi_agent.models import (
    DesiredState, Heartbeat, HeartbeatOut, MetricsAccepted, MetricsBatch, RegionCluster, RegionClusterPage,
    ReportOut, StatusReport,
)

M = TypeVar("M", bound=BaseModel)
# Worth retrying: the API or the network is down or busy, or the change raced another one.
RETRYABLE = frozenset({408, 409, 425, 429})


class ApiError(Exception):
    """The API did not answer, or answered with an error. `status` is None when nothing answered."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details or []

    @property
    def retryable(self) -> bool:
        """An outage, a throttle or a race: not the cluster's fault, and it passes."""
        return self.status is None or self.status >= 500 or self.status in RETRYABLE or self.status in (401, 403)


class Api:
    def __init__(self, *, url: str, token: str, timeout: float, user_agent: str) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                         "Accept": "application/json", "User-Agent": user_agent}
        self._http = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(total=timeout))

    def heartbeat(self, body: Heartbeat) -> HeartbeatOut:
        return self._call("POST", "/v1/agent/heartbeat", HeartbeatOut, body)

    def clusters(self) -> Iterator[RegionCluster]:
        """Every live cluster of the region, following the cursor to the end."""
        cursor: str | None = None
        while True:
            query = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self._call("GET", f"/v1/agent/clusters?{urlencode(query)}", RegionClusterPage)
            yield from page.items
            if not (cursor := page.next_cursor):
                return

    def desired_state(self, cluster_id: str) -> DesiredState | None:
        """The cluster's current desired state, secrets included; None when it no longer exists."""
        try:
            return self._call("GET", f"/v1/agent/clusters/{quote(cluster_id, safe='')}", DesiredState)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def report(self, cluster_id: str, report: StatusReport) -> ReportOut:
        return self._call("POST", f"/v1/agent/clusters/{quote(cluster_id, safe='')}/status", ReportOut, report)

    def metrics(self, batch: MetricsBatch) -> MetricsAccepted:
        return self._call("POST", "/v1/agent/metrics", MetricsAccepted, batch)

    def _call(self, method: str, path: str, answer: type[M], body: BaseModel | None = None) -> M:
        payload = body.model_dump_json(exclude_none=True).encode() if body is not None else None
        try:
            response = self._http.request(method, self._url + path, body=payload, headers=self._headers)
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(f"{method} {path.split('?')[0]}: the API did not answer ({type(e).__name__})") from e
        if response.status >= 400:
            raise _error(method, path, response)
        try:
            return answer.model_validate_json(response.data)
        except ValidationError as e:
            raise ApiError(f"{method} {path.split('?')[0]}: unexpected answer ({e.error_count()} errors)",
                           status=response.status) from e


def _error(method: str, path: str, response: urllib3.BaseHTTPResponse) -> ApiError:
    try:
        error = json.loads(response.data)["error"]
        code, message, details = error.get("code"), error.get("message", ""), error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = None, response.data[:200].decode(errors="replace"), None
    return ApiError(f"{method} {path.split('?')[0]}: {response.status} {code or ''} {message}".strip(),
                    status=response.status, code=code, details=details)
