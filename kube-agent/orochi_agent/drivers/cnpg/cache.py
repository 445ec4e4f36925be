"""A watch cache: the objects of one resource that match a label selector, kept current by list + watch.

One daemon thread per cache lists, then watches from the list's resourceVersion. A watch the server ends (its
timeout) or that breaks is re-established from the last resourceVersion seen (events and bookmarks); a
`410 Gone` (that version is compacted away) relists, replacing the whole cache, so objects deleted meanwhile
go too. Failures are retried with backoff; `problem` holds the last one until a list or watch works again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from orochi_agent.clients.kube import Kube, KubeError, Resource, Watch
from orochi_agent.retry import backoff

log = logging.getLogger("orochi_agent.cnpg")
Key = tuple[str, str]


class Cache:
    def __init__(self, *, kube: Kube, resource: Resource, label_selector: str, watch_seconds: int = 300,
                 retry_base: float = 0.2, retry_cap: float = 10.0) -> None:
        self._kube, self._resource, self._selector = kube, resource, label_selector
        self._watch_seconds, self._retry_base, self._retry_cap = watch_seconds, retry_base, retry_cap
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Watch | None = None
        self.problem: str | None = None
        self.error: KubeError | None = None
        """The last failure of a list or watch, until one works again."""
        self.lists = 0
        self.watches = 0
        self.resource_version: str | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=f"watch-{self._resource.plural}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((namespace or "", name))

    def objects(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                started, events = time.monotonic(), self._watch_once()
                failures = 0
                self.problem, self.error = None, None
                if events == 0 and time.monotonic() - started < 1.0:
                    self._stopping.wait(self._retry_base)  # a watch ended at once: do not spin
            except KubeError as e:
                if self._stopping.is_set():
                    return
                if e.status == 410:
                    log.info("watch of %s expired at %s: relisting", self._resource.plural, self.resource_version)
                    self.resource_version = None
                    continue
                failures += 1
                self.problem, self.error = f"watching {self._resource.plural}: {e.message}", e
                log.warning("%s (retry %d)", self.problem, failures)
                self._stopping.wait(backoff(failures, base=self._retry_base, cap=self._retry_cap))
            except Exception as e:  # noqa: BLE001 - the thread must live on; the problem is reported by ping()
                failures += 1
                self.problem = f"watching {self._resource.plural}: {type(e).__name__}: {e}"
                log.exception("watch of %s failed", self._resource.plural)
                self._stopping.wait(backoff(failures, base=self._retry_base, cap=self._retry_cap))

    @property
    def resource(self) -> Resource:
        return self._resource

    def _list(self) -> None:
        items, version = self._kube.list(self._resource, label_selector=self._selector)
        with self._lock:
            self._objects = {_key(item): _slim(item) for item in items}
        self.resource_version = version
        self.lists += 1
        self.problem, self.error = None, None
        self._synced.set()

    def _watch_once(self) -> int:
        assert self.resource_version is not None
        watch = self._kube.watch(self._resource, resource_version=self.resource_version,
                                 label_selector=self._selector, timeout_seconds=self._watch_seconds)
        self._watch = watch
        self.watches += 1
        events = 0
        try:
            if self._stopping.is_set():
                watch.close()
                return 0
            for event in watch:
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                kind = event.get("type")
                if kind in ("ADDED", "MODIFIED"):
                    with self._lock:
                        self._objects[_key(obj)] = _slim(obj)
                elif kind == "DELETED":
                    with self._lock:
                        self._objects.pop(_key(obj), None)
                if version:
                    self.resource_version = str(version)
                events += 1
        finally:
            self._watch = None
        return events


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without its managedFields: the largest part of most objects, and nothing a reader needs."""
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _key(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return metadata.get("namespace") or "", metadata.get("name") or ""
