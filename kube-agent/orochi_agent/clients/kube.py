"""Kubernetes, through the official client's `ApiClient`: the only module that imports `kubernetes`.

Every call goes to an explicit REST path (no discovery, no DynamicClient), so the calls made are exactly the
ones listed by `calls()` — what the agent's Role must grant, and nothing else. Every failure is mapped once to
`KubeError`: the API's `Status` (message, reason, causes) when it answered, "no answer" when it did not.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, TypedDict, cast
from urllib.parse import quote, urlencode

import kubernetes
from kubernetes.client import ApiClient, ApiException, Configuration
from kubernetes.client.rest import RESTResponse
from kubernetes.watch.watch import iter_resp_lines

FIELD_MANAGER = "orochi-agent"
# Worth retrying: the API server is busy, restarting or slow, or the write raced another one.
RETRYABLE = frozenset({408, 409, 429})
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    """One REST resource: `group` is "" for the core API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        parts = [f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"]
        if namespace is not None:
            if not self.namespaced:
                raise ValueError(f"{self.plural} are cluster-scoped")
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
        return "/".join(parts)


NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
SECRETS = Resource("", "v1", "secrets")
SERVICES = Resource("", "v1", "services")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")
CLUSTERS = Resource("postgresql.cnpg.io", "v1", "clusters")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
POD_METRICS = Resource("metrics.k8s.io", "v1beta1", "pods")

_BY_KIND = {
    ("v1", "Namespace"): NAMESPACES,
    ("v1", "Secret"): SECRETS,
    ("v1", "Service"): SERVICES,
    ("networking.k8s.io/v1", "NetworkPolicy"): NETWORK_POLICIES,
    ("postgresql.cnpg.io/v1", "Cluster"): CLUSTERS,
    ("coordination.k8s.io/v1", "Lease"): LEASES,
}


class Call(NamedTuple):
    """One call as RBAC sees it: `namespace` None is cluster scope (or every namespace, for list and watch)."""

    verb: str
    group: str
    resource: str
    namespace: str | None


class KubeError(Exception):
    """A call failed. `status` is None when the API server did not answer; `reason` is the Status reason
    ("Invalid", "Forbidden", "Conflict", "Expired", …); `causes` the per-field messages of a 422."""

    def __init__(self, message: str, *, status: int | None, reason: str | None, retryable: bool,
                 causes: tuple[str, ...] = (), retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.reason, self.retryable = message, status, reason, retryable
        self.causes, self.retry_after = causes, retry_after


class WatchEvent(TypedDict, total=False):
    """One event of a watch, as the API server sends it (an ERROR event is raised as KubeError, not yielded)."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
    object: dict[str, Any]


class _Stream(Protocol):
    """What a watch uses of the urllib3 response under it (only clients.api imports urllib3)."""

    def release_conn(self) -> None: ...

    def close(self) -> None: ...

    def shutdown(self) -> None: ...


class Watch:
    """The events of one watch request (bookmarks included), until the server ends it.

    Raises KubeError on an ERROR event (status 410 when the resourceVersion is too old: relist) and when the
    stream breaks. `close()` ends it from another thread.
    """

    def __init__(self, response: _Stream, *, what: str) -> None:
        self._response, self._what = response, what
        self._closed = False

    def __iter__(self) -> Iterator[WatchEvent]:
        complete = False
        try:
            for line in iter_resp_lines(self._response):
                if not line:
                    continue
                event: WatchEvent = json.loads(line)
                if event.get("type") == "ERROR":
                    raise _status_error(event.get("object") or {}, self._what)
                yield event
            complete = True
        except KubeError:
            raise
        except Exception as e:
            if self._closed:
                return
            if isinstance(e, ValueError) or _transport_error(e):
                raise KubeError(f"{self._what}: the watch broke ({type(e).__name__})", status=None, reason=None,
                                retryable=True) from e
            raise
        finally:
            if complete:
                self._response.release_conn()
            else:  # a connection with unread data must not go back to the pool
                self._response.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._response.shutdown()  # unblocks a read in progress in another thread
        except Exception:  # noqa: BLE001 - best effort; the socket may be gone already
            pass


class Kube:
    """Explicit calls to the API server. Thread-safe; one connection pool."""

    def __init__(self, api_client: ApiClient, *, timeout: float = 30.0, connect_timeout: float = 5.0) -> None:
        self._client = api_client
        self._timeout = (connect_timeout, timeout)
        self._calls: Counter[Call] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, **options: float) -> Kube:
        """From the kubeconfig file `kubeconfig`; without one, from the pod's service account when running in a
        cluster (its token is re-read as it rotates), else from the client's default kubeconfig."""
        configuration = Configuration()
        try:
            if kubeconfig:
                kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                                   persist_config=False)
            else:
                try:
                    kubernetes.config.load_incluster_config(client_configuration=configuration)
                except kubernetes.config.ConfigException:
                    kubernetes.config.load_kube_config(client_configuration=configuration, persist_config=False)
        except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as e:
            raise KubeError(f"no usable Kubernetes configuration: {e}", status=None, reason="Configuration",
                            retryable=False) from e
        return cls(ApiClient(configuration), **options)

    # Objects

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of `manifest` as the field manager `orochi-agent`, forcing ownership of its fields and
        refusing unknown ones; returns the object as stored."""
        resource = _resource_of(manifest)
        metadata = manifest["metadata"]
        namespace = metadata.get("namespace") if resource.namespaced else None
        path = resource.path(namespace=namespace, name=metadata["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true", "fieldValidation": "Strict"}
        response = self._request("patch", resource, namespace, "PATCH", path, query=query, body=manifest,
                                 content_type=APPLY, timeout=self._timeout)
        if response.status == 201:  # an apply that creates is authorized as a create too
            self._count(Call("create", resource.group, resource.plural, namespace))
        return self._decode(response, "PATCH", path)

    def merge_patch(self, resource: Resource, name: str, patch: dict[str, Any], *,
                    namespace: str | None = None) -> dict[str, Any]:
        """A JSON merge patch (as `orochi-agent`): for fields the agent sets outside its applied configuration."""
        path = resource.path(namespace=namespace, name=name)
        return self._json("patch", resource, namespace, "PATCH", path, query={"fieldManager": FIELD_MANAGER},
                          body=patch, content_type=MERGE)

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object; None when it does not exist."""
        try:
            return self._json("get", resource, namespace, "GET", resource.path(namespace=namespace, name=name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, resource: Resource, *, namespace: str | None = None,
             label_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """Every object (of `namespace`, or of all namespaces) matching `label_selector`, and the list's
        resourceVersion to watch from."""
        query = {"labelSelector": label_selector} if label_selector else {}
        answer = self._json("list", resource, namespace, "GET", resource.path(namespace=namespace), query=query)
        return answer.get("items") or [], str((answer.get("metadata") or {}).get("resourceVersion", ""))

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None,
               propagation: str = "Background") -> bool:
        """Ask for the object's deletion (its dependents are collected in the background); False when it did not
        exist. The object may linger while finalizers run: `get` tells when it is gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self._json("delete", resource, namespace, "DELETE", resource.path(namespace=namespace, name=name),
                       body=body)
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    def watch(self, resource: Resource, *, resource_version: str, namespace: str | None = None,
              label_selector: str | None = None, timeout_seconds: int = 300) -> Watch:
        """Changes after `resource_version` (with bookmarks), for at most `timeout_seconds`."""
        query: dict[str, str] = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                                 "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            query["labelSelector"] = label_selector
        path = resource.path(namespace=namespace)
        response = self._request("watch", resource, namespace, "GET", path, query=query,
                                 timeout=(self._timeout[0], timeout_seconds + 30))
        stream: _Stream = response.response  # the client leaves it unannotated: a urllib3 HTTPResponse
        return Watch(stream, what=f"watch {resource.plural}")

    # Leases, for leader election

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(LEASES, name, namespace=namespace)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Raises KubeError 409 (reason AlreadyExists) when another holder created it first."""
        return self._json("create", LEASES, namespace, "POST", LEASES.path(namespace=namespace),
                          query={"fieldManager": FIELD_MANAGER}, body=body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Raises KubeError 409 (reason Conflict) when body's metadata.resourceVersion is not the current one."""
        return self._json("update", LEASES, namespace, "PUT", LEASES.path(namespace=namespace, name=name),
                          query={"fieldManager": FIELD_MANAGER}, body=body)

    # Bookkeeping

    def calls(self) -> Counter[Call]:
        """How many times each call was made (a copy)."""
        with self._lock:
            return Counter(self._calls)

    def close(self) -> None:
        self._client.close()

    def _count(self, call: Call) -> None:
        with self._lock:
            self._calls[call] += 1

    # Plumbing

    def _json(self, verb: str, resource: Resource, namespace: str | None, method: str, path: str, *,
              query: dict[str, str] | None = None, body: dict[str, Any] | None = None,
              content_type: str | None = None) -> dict[str, Any]:
        response = self._request(verb, resource, namespace, method, path, query=query, body=body,
                                 content_type=content_type, timeout=self._timeout)
        return self._decode(response, method, path)

    def _decode(self, response: RESTResponse, method: str, path: str) -> dict[str, Any]:
        try:
            data: bytes = response.read()
        except Exception as e:
            if _transport_error(e):
                raise KubeError(f"{method} {path}: the API server's answer broke off ({type(e).__name__})",
                                status=None, reason=None, retryable=True) from e
            raise
        try:
            answer = json.loads(data) if data else {}
        except ValueError as e:
            raise KubeError(f"{method} {path}: the API server answered something else than JSON",
                            status=response.status, reason=None, retryable=True) from e
        return cast(dict[str, Any], answer)  # every path called here answers a JSON object

    def _request(self, verb: str, resource: Resource, namespace: str | None, method: str, path: str, *,
                 query: dict[str, str] | None = None, body: dict[str, Any] | None = None,
                 content_type: str | None = None, timeout: tuple[float, float]) -> RESTResponse:
        self._count(Call(verb, resource.group, resource.plural, namespace))
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        url_path = f"{path}?{urlencode(query)}" if query else path
        try:
            _, url, headers, payload, _ = self._client.param_serialize(
                method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self._client.call_api(method, url, header_params=headers, body=payload,
                                             _request_timeout=timeout)
        except ApiException as e:  # the client's own: TLS failures (status 0)
            raise KubeError(f"{method} {path}: {_first_line(str(e.reason or e))}", status=None, reason=None,
                            retryable=True) from e
        except Exception as e:
            if _transport_error(e):
                raise KubeError(f"{method} {path}: the API server did not answer ({type(e).__name__})", status=None,
                                reason=None, retryable=True) from e
            raise
        if response.status >= 400:
            try:
                text: bytes = response.read()
            except Exception:  # noqa: BLE001 - the status alone says enough
                text = b""
            raise _response_error(response.status, text, f"{method} {path}", response.getheader("Retry-After"))
        return response


def _resource_of(manifest: dict[str, Any]) -> Resource:
    try:
        return _BY_KIND[(manifest["apiVersion"], manifest["kind"])]
    except KeyError:
        raise ValueError(f"no REST path known for {manifest.get('apiVersion')} {manifest.get('kind')}") from None


def _response_error(status: int, text: bytes, what: str, retry_after: str | None) -> KubeError:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        error = _status_error(body, what, status=status)
    else:
        snippet = text[:300].decode(errors="replace").strip()
        error = KubeError(f"{what}: {status} {snippet}".strip(), status=status, reason=None,
                          retryable=_retryable(status))
    try:
        error.retry_after = float(retry_after) if retry_after else None
    except ValueError:
        pass
    return error


def _status_error(body: dict[str, Any], what: str, *, status: int | None = None) -> KubeError:
    """A KubeError from a `Status` object (an error answer, or a watch's ERROR event)."""
    code = body.get("code") or status
    details = body.get("details") or {}
    causes = tuple(str(c.get("message") or c.get("reason") or "") for c in details.get("causes") or [])
    message = str(body.get("message") or body.get("reason") or f"{what} failed")
    return KubeError(message, status=code, reason=body.get("reason"),
                     retryable=code is None or _retryable(code, message), causes=causes)


def _retryable(status: int, message: str = "") -> bool:
    if status == 500 and message.startswith("failed to create typed patch object"):
        return False  # server-side apply of a field the schema does not declare: the manifest's fault
    return status >= 500 or status in RETRYABLE


def _transport_error(error: BaseException) -> bool:
    """Socket, TLS and urllib3 errors. urllib3's are told by their module: only clients.api imports urllib3."""
    return isinstance(error, OSError) or any(c.__module__.split(".")[0] == "urllib3" for c in type(error).__mro__)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]
