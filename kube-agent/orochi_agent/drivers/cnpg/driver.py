"""The `cnpg` driver: each cluster is a CloudNativePG `Cluster` and its companions, in a namespace of its own.

- `apply` server-side applies every object (`manifests.py`) as the field manager `orochi-agent`, forcing its
  fields back (an object changed or deleted by hand is put back by the next apply); an apply of what is already
  there writes nothing, and what a watch cache shows applied is not even sent; a generation older than the one
  applied changes nothing. Order: the namespace, its NetworkPolicies, the tiers Secret, the Cluster, the app Secret
  (after the Cluster: it is the proof that CNPG acted, see `status.py`), the load balancer Service, and last the
  namespace's `orochi.io/generation` annotation (a merge patch): the generation applied in full.
- `observe`, `clusters` and `metrics` read watch caches (`cache.py`) of the agent's namespaces, Clusters and
  load balancer Services (by the label `app.kubernetes.io/managed-by=orochi-agent`): no API call per observe. The
  caches start with `start()`, or with the first call that needs them; `close()` stops them.
- `delete` deletes the namespace (everything the agent created is in it) and answers True once it is gone.
- Kubernetes calls that fail in a way that passes (no answer, 409, 429, 5xx) are retried a few times with
  backoff, then raise DriverError(transient=True); a 422 or an admission webhook's denial raises Refused with the
  API server's message (the webhook's own words); a 403 raises DriverError(transient=False) naming what the
  agent's Role lacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from orochi_agent.clients import exporter as exporter_client
from orochi_agent.clients.kube import (
    CLUSTERS, NAMESPACES, POD_METRICS, SECRETS, SERVICES, Kube, KubeError,
)
from orochi_agent.drivers.base import DriverError, Observation, Refused
from orochi_agent.drivers.cnpg import exporter, manifests, names, status
from orochi_agent.drivers.cnpg.cache import Cache
from orochi_agent.drivers.cnpg.manifests import Placement
from orochi_agent.drivers.cnpg.status import Proof
from orochi_agent.models import DesiredState, MetricValues
from orochi_agent.retry import backoff

log = logging.getLogger("orochi_agent.cnpg")
T = TypeVar("T")
VERSIONS = ("14", "15", "16", "17", "18")
"""The PostgreSQL majors CNPG v1.30 runs (the catalog's image decides the exact version)."""
RESERVED_ROLES = frozenset({"postgres", "streaming_replica", "cnpg_metrics_exporter"})
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
PodMetrics = Callable[[str, str], list[dict[str, Any]]]
Scrape = Callable[[str, int], str]


class CnpgDriver:
    """Clusters as CNPG `Cluster`s through `kube`.

    `storage_class`: the PVCs' (DOKS: `do-block-storage`). `operator_namespace`: where the CNPG operator runs (its
    pods may reach the instances). `scrape_namespaces`: whose pods may read the exporters (the agent's own
    namespace, and Prometheus' if any). `internal_cidrs`: the cluster's pod and service ranges, kept out of the
    client rule on CNIs whose ipBlock matches pods. `scrape(host, port)` reads an exporter and `pod_metrics(namespace,
    selector)` lists PodMetrics (default: `metrics.k8s.io` through `kube`). `attempts`, `retry_base` and
    `retry_cap`: the inline retries of a call that failed in a way that passes. `sync_timeout`: how long a call
    waits for the watch caches' first list.
    """

    name = "cnpg"

    def __init__(self, *, kube: Kube, storage_class: str = "do-block-storage", operator_namespace: str = "cnpg-system",
                 scrape_namespaces: tuple[str, ...] = (), internal_cidrs: tuple[str, ...] = (),
                 versions: tuple[str, ...] = VERSIONS, scrape: Scrape = exporter_client.scrape,
                 exporter_port: int = names.EXPORTER_PORT, pod_metrics: PodMetrics | None = None,
                 attempts: int = 4, retry_base: float = 0.2, retry_cap: float = 2.0, sync_timeout: float = 30.0,
                 watch_seconds: int = 300) -> None:
        self._kube = kube
        self._placement = Placement(storage_class=storage_class, operator_namespace=operator_namespace,
                                    scrape_namespaces=tuple(scrape_namespaces), internal_cidrs=tuple(internal_cidrs))
        self._versions = tuple(versions)
        self._scrape, self._exporter_port = scrape, exporter_port
        self._pod_metrics = pod_metrics or self._pod_metrics_from_api
        self._attempts, self._retry_base, self._retry_cap = max(1, attempts), retry_base, retry_cap
        self._sync_timeout = sync_timeout
        self._namespaces = Cache(kube=kube, resource=NAMESPACES, label_selector=names.SELECTOR,
                                 watch_seconds=watch_seconds)
        self._clusters = Cache(kube=kube, resource=CLUSTERS, label_selector=names.SELECTOR,
                               watch_seconds=watch_seconds)
        self._services = Cache(kube=kube, resource=SERVICES, label_selector=names.SELECTOR,
                               watch_seconds=watch_seconds)
        self._sampler = exporter.Sampler()
        self._lock = threading.Lock()
        self._cluster_locks: dict[str, threading.Lock] = {}
        self._written: dict[tuple[str, str, str], dict[str, Any]] = {}
        """The namespace, Cluster and Service as the driver's last write returned them, by (kind, namespace, name)."""
        self._proofs: dict[str, Proof] = {}
        self._observed: dict[str, int] = {}
        self._closing = threading.Event()
        self._metrics_missing_logged = False

    # The Driver interface

    def versions(self) -> tuple[str, ...]:
        return self._versions

    def start(self) -> None:
        """Start the watch caches (idempotent); the first call that needs them does it too."""
        for cache in self._caches():
            cache.start()

    def apply(self, desired: DesiredState) -> None:
        self._check_servable(desired)
        built = manifests.build(desired, self._placement)
        started = time.monotonic()
        name = built.namespace["metadata"]["name"]
        self._synced()
        with self._cluster_lock(desired.id):
            namespace = self._ensure(built.namespace, self._namespaces)
            if status.applied_generation(namespace) > desired.generation:
                log.info("cluster %s: generation %d is older than the one applied (%d), nothing to do", desired.id,
                         desired.generation, status.applied_generation(namespace))
                return
            for policy in built.network_policies:
                self._apply(policy)
            if built.tiers_secret is not None:
                self._apply(built.tiers_secret)
            previous = self._previous_cluster(desired.id)
            unchanged = previous is not None and _annotation(previous, names.SPEC_HASH) == manifests.spec_hash(
                built.cluster)
            spec_generation = int(_annotation(previous, names.GENERATION) or 0) if unchanged else desired.generation
            cluster = self._ensure(manifests.stamped(built.cluster, generation=spec_generation or desired.generation),
                                   self._clusters, live=previous)
            cluster_generation = int(cluster["metadata"].get("generation") or 0)
            secret = self._apply(manifests.app_secret(desired, follows=cluster_generation))
            proof = Proof(cluster_generation=cluster_generation, secret_version=str(secret["metadata"]["resourceVersion"]))
            with self._lock:
                self._proofs[desired.id] = proof
            if built.tiers_secret is None and previous is not None and manifests.uses_tiers_secret(previous):
                self._call(f"delete Secret {name}/{names.TIERS_SECRET}", lambda: self._kube.delete(
                    SECRETS, names.TIERS_SECRET, namespace=name))
            self._ensure(built.service, self._services)
            noted = {names.GENERATION: str(desired.generation), names.PROOF: status.proof_annotation(proof)}
            if any(_annotation(namespace, key) != value for key, value in noted.items()):
                self._remember(self._call(f"annotate namespace {name}", lambda: self._kube.merge_patch(
                    NAMESPACES, name, {"metadata": {"annotations": noted}})))
        log.info("applied cluster %s generation %d (%d instances, Cluster generation %d) in %.0f ms", desired.id,
                 desired.generation, desired.instances, cluster_generation, (time.monotonic() - started) * 1000)

    def delete(self, cluster_id: str) -> bool:
        name = names.namespace(cluster_id)
        with self._cluster_lock(cluster_id):
            namespace = self._call(f"get namespace {name}", lambda: self._kube.get(NAMESPACES, name))
            if namespace is None:
                self._forget(cluster_id)
                return True
            if not _ours(namespace, cluster_id):
                raise DriverError(f"namespace {name} exists but was not made by the agent for cluster {cluster_id}",
                                  transient=False)
            if not (namespace.get("metadata") or {}).get("deletionTimestamp"):
                self._call(f"delete namespace {name}", lambda: self._kube.delete(NAMESPACES, name))
                log.info("deleting cluster %s: namespace %s", cluster_id, name)
            return False

    def observe(self, cluster_id: str) -> Observation | None:
        self._synced()
        name = names.namespace(cluster_id)
        namespace = self._seen(self._namespaces, "Namespace", None, name)
        if namespace is None or not _ours(namespace, cluster_id):
            return None
        cluster = self._seen(self._clusters, "Cluster", name, names.CLUSTER)
        service = self._seen(self._services, "Service", name, names.SERVICE)
        with self._lock:
            proof = status.recorded_proof(namespace) or self._proofs.get(cluster_id)
            generation = self._observed.get(cluster_id, 0)
            if cluster is not None and status.acted(cluster, proof):
                generation = max(generation, status.applied_generation(namespace))
                self._observed[cluster_id] = generation
        return status.observation(cluster=cluster, service=service, generation=generation)

    def clusters(self) -> dict[str, int]:
        if self._synced(required=False):
            namespaces = self._namespaces.objects()
        else:
            namespaces = self._call("list namespaces", lambda: self._kube.list(
                NAMESPACES, label_selector=names.SELECTOR))[0]
        held = {}
        for namespace in namespaces:
            cluster_id = ((namespace.get("metadata") or {}).get("labels") or {}).get(names.CLUSTER_LABEL)
            if cluster_id and names.namespace(cluster_id) == namespace["metadata"]["name"]:
                held[cluster_id] = status.applied_generation(namespace)
        return held

    def metrics(self, cluster_id: str) -> MetricValues | None:
        """A sample from the instances' exporters and PodMetrics (see `exporter.py`); None when neither answers."""
        self._synced()
        name = names.namespace(cluster_id)
        cluster = self._clusters.get(name, names.CLUSTER)
        if cluster is None:
            return None
        cluster_status = cluster.get("status") or {}
        reported = cluster_status.get("instancesReportedState") or {}
        instances = {}
        for pod, state in sorted(reported.items()):
            ip = (state or {}).get("ip")
            if not ip:
                continue
            try:
                instances[pod] = exporter.parse(self._scrape(ip, self._exporter_port))
            except (exporter_client.ScrapeError, ValueError) as e:
                log.info("no metrics from %s of cluster %s: %s", pod, cluster_id, e)
        try:
            usage = exporter.pod_usage(self._pod_metrics(name, f"cnpg.io/cluster={names.CLUSTER}"))
        except DriverError as e:
            log.info("no pod metrics for cluster %s: %s", cluster_id, e.message)
            usage = {}
        database = str((((cluster.get("spec") or {}).get("bootstrap") or {}).get("initdb") or {}).get("database") or "")
        return self._sampler.sample(cluster_id, primary=cluster_status.get("currentPrimary"), instances=instances,
                                    usage=usage, limits=exporter.limits(cluster), database=database)

    def ping(self) -> None:
        self.start()
        for cache in self._caches():
            if cache.problem:
                raise DriverError(cache.problem)
            if not cache.synced:
                raise DriverError("the Kubernetes watch caches have not listed yet")

    def close(self) -> None:
        """Stop the watch caches (the Kube client is its owner's to close)."""
        self._closing.set()
        for cache in self._caches():
            cache.stop()

    # Applying

    def _check_servable(self, desired: DesiredState) -> None:
        if desired.postgres_version not in self._versions:
            raise Refused(f"PostgreSQL {desired.postgres_version} is not served here; the cnpg driver serves "
                          f"{', '.join(self._versions)}")
        for what, value in (("cluster id", desired.id), ("organization id", desired.org_id)):
            if not names.is_label_value(value):
                raise Refused(f"the {what} {value!r} cannot be a Kubernetes label value")
        if desired.instances < 1:
            raise Refused("a cluster has at least one instance")
        if desired.storage_gb < 1 or desired.vcpu < 1 or desired.memory_gb < 1:
            raise Refused("a cluster needs at least 1 GB of storage, 1 vCPU and 1 GB of memory")
        if desired.owner in RESERVED_ROLES or desired.owner.startswith("pg_") or not desired.owner:
            raise Refused(f"the role name {desired.owner!r} is reserved")
        if desired.database in RESERVED_DATABASES or not desired.database:
            raise Refused(f"the database name {desired.database!r} is reserved")
        if not desired.password.get_secret_value():
            raise Refused("the owner's password is empty")

    def _previous_cluster(self, cluster_id: str) -> dict[str, Any] | None:
        return self._seen(self._clusters, "Cluster", names.namespace(cluster_id), names.CLUSTER)

    def _ensure(self, manifest: dict[str, Any], cache: Cache, *, live: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply `manifest`, unless the object as last seen carries it already (then nothing is sent: the webhooks
        are not even asked, so a Service changes while the CNPG operator is down)."""
        metadata = manifest["metadata"]
        if live is None:
            live = self._seen(cache, manifest["kind"], metadata.get("namespace"), metadata["name"])
        if live is not None and manifests.carries(live, manifest):
            return live
        return self._apply(manifest)

    def _seen(self, cache: Cache, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as last seen: the later of the watch cache's version and the one the driver's own last write
        returned. Absent from a cache that has seen past that write: deleted (by hand, say)."""
        with self._lock:
            written = self._written.get((kind, namespace or "", name))
        if not cache.synced:
            return written
        cached = cache.get(namespace, name)
        if cached is None:
            return written if written is not None and _version(written) > _version(cache.resource_version) else None
        return cached if written is None or _version(cached) >= _version(written) else written

    def _remember(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("kind") in ("Namespace", "Cluster", "Service"):
            metadata = obj.get("metadata") or {}
            metadata.pop("managedFields", None)
            with self._lock:
                self._written[(obj["kind"], metadata.get("namespace") or "", metadata.get("name") or "")] = obj
        return obj

    def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        metadata = manifest["metadata"]
        where = f"{metadata['namespace']}/" if "namespace" in metadata else ""
        return self._remember(self._call(f"apply {manifest['kind']} {where}{metadata['name']}",
                                         lambda: self._kube.apply(manifest)))

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried while it fails in a way that passes; its KubeError mapped to the driver's errors."""
        for attempt in range(1, self._attempts + 1):
            try:
                return call()
            except KubeError as e:
                if not e.retryable or attempt == self._attempts or self._closing.is_set():
                    raise _driver_error(what, e) from e
                delay = backoff(attempt, base=self._retry_base, cap=self._retry_cap)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self._retry_cap * 4))
                log.info("%s failed (%s), retry %d in %.2f s", what, e.message, attempt, delay)
                self._closing.wait(delay)
        raise AssertionError("unreachable")

    # Plumbing

    def _caches(self) -> tuple[Cache, ...]:
        return self._namespaces, self._clusters, self._services

    def _synced(self, *, required: bool = True) -> bool:
        """Whether the watch caches have listed; when `required`, wait for it (a lasting failure, such as a
        403, raises at once)."""
        self.start()
        deadline = time.monotonic() + self._sync_timeout
        for cache in self._caches():
            while not cache.wait_synced(min(0.05, max(0.0, deadline - time.monotonic())) if required else 0):
                if not required:
                    return False
                error = cache.error
                if error is not None and not error.retryable:
                    raise _driver_error(f"list and watch {cache.resource.plural}", error)
                if time.monotonic() >= deadline:
                    raise DriverError(f"the watch caches did not list within {self._sync_timeout:.0f} s"
                                      + (f": {cache.problem}" if cache.problem else ""))
        return True

    def _pod_metrics_from_api(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            return self._kube.list(POD_METRICS, namespace=namespace, label_selector=selector)[0]
        except KubeError as e:
            if e.status in (404, 503) and not self._metrics_missing_logged:
                self._metrics_missing_logged = True
                log.warning("metrics.k8s.io does not answer (%s): no CPU or memory metrics", e.message)
            raise _driver_error("list PodMetrics", e) from e

    def _cluster_lock(self, cluster_id: str) -> threading.Lock:
        with self._lock:
            return self._cluster_locks.setdefault(cluster_id, threading.Lock())

    def _forget(self, cluster_id: str) -> None:
        namespace = names.namespace(cluster_id)
        with self._lock:
            for key in [k for k in self._written if namespace in (k[1], k[2])]:
                del self._written[key]
            self._proofs.pop(cluster_id, None)
            self._observed.pop(cluster_id, None)
        self._sampler.forget(cluster_id)


def _driver_error(what: str, error: KubeError) -> DriverError:
    message = error.message
    if error.status == 422 or "denied the request" in message:
        return Refused(message[:1000])
    if error.status == 403 and "being terminated" in message:
        return DriverError(f"{what}: the cluster's namespace is still being deleted")
    if error.status == 403:
        return DriverError(f"{what}: forbidden, the agent's Role does not grant it ({message})"[:1000],
                           transient=False)
    if error.status == 401:
        return DriverError(f"{what}: the API server did not accept the agent's credentials")
    if error.retryable:
        return DriverError(f"{what}: {message}"[:1000])
    if error.status == 404:
        return DriverError(f"{what}: {message} (are CloudNativePG's CRDs installed?)"[:1000], transient=False)
    return DriverError(f"{what}: {message}"[:1000], transient=False)


def _version(obj: dict[str, Any] | str | None) -> int:
    """A resourceVersion as a number, to order the versions of one object (they are etcd revisions); an unreadable
    one counts as the newest, so that the watch cache wins."""
    value = ((obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else obj)
    if value is not None:
        try:
            return int(value)
        except (TypeError, ValueError):
            pass
    return 2**63


def _annotation(obj: dict[str, Any] | None, key: str) -> str | None:
    if obj is None:
        return None
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _ours(namespace: dict[str, Any], cluster_id: str) -> bool:
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return labels.get(names.MANAGED_BY) == names.AGENT and labels.get(names.CLUSTER_LABEL) == cluster_id
