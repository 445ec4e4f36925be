"""The cnpg driver against the real thing: kube-apiserver v1.37.2 with the real CNPG v1.30.0 operator and its
admission webhooks (devstack/kube), through the driver's public methods and a `Kube` from the test bed's kubeconfig.

There is no kubelet: pods never run, so a Cluster stays in `Setting up primary`. A test that needs more writes the
status as CNPG would, through the status subresource, after telling CNPG to keep off the Cluster
(`cnpg.io/reconciliationLoop: disabled`, or with the operator stopped). Faults come from a small proxy in front of
the API server that answers chosen requests with an error, late, or cuts watches. Every wait is on a condition
with a deadline.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from pydantic import SecretStr

from devstack.kube.testbed import ApiError, Testbed
from orochi_agent.clients import exporter as exporter_client
from orochi_agent.clients.kube import (
    CLUSTERS, NAMESPACES, NETWORK_POLICIES, POD_METRICS, SECRETS, SERVICES, Call, Kube, KubeError,
)
from orochi_agent.drivers.base import DriverError, Observation, Refused
from orochi_agent.drivers.cnpg import CnpgDriver, names
from orochi_agent.drivers.cnpg.cache import Cache
from orochi_agent.models import DesiredState, DesiredStorageTiers, S3Credentials

T = TypeVar("T")
IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.0"
DISABLED = {"metadata": {"annotations": {"cnpg.io/reconciliationLoop": "disabled"}}}
ENABLED = {"metadata": {"annotations": {"cnpg.io/reconciliationLoop": None}}}


@pytest.fixture(scope="module")
def kube(testbed: Testbed) -> Iterator[Kube]:
    client = Kube.from_config(str(testbed.admin_kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="module")
def driver(kube: Kube) -> Iterator[CnpgDriver]:
    cnpg = CnpgDriver(kube=kube, scrape_namespaces=("orochi-agent",), retry_base=0.05, sync_timeout=60)
    cnpg.start()
    yield cnpg
    cnpg.close()


def new_id() -> str:
    return "cls_" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")  # as the API makes them


def desired(cluster_id: str, **changes: Any) -> DesiredState:
    fields: dict[str, Any] = dict(
        id=cluster_id, org_id="org_Q2xYp0aZ9bT7uVwX1yZ3aB", name="orders", region="nyc1", generation=1,
        deleting=False, postgres_version="18", image=IMAGE, size="db-s-1vcpu-2gb", vcpu=1, memory_gb=2, instances=1,
        storage_gb=1, ip_allowlist=["203.0.113.0/24"], database="app", owner="app", password=SecretStr("pw-1-secret"),
    )
    fields.update(changes)
    return DesiredState(**fields)


def tiers() -> DesiredStorageTiers:
    return DesiredStorageTiers(cold=S3Credentials(
        endpoint="https://s3.eu-west-1.amazonaws.com", bucket="acme-cold", region="eu-west-1", prefix="orders/",
        access_key_id="AKIACOLD", secret_access_key=SecretStr("c0ld-secret")))


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 120) -> T:
    """The first truthy value of `probe`, polled until the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def cluster_path(namespace: str, *, status: bool = False) -> str:
    return f"/apis/postgresql.cnpg.io/v1/namespaces/{namespace}/clusters/{names.CLUSTER}" + ("/status" if status else "")


def merge(testbed: Testbed, path: str, body: dict[str, Any]) -> Any:
    """A merge patch as admin (another field manager than the agent's): a hand edit."""
    return testbed.request("PATCH", path, body=body, content_type="application/merge-patch+json")


