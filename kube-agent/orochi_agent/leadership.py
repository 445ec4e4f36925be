"""One leader per region: a `coordination.k8s.io` Lease decides which replica watches, resyncs and samples metrics.

Every replica takes jobs (SQS's FIFO message groups keep one cluster's jobs on one replica at a time); only the
lease holder runs the region-wide loops, so two replicas never report or resync the same clusters twice over.
The holder renews every `renew_every` seconds; a lease not renewed for `duration` seconds is taken over. On a
clean stop the holder gives the lease up, so the other replica takes over at once instead of after `duration`.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from orochi_agent.clients.kube import Kube, KubeError

log = logging.getLogger("orochi_agent.leadership")


def _now() -> datetime:
    return datetime.now(UTC)


def _format(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


class Leadership:
    def __init__(self, *, kube: Kube, namespace: str, name: str, identity: str, duration: int = 15,
                 renew_every: float = 5.0) -> None:
        self._kube, self._namespace, self._name, self._identity = kube, namespace, name, identity
        self._duration, self._renew_every = duration, renew_every
        self._leading = threading.Event()

    @property
    def identity(self) -> str:
        return self._identity

    def leading(self) -> bool:
        return self._leading.is_set()

    def run(self, stop: threading.Event) -> None:
        """Hold (or wait for) the lease until `stop`; then give it up if held."""
        while not stop.is_set():
            if self._try():
                self._leading.set()
            else:
                self._leading.clear()
            stop.wait(self._renew_every)
        if self._leading.is_set():
            self._give_up()

    def _try(self) -> bool:
        try:
            lease = self._kube.get_lease(self._namespace, self._name)
            now = _now()
            if lease is None:
                self._kube.create_lease(self._namespace, self._body(None, now, transitions=0))
                log.info("leading: created the lease", extra={"lease": self._name})
                return True
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity")
            renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
            expired = renewed is None or now > renewed + timedelta(seconds=spec.get("leaseDurationSeconds") or 0)
            if holder != self._identity and holder and not expired:
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self._identity else 1)
            acquired = spec.get("acquireTime") if holder == self._identity else None
            self._kube.replace_lease(self._namespace, self._name,
                                     self._body(lease["metadata"]["resourceVersion"], now, transitions, acquired))
            if holder != self._identity:
                log.info("leading: took the lease over", extra={"lease": self._name, "from": holder})
            return True
        except KubeError as e:
            if self._leading.is_set():
                log.warning("lost the lease: %s", e)
            return False

    def _body(self, resource_version: str | None, now: datetime, transitions: int,
              acquired: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace,
                                    "labels": {"app.kubernetes.io/managed-by": "orochi-agent"}}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": self._identity, "leaseDurationSeconds": self._duration,
                     "acquireTime": acquired or _format(now), "renewTime": _format(now),
                     "leaseTransitions": transitions},
        }

    def _give_up(self) -> None:
        try:
            lease = self._kube.get_lease(self._namespace, self._name)
            if lease and lease.get("spec", {}).get("holderIdentity") == self._identity:
                body = self._body(lease["metadata"]["resourceVersion"], _now(),
                                  int(lease["spec"].get("leaseTransitions") or 0))
                body["spec"]["renewTime"] = _format(_now() - timedelta(seconds=self._duration + 1))
                self._kube.replace_lease(self._namespace, self._name, body)
        except KubeError as e:
            log.warning("could not give the lease up (it expires by itself): %s", e)
        self._leading.clear()