def healthy_status(*, instances: int, secret_version: str | None = None, ips: tuple[str, ...] = ()) -> dict[str, Any]:
    """A status as CNPG writes it for a healthy cluster (pg-1 primary)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {
        "phase": "Cluster in healthy state", "phaseReason": "", "instances": instances, "readyInstances": instances,
        "currentPrimary": "pg-1", "targetPrimary": "pg-1",
        "instanceNames": [f"pg-{i}" for i in range(1, instances + 1)],
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                        "lastTransitionTime": now}],
    }
    if ips:
        status["instancesReportedState"] = {f"pg-{i}": {"isPrimary": i == 1, "timeLineID": 1, "ip": ip}
                                            for i, ip in enumerate(ips, start=1)}
    if secret_version is not None:
        status["secretsResourceVersion"] = {"applicationSecretVersion": secret_version}
    return status


def observed(driver: CnpgDriver, cluster_id: str) -> Observation:
    observation = driver.observe(cluster_id)
    assert observation is not None
    return observation


def resource_version(kube: Kube, resource: Any, name: str, namespace: str | None = None) -> str:
    obj = kube.get(resource, name, namespace=namespace)
    assert obj is not None, f"{resource.plural}/{name} is missing"
    return obj["metadata"]["resourceVersion"]


def cluster_spec(kube: Kube, namespace: str) -> tuple[int, Any, Any]:
    """The Cluster's spec generation, spec and the agent's own managed-fields entry (its last apply's time)."""
    cluster = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert cluster is not None
    mine = [m for m in cluster["metadata"].get("managedFields") or [] if m.get("manager") == "orochi-agent"]
    return cluster["metadata"]["generation"], cluster["spec"], mine


# Manifests accepted by the real thing


def test_every_manifest_is_accepted_and_the_operator_creates_its_children(testbed: Testbed, kube: Kube,
                                                                          driver: CnpgDriver) -> None:
    cluster_id = new_id()
    state = desired(cluster_id, storage_tiers=tiers(), ip_allowlist=["203.0.113.0/24", "2001:db8::/32"])
    namespace = names.namespace(cluster_id)

    driver.apply(state)  # a webhook's refusal fails here, with its message

    stored = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert stored is not None and stored["spec"]["instances"] == 1 and stored["spec"]["imageName"] == IMAGE
    assert stored["metadata"]["annotations"][names.GENERATION] == "1"
    assert stored["spec"]["postgresql"]["parameters"]["shared_buffers"] == "512MB"
    assert stored["spec"]["postgresql"]["parameters"]["max_connections"] == "100"
    managers = {entry["manager"] for entry in stored["metadata"]["managedFields"] if entry["operation"] == "Apply"}
    assert managers == {"orochi-agent"}
    for resource, name in ((NETWORK_POLICIES, "default-deny"), (NETWORK_POLICIES, "allow-clients"),
                           (NETWORK_POLICIES, "allow-replication"), (NETWORK_POLICIES, "allow-operator"),
                           (NETWORK_POLICIES, "allow-metrics"), (SECRETS, names.APP_SECRET),
                           (SECRETS, names.TIERS_SECRET), (SERVICES, names.SERVICE)):
        obj = kube.get(resource, name, namespace=namespace)
        assert obj is not None, f"{resource.plural}/{name} was not created"
        assert obj["metadata"]["labels"][names.CLUSTER_LABEL] == cluster_id
    service = kube.get(SERVICES, names.SERVICE, namespace=namespace)
    assert service is not None and service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "2001:db8::/32"]
    assert kube.get(NAMESPACES, namespace)["metadata"]["annotations"][names.GENERATION] == "1"  # type: ignore[index]

    # The operator's children, labeled as the agent's too (inheritedMetadata).
    def child(path: str) -> Any:
        try:
            return testbed.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    rw = wait_for("Service pg-rw", lambda: child(f"/api/v1/namespaces/{namespace}/services/pg-rw"))
    assert rw["spec"]["selector"]["cnpg.io/instanceRole"] == "primary"
    pvc = wait_for("PVC pg-1", lambda: child(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/pg-1"))
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["spec"]["storageClassName"] == "do-block-storage"
    assert pvc["metadata"]["labels"][names.CLUSTER_LABEL] == cluster_id
    job = wait_for("Job pg-1-initdb", lambda: child(f"/apis/batch/v1/namespaces/{namespace}/jobs/pg-1-initdb"))
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Cluster"
    wait_for("PodDisruptionBudget pg-primary",
             lambda: child(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/pg-primary"))
    pod = wait_for("the initdb Pod", lambda: child(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3Dpg-1-initdb")["items"])[0]
    env = {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}
    assert env["OROCHI_COLD_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": names.TIERS_SECRET, "key": "cold-secret-access-key"}
    assert driver.clusters()[cluster_id] == 1
    driver.ping()
    driver.delete(cluster_id)


def test_a_no_op_apply_writes_nothing(kube: Kube, driver: CnpgDriver) -> None:
    cluster_id = new_id()
    state = desired(cluster_id)
    namespace = names.namespace(cluster_id)
    driver.apply(state)
    wait_for("the caches to show it", lambda: driver.observe(cluster_id))
    objects = [(NAMESPACES, namespace, None), (NETWORK_POLICIES, "default-deny", namespace),
               (SECRETS, names.APP_SECRET, namespace), (SERVICES, names.SERVICE, namespace)]
    before = [resource_version(kube, *o) for o in objects]
    generation = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)["metadata"]["generation"]  # type: ignore[index]
    calls = kube.calls()

    driver.apply(state)

    made = kube.calls() - calls
    # What the watch caches show as applied is not sent again; the policies and the Secret are applied (no-ops).
    assert made == {Call("patch", "networking.k8s.io", "networkpolicies", namespace): 5,
                    Call("patch", "", "secrets", namespace): 1}
    assert [resource_version(kube, *o) for o in objects] == before
    assert kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)["metadata"]["generation"] == generation  # type: ignore[index]
    driver.delete(cluster_id)


def test_scale_and_storage_growth_change_the_cluster_in_place(kube: Kube, driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    driver.apply(desired(cluster_id))
    first = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert first is not None

    driver.apply(desired(cluster_id, generation=2, instances=3, storage_gb=2, vcpu=2, memory_gb=4))

    second = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert second is not None
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert second["spec"]["instances"] == 3 and second["spec"]["storage"]["size"] == "2Gi"
    assert second["spec"]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert second["spec"]["postgresql"]["parameters"]["max_connections"] == "150"
    assert second["metadata"]["annotations"][names.GENERATION] == "2"
    assert driver.clusters()[cluster_id] == 2
    driver.delete(cluster_id)


def test_an_allow_list_change_touches_only_the_load_balancer(testbed: Testbed, kube: Kube,
                                                             driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    driver.apply(desired(cluster_id))
    # CNPG keeps writing the Cluster's status (moving its resourceVersion) while it works, even for a moment after
    # its reconcile is disabled; what the agent must leave alone is the spec and its own writes of the Cluster.
    merge(testbed, cluster_path(namespace), DISABLED)
    cluster_before = cluster_spec(kube, namespace)
    others = [(NETWORK_POLICIES, "allow-clients", namespace), (SECRETS, names.APP_SECRET, namespace)]
    others_before = [resource_version(kube, *o) for o in others]
    service_before = resource_version(kube, SERVICES, names.SERVICE, namespace)
    calls_before = kube.calls()

    driver.apply(desired(cluster_id, generation=2, ip_allowlist=["198.51.100.0/24"]))

    assert cluster_spec(kube, namespace) == cluster_before
    assert not [c for c in kube.calls() - calls_before if c.resource == "clusters" and c.verb in ("patch", "create")]
    assert [resource_version(kube, *o) for o in others] == others_before
    service = kube.get(SERVICES, names.SERVICE, namespace=namespace)
    assert service is not None and service["metadata"]["resourceVersion"] != service_before
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert driver.clusters()[cluster_id] == 2  # applied in full: the namespace records it

    driver.apply(desired(cluster_id, generation=3, ip_allowlist=[]))  # no list: open, the field goes

    service = kube.get(SERVICES, names.SERVICE, namespace=namespace)
    assert service is not None and "loadBalancerSourceRanges" not in service["spec"]
    assert cluster_spec(kube, namespace) == cluster_before
    merge(testbed, cluster_path(namespace), ENABLED)
    driver.delete(cluster_id)


# Status


def test_observe_reports_a_generation_only_once_cnpg_acted_on_it_then_ready_with_the_endpoint(
        testbed: Testbed, kube: Kube, driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    assert driver.observe(cluster_id) is None

    driver.apply(desired(cluster_id))
    # The real operator takes generation 1 up: it records the app Secret's version (the proof).
    first = wait_for("CNPG acting on generation 1", lambda: (o := driver.observe(cluster_id)) and o.generation == 1 and o)
    assert first.phase == "provisioning" and first.endpoint is None
    wait_for("CNPG's phase", lambda: "Setting up primary" in (observed(driver, cluster_id).message or ""))

    merge(testbed, cluster_path(namespace), DISABLED)  # CNPG does not take the next spec up
    driver.apply(desired(cluster_id, generation=2, instances=3))
    testbed.stop_operator()
    try:
        # Healthy for three instances, as CNPG writes it, but without the new Secret version: not acted on yet.
        merge(testbed, cluster_path(namespace, status=True), {"status": healthy_status(instances=3)})
        seen = wait_for("the healthy status in the cache", lambda: (o := driver.observe(cluster_id))
                        and o.phase == "ready" and o)
        assert seen.generation == 1
        assert seen.ready_instances == 3 and seen.primary == "pg-1" and seen.endpoint is None

        # CNPG's reconcile of generation 2 records the app Secret's current version: now it is observed.
        secret_version = resource_version(kube, SECRETS, names.APP_SECRET, namespace)
        merge(testbed, cluster_path(namespace, status=True),
              {"status": healthy_status(instances=3, secret_version=secret_version)})
        ready = wait_for("generation 2 observed", lambda: (o := driver.observe(cluster_id)) and o.generation == 2 and o)
        assert ready.phase == "ready" and ready.ready_instances == 3 and ready.message is None
        calls = kube.calls()
        assert observed(driver, cluster_id) == ready
        assert kube.calls() == calls  # observe reads the watch caches only
        assert ready.endpoint is None  # no load balancer address yet

        testbed.request("PATCH", f"/api/v1/namespaces/{namespace}/services/{names.SERVICE}/status",
                        body={"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}},
                        content_type="application/merge-patch+json")
        with_endpoint = wait_for("the endpoint", lambda: (o := driver.observe(cluster_id)) and o.endpoint and o)
        assert (with_endpoint.endpoint.host, with_endpoint.endpoint.port) == ("203.0.113.10", 5432)  # type: ignore[union-attr]
        assert with_endpoint.generation == 2 and with_endpoint.phase == "ready"

        # An allow-list change does not wait for CNPG: the Cluster is untouched.
        calls = kube.calls()
        driver.apply(desired(cluster_id, generation=3, instances=3, ip_allowlist=["198.51.100.0/24"]))
        assert not [c for c in kube.calls() - calls if c.resource == "clusters"]  # nor the webhooks, which are down
        assert wait_for("generation 3", lambda: (o := driver.observe(cluster_id)) and o.generation == 3 and o).phase == "ready"

        merge(testbed, cluster_path(namespace, status=True), {"status": {
            "phase": "Cluster is unrecoverable and needs manual intervention", "phaseReason": "PVC pg-2 lost"}})
        failed = wait_for("the failed phase", lambda: (o := driver.observe(cluster_id)) and o.phase == "failed" and o)
        assert "PVC pg-2 lost" in (failed.message or "")
    finally:
        testbed.start_operator()
    merge(testbed, cluster_path(namespace), ENABLED)
    driver.delete(cluster_id)


# Refusals and errors


def test_a_webhook_rejection_is_refused_with_the_webhooks_message(driver: CnpgDriver) -> None:
    cluster_id = new_id()
    driver.apply(desired(cluster_id, storage_gb=2))

    with pytest.raises(Refused) as latest:
        driver.apply(desired(cluster_id, generation=2, storage_gb=2, image="ghcr.io/cloudnative-pg/postgresql:latest"))
    with pytest.raises(Refused) as shrink:
        driver.apply(desired(cluster_id, generation=3, storage_gb=1))

    assert "denied the request" in latest.value.message
    assert "Can't use 'latest' as image tag" in latest.value.message
    assert "can't shrink existing storage from 2Gi to 1Gi" in shrink.value.message
    assert not latest.value.transient
    assert driver.clusters()[cluster_id] == 1  # a refused generation is not recorded as applied
    driver.delete(cluster_id)


def test_a_forbidden_call_is_a_lasting_error_naming_what_the_role_lacks(testbed: Testbed) -> None:
    testbed.request("POST", "/api/v1/namespaces/default/serviceaccounts", body={"metadata": {"name": "nobody"}})
    kubeconfig = testbed.service_account_kubeconfig(namespace="default", name="nobody")
    nobody = CnpgDriver(kube=Kube.from_config(str(kubeconfig)), attempts=1)

    with pytest.raises(DriverError) as raised:
        nobody.apply(desired(new_id()))

    assert not raised.value.transient
    assert "forbidden" in raised.value.message and "system:serviceaccount:default:nobody" in raised.value.message

    def readiness() -> str:
        try:
            nobody.ping()
        except DriverError as e:
            return e.message
        return ""

    assert "forbidden" in wait_for("the watches' refusal in ping()", lambda: "forbidden" in readiness() and readiness())
    nobody.close()


def test_an_unserved_version_or_reserved_owner_is_refused_before_any_call(kube: Kube, driver: CnpgDriver) -> None:
    calls = kube.calls()

    with pytest.raises(Refused, match="PostgreSQL 9 is not served"):
        driver.apply(desired(new_id(), postgres_version="9"))
    with pytest.raises(Refused, match="reserved"):
        driver.apply(desired(new_id(), owner="postgres"))

    assert kube.calls() == calls


# Delete and drift


def test_delete_is_true_only_once_the_namespace_is_gone(kube: Kube, driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    driver.apply(desired(cluster_id))

    assert driver.delete(cluster_id) is False
    assert kube.get(NAMESPACES, namespace) is not None  # terminating: the finalizers run
    wait_for("the namespace gone", lambda: driver.delete(cluster_id), timeout=120)

    assert kube.get(NAMESPACES, namespace) is None
    assert driver.delete(cluster_id) is True  # idempotent
    wait_for("the caches to forget it", lambda: cluster_id not in driver.clusters() and driver.observe(cluster_id) is None)


def test_objects_changed_or_deleted_by_hand_are_put_back_by_the_next_apply(testbed: Testbed, kube: Kube,
                                                                          driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    state = desired(cluster_id)
    driver.apply(state)
    merge(testbed, cluster_path(namespace), {"spec": {"instances": 2, "postgresql": {"parameters": {
        "max_connections": "20"}}}})
    merge(testbed, f"/api/v1/namespaces/{namespace}/services/{names.SERVICE}",
          {"spec": {"loadBalancerSourceRanges": ["0.0.0.0/0"]}})
    merge(testbed, f"/api/v1/namespaces/{namespace}/secrets/{names.APP_SECRET}",
          {"data": {"password": base64.b64encode(b"changed").decode()}})
    testbed.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/default-deny")
    testbed.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/allow-clients")
    driver.apply(state)
    testbed.request("PATCH", f"/api/v1/namespaces/{namespace}/services/{names.SERVICE}/status",
                    body={"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}},
                    content_type="application/merge-patch+json")
    wait_for("the endpoint", lambda: observed(driver, cluster_id).endpoint)
    testbed.request("DELETE", f"/api/v1/namespaces/{namespace}/services/{names.SERVICE}")
    testbed.request("DELETE", cluster_path(namespace))
    wait_for("the deletions in the watch caches", lambda: (o := observed(driver, cluster_id)).endpoint is None
             and "does not exist" in (o.message or ""))

    driver.apply(state)

    cluster = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert cluster is not None and cluster["spec"]["instances"] == 1
    assert cluster["spec"]["postgresql"]["parameters"]["max_connections"] == "100"
    assert cluster["metadata"]["annotations"][names.GENERATION] == "1"
    service = kube.get(SERVICES, names.SERVICE, namespace=namespace)
    assert service is not None and service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    secret = kube.get(SECRETS, names.APP_SECRET, namespace=namespace)
    assert secret is not None and base64.b64decode(secret["data"]["password"]) == b"pw-1-secret"
    assert kube.get(NETWORK_POLICIES, "default-deny", namespace=namespace) is not None
    assert kube.get(NETWORK_POLICIES, "allow-clients", namespace=namespace) is not None
    driver.delete(cluster_id)


def test_an_older_generation_than_the_one_applied_changes_nothing(kube: Kube, driver: CnpgDriver) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    driver.apply(desired(cluster_id, generation=2, instances=3))
    before = resource_version(kube, CLUSTERS, names.CLUSTER, namespace)

    driver.apply(desired(cluster_id, generation=1, instances=1))  # a stale desired state, late
    driver.apply(desired(cluster_id, generation=2, instances=3))  # a duplicate

    cluster = kube.get(CLUSTERS, names.CLUSTER, namespace=namespace)
    assert cluster is not None and cluster["spec"]["instances"] == 3
    assert cluster["metadata"]["annotations"][names.GENERATION] == "2"
    assert int(cluster["metadata"]["resourceVersion"]) >= int(before)
    assert driver.clusters()[cluster_id] == 2
    driver.delete(cluster_id)


# Metrics, from a served exporter text and a served metrics API


PRIMARY_EXPORTER = """\
# HELP cnpg_backends_total Number of backends
# TYPE cnpg_backends_total gauge
cnpg_backends_total{application_name="",datname="app",state="active",usename="app"} 3
cnpg_backends_total{application_name="psql",datname="app",state="idle",usename="app"} 4
cnpg_backends_total{application_name="cnpg-instance-manager",datname="postgres",state="idle",usename="postgres"} 2
cnpg_backends_total{application_name="pg-2",datname="",state="active",usename="streaming_replica"} 1
cnpg_backends_total{application_name="cnpg_metrics_exporter",datname="app",state="active",usename="cnpg_metrics_exporter"} 1
# HELP cnpg_backends_max_tx_duration_seconds Maximum duration of a transaction in seconds
# TYPE cnpg_backends_max_tx_duration_seconds gauge
cnpg_backends_max_tx_duration_seconds{application_name="",datname="app",state="active",usename="app"} 0.2
# HELP cnpg_collector_pg_wal Total size in bytes of WAL segments in the '/var/lib/postgresql/data/pgdata/pg_wal' directory  computed as (wal_segment_size * count)
# TYPE cnpg_collector_pg_wal gauge
cnpg_collector_pg_wal{value="count"} 4
cnpg_collector_pg_wal{value="keep"} 32
cnpg_collector_pg_wal{value="max"} 64
cnpg_collector_pg_wal{value="min"} 5
cnpg_collector_pg_wal{value="size"} 6.7108864e+07
cnpg_collector_pg_wal{value="volume_max"} 128
cnpg_collector_pg_wal{value="volume_size"} 1.073741824e+09
# HELP cnpg_collector_up 1 if PostgreSQL is up, 0 otherwise.
# TYPE cnpg_collector_up gauge
cnpg_collector_up{cluster="pg"} 1
# HELP cnpg_pg_database_size_bytes Disk space used by the database
# TYPE cnpg_pg_database_size_bytes gauge
cnpg_pg_database_size_bytes{datname="app"} 5.36870912e+08
cnpg_pg_database_size_bytes{datname="postgres"} 7.5e+06
# HELP cnpg_pg_replication_lag Replication lag behind primary in seconds
# TYPE cnpg_pg_replication_lag gauge
cnpg_pg_replication_lag 0
# HELP cnpg_pg_replication_in_recovery Whether the instance is in recovery
# TYPE cnpg_pg_replication_in_recovery gauge
cnpg_pg_replication_in_recovery 0
# HELP cnpg_pg_settings_setting Setting value
# TYPE cnpg_pg_settings_setting gauge
cnpg_pg_settings_setting{name="max_connections"} 100
cnpg_pg_settings_setting{name="shared_buffers"} 65536
# HELP cnpg_pg_stat_database_xact_commit Number of transactions in this database that have been committed
# TYPE cnpg_pg_stat_database_xact_commit counter
cnpg_pg_stat_database_xact_commit{datname="app"} {commits}
cnpg_pg_stat_database_xact_commit{datname="postgres"} 500
# HELP cnpg_pg_stat_database_xact_rollback Number of transactions in this database that have been rolled back
# TYPE cnpg_pg_stat_database_xact_rollback counter
cnpg_pg_stat_database_xact_rollback{datname="app"} 20
cnpg_pg_stat_database_xact_rollback{datname="postgres"} 0
"""
REPLICA_EXPORTER = """\
# HELP cnpg_backends_total Number of backends
# TYPE cnpg_backends_total gauge
cnpg_backends_total{application_name="",datname="app",state="active",usename="app"} 2
# HELP cnpg_pg_replication_lag Replication lag behind primary in seconds
# TYPE cnpg_pg_replication_lag gauge
cnpg_pg_replication_lag 2.5
# HELP cnpg_pg_replication_in_recovery Whether the instance is in recovery
# TYPE cnpg_pg_replication_in_recovery gauge
cnpg_pg_replication_in_recovery 1
# HELP cnpg_pg_settings_setting Setting value
# TYPE cnpg_pg_settings_setting gauge
cnpg_pg_settings_setting{name="max_connections"} 100
"""


class MetricsServer:
    """The instances' exporters (one address each, on one port) and metrics.k8s.io's PodMetrics, over HTTP."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.commits = 10_000
        self.selectors: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                host = self.server.server_address[0]
                url = urlparse(self.path)
                if url.path == "/metrics":
                    body = (PRIMARY_EXPORTER.replace("{commits}", str(owner.commits)) if host == "127.0.0.1"
                            else REPLICA_EXPORTER).encode()
                    kind = "text/plain; version=0.0.4; charset=utf-8"
                elif url.path == f"/apis/metrics.k8s.io/v1beta1/namespaces/{owner.namespace}/pods":
                    owner.selectors += parse_qs(url.query).get("labelSelector", [])
                    body, kind = json.dumps(owner.pod_metrics()).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.primary = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.primary.server_address[1]
        self.replica = ThreadingHTTPServer(("127.0.0.2", self.port), Handler)
        for server in (self.primary, self.replica):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def pod_metrics(self) -> dict[str, Any]:
        def pod(name: str, cpu: str, memory: str) -> dict[str, Any]:
            return {"metadata": {"name": name, "namespace": self.namespace,
                                 "labels": {"cnpg.io/cluster": names.CLUSTER, "cnpg.io/podRole": "instance"}},
                    "timestamp": "2026-12-01T12:00:00Z", "window": "10.5s",
                    "containers": [{"name": "postgres", "usage": {"cpu": cpu, "memory": memory}},
                                   {"name": "bootstrap-controller", "usage": {"cpu": "900m", "memory": "1900Mi"}}]}

        return {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                "items": [pod("pg-1", "250m", "512Mi"), pod("pg-2", "123456789n", "1048576Ki")]}

    def kubeconfig(self, directory: Path) -> Path:
        return write_kubeconfig(directory / "metrics.kubeconfig", f"http://127.0.0.1:{self.port}", "unused")

    def close(self) -> None:
        for server in (self.primary, self.replica):
            server.shutdown()
            server.server_close()


def write_kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}], "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def test_metrics_come_from_the_served_exporters_and_metrics_api(testbed: Testbed, kube: Kube, driver: CnpgDriver,
                                                                tmp_path: Path) -> None:
    cluster_id = new_id()
    namespace = names.namespace(cluster_id)
    driver.apply(desired(cluster_id, instances=2))
    merge(testbed, cluster_path(namespace), DISABLED)
    merge(testbed, cluster_path(namespace, status=True),
          {"status": healthy_status(instances=2, ips=("127.0.0.1", "127.0.0.2"))})
    served = MetricsServer(namespace)
    metrics_api = Kube.from_config(str(served.kubeconfig(tmp_path)))
    sampling = CnpgDriver(kube=kube, exporter_port=served.port, scrape=exporter_client.scrape,
                          pod_metrics=lambda ns, selector: metrics_api.list(POD_METRICS, namespace=ns,
                                                                            label_selector=selector)[0])
    try:
        wait_for("the reported instances", lambda: observed(sampling, cluster_id).primary == "pg-1")

        first_started = time.monotonic()
        first = sampling.metrics(cluster_id)
        first_done = time.monotonic()
        served.commits += 300
        wait_for("a measurable interval", lambda: time.monotonic() - first_done > 0.05)
        second_started = time.monotonic()
        second = sampling.metrics(cluster_id)
        second_done = time.monotonic()
    finally:
        sampling.close()
        metrics_api.close()
        served.close()

    assert first is not None and second is not None
    assert first.connections == 7  # the app's sessions on the primary, not CNPG's own
    assert first.max_connections == 100
    assert first.database_size_gb == pytest.approx(0.5)
    assert first.storage_used_gb == pytest.approx((536870912 + 7.5e6 + 67108864) / 2**30)
    assert first.storage_used_percent == pytest.approx(100 * (536870912 + 7.5e6 + 67108864) / 2**30)
    assert first.replication_lag_seconds == pytest.approx(2.5)
    assert first.cpu_percent == pytest.approx(25.0)  # pg-1's 250m of its 1 vCPU
    assert first.memory_percent == pytest.approx(50.0)  # pg-2's 1 GiB of its 2 GiB
    assert first.transactions_per_second is None  # a rate needs two samples
    assert second.transactions_per_second is not None
    assert 300 / (second_done - first_started) <= second.transactions_per_second <= 300 / (
        second_started - first_done)
    assert served.selectors == [f"cnpg.io/cluster={names.CLUSTER}"] * 2
    assert driver.metrics(cluster_id) is None  # nothing answers on 9187 and this API server has no metrics.k8s.io
    merge(testbed, cluster_path(namespace), ENABLED)
    driver.delete(cluster_id)


# Faults, from a proxy in front of the API server


@dataclass
class Fault:
    method: str
    path: str
    """A part of the request's path and query."""
    status: int | None = None
    delay: float = 0.0
    times: int = 1
    cut_watch_after: int | None = None
    """Forward this many watch events, then cut the connection."""
    expire_watch: bool = False
    """Answer the watch with an ERROR event 410 Expired, as the API server does for a compacted version."""


class FaultProxy:
    """Plain HTTP on loopback in front of the test bed's API server, passing the caller's token through."""

    def __init__(self, testbed: Testbed) -> None:
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        context = ssl.create_default_context(cafile=str(testbed.ca_file))
        owner, upstream_port = self, testbed.apiserver_port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = owner.take(self.command, self.path)
                watch = "watch=true" in self.path
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and fault.status is not None:
                    self.answer(fault.status, json.dumps({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault.status,
                        "message": f"injected {fault.status}", "reason": "Injected"}).encode())
                    return
                if fault is not None and fault.expire_watch and watch:
                    self.stream([json.dumps({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
                        "message": "too old resource version"}}).encode() + b"\n"])
                    return
                upstream = http.client.HTTPSConnection("127.0.0.1", upstream_port, context=context, timeout=600)
                headers = {k: v for k in ("Authorization", "Content-Type", "Accept") if (v := self.headers.get(k))}
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    if not watch or response.status != 200:
                        self.answer(response.status, response.read(), response.getheader("Content-Type"))
                        return
                    self.stream(iter(response.readline, b""), cut_after=fault.cut_watch_after if fault else None)
                finally:
                    upstream.close()

            def answer(self, status: int, body: bytes, kind: str | None = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def stream(self, lines: Any, *, cut_after: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for count, line in enumerate(lines, start=1):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    if cut_after is not None and count >= cut_after:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)  # mid-stream: no last chunk
                        return
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward  # noqa: N815 - http.server's names

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def add(self, **fault: Any) -> None:
        with self._lock:
            self.faults.append(Fault(**fault))

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path in path:
                    fault.times -= 1
                    return fault
        return None

    def left(self) -> list[Fault]:
        with self._lock:
            return [f for f in self.faults if f.times > 0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(testbed: Testbed) -> Iterator[FaultProxy]:
    faults = FaultProxy(testbed)
    yield faults
    faults.close()


def proxied(testbed: Testbed, proxy: FaultProxy, directory: Path, *, timeout: float = 30.0) -> Kube:
    kubeconfig = write_kubeconfig(directory / "proxy.kubeconfig", f"http://127.0.0.1:{proxy.port}",
                                  testbed.admin_token)
    return Kube.from_config(str(kubeconfig), timeout=timeout)


def test_conflicts_throttles_server_errors_and_timeouts_are_retried(testbed: Testbed, proxy: FaultProxy,
                                                                    tmp_path: Path) -> None:
    cluster_id = new_id()
    kube = proxied(testbed, proxy, tmp_path, timeout=5.0)  # well above any real answer of a loaded apiserver
    flaky = CnpgDriver(kube=kube, retry_base=0.05, attempts=4)
    proxy.add(method="PATCH", path="/namespaces/orochi-", status=503)
    proxy.add(method="PATCH", path="/clusters/pg?", status=409)
    proxy.add(method="PATCH", path="/clusters/pg?", status=500)
    proxy.add(method="PATCH", path=f"/secrets/{names.APP_SECRET}?", status=429)
    proxy.add(method="PATCH", path=f"/services/{names.SERVICE}?", delay=6.0)  # longer than the client waits
    try:
        flaky.apply(desired(cluster_id))

        assert proxy.left() == []
        calls = kube.calls()
        namespace = names.namespace(cluster_id)
        assert calls[Call("patch", "postgresql.cnpg.io", "clusters", namespace)] == 3
        assert calls[Call("patch", "", "services", namespace)] == 2

        proxy.add(method="PATCH", path="/networkpolicies/", status=504, times=4)
        with pytest.raises(DriverError) as raised:
            flaky.apply(desired(cluster_id, generation=2, instances=2))
        assert raised.value.transient and "injected 504" in raised.value.message
        assert flaky.clusters()[cluster_id] == 1
    finally:
        flaky.close()
        kube.close()
    CnpgDriver(kube=Kube.from_config(str(testbed.admin_kubeconfig))).delete(cluster_id)


def test_a_dropped_watch_resumes_from_its_last_version_and_an_expired_one_relists(testbed: Testbed,
                                                                                   proxy: FaultProxy,
                                                                                   tmp_path: Path) -> None:
    label = f"orochi-test-watch={secrets.token_hex(4)}"
    key, value = label.split("=")

    def create(name: str) -> str:
        made = testbed.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": {key: value}}})
        return made["metadata"]["resourceVersion"]

    kube = proxied(testbed, proxy, tmp_path)
    proxy.add(method="GET", path="watch=true", cut_watch_after=1)
    cache = Cache(kube=kube, resource=NAMESPACES, label_selector=label, watch_seconds=2, retry_base=0.05)
    cache.start()
    try:
        assert cache.wait_synced(30) and cache.objects() == []
        first = create(f"w-{value}-a")
        wait_for("the first namespace", lambda: cache.get(None, f"w-{value}-a"))
        wait_for("the cut watch to be re-established", lambda: cache.watches >= 2)
        create(f"w-{value}-b")
        wait_for("the second namespace", lambda: cache.get(None, f"w-{value}-b"))
        assert cache.lists == 1
        watches = [parse_qs(urlparse(path).query) for method, path in proxy.requests if "watch=true" in path]
        assert watches[1]["resourceVersion"] == [first]  # from the last version it saw, not from the start

        proxy.add(method="GET", path="watch=true", expire_watch=True)
        wait_for("a relist after 410 Gone", lambda: cache.lists == 2)
        create(f"w-{value}-c")
        wait_for("the third namespace", lambda: cache.get(None, f"w-{value}-c"))
        assert {o["metadata"]["name"] for o in cache.objects()} == {f"w-{value}-{s}" for s in "abc"}
        assert cache.problem is None
    finally:
        cache.stop()
        kube.close()
    for suffix in "abc":
        testbed.request("DELETE", f"/api/v1/namespaces/w-{value}-{suffix}")


# The client's lease calls (leader election)


def test_lease_calls_create_once_and_replace_only_the_current_version(kube: Kube) -> None:
    name = f"agent-{secrets.token_hex(4)}"
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}}
    assert kube.get_lease("default", name) is None

    created = kube.create_lease("default", body)
    with pytest.raises(KubeError) as taken:
        kube.create_lease("default", {**body, "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15}})
    renewed = kube.replace_lease("default", name, {**created, "spec": {**created["spec"], "leaseTransitions": 1}})
    with pytest.raises(KubeError) as stale:
        kube.replace_lease("default", name, {**created, "spec": {**created["spec"], "holderIdentity": "replica-b"}})

    assert (taken.value.status, taken.value.reason) == (409, "AlreadyExists")
    assert (stale.value.status, stale.value.reason, stale.value.retryable) == (409, "Conflict", True)
    assert renewed["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert kube.get_lease("default", name)["spec"]["holderIdentity"] == "replica-a"  # type: ignore[index]
    assert {c.verb for c in kube.calls() if c.resource == "leases"} == {"get", "create", "update"}
