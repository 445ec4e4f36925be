"""The Kubernetes test bed: a real kube-apiserver v1.37.2, controller-manager and the real CNPG operator v1.30.0.

The first run builds the binaries from Go modules (~10 minutes on 2 cores, cached outside the work tree
after that); a failed build fails these tests with its output.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException

from devstack.kube.testbed import Testbed

T = TypeVar("T")
GROUP, VERSION, PLURAL = "postgresql.cnpg.io", "v1", "clusters"
IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.0"


@pytest.fixture(scope="module")
def api(testbed: Testbed) -> Iterator[ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(testbed.admin_kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(api: ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def cluster(name: str, *, image: str = IMAGE) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"instances": 1, "imageName": image, "storage": {"size": "1Gi"}}}


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 120) -> T:
    """The first truthy value of `probe`; a 404 counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := probe():
                return value
        except ApiException as e:
            if e.status != 404:
                raise
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def status_of(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def test_apiserver_answers_with_version_1_37_2(api: ApiClient) -> None:
    assert kubernetes.client.VersionApi(api).get_code().git_version == "v1.37.2"


def test_operator_creates_services_pvc_and_initdb_job_for_a_new_cluster(api: ApiClient, namespace: str) -> None:
    objects = kubernetes.client.CustomObjectsApi(api)
    core, batch = kubernetes.client.CoreV1Api(api), kubernetes.client.BatchV1Api(api)

    created = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, cluster("pg"))

    assert created["spec"]["imageName"] == IMAGE
    assert created["spec"]["postgresql"]["parameters"]  # defaulted by the mutating webhook
    service = wait_for("Service pg-rw", lambda: core.read_namespaced_service("pg-rw", namespace))
    assert service.spec.selector["cnpg.io/instanceRole"] == "primary"
    pvc = wait_for("PVC pg-1", lambda: core.read_namespaced_persistent_volume_claim("pg-1", namespace))
    assert pvc.spec.resources.requests["storage"] == "1Gi"
    job = wait_for("Job pg-1-initdb", lambda: batch.read_namespaced_job("pg-1-initdb", namespace))
    assert job.metadata.owner_references[0].kind == "Cluster"
    phase = wait_for("a phase", lambda: objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "pg").get("status", {}).get("phase"))
    assert phase != "Cluster in healthy state"  # no kubelet: the initdb Pod never runs


def test_webhook_rejects_the_latest_image_tag(api: ApiClient, namespace: str) -> None:
    objects = kubernetes.client.CustomObjectsApi(api)

    with pytest.raises(ApiException) as raised:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                cluster("pg", image="ghcr.io/cloudnative-pg/postgresql:latest"))

    assert raised.value.status == 422
    assert "denied the request" in raised.value.body
    assert "Can't use 'latest' as image tag" in raised.value.body


def test_service_account_allowed_only_get_on_clusters_is_forbidden_to_list(testbed: Testbed, api: ApiClient,
                                                                            namespace: str) -> None:
    core, rbac = kubernetes.client.CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "get-clusters"}, "rules": [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader-gets-clusters"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-clusters"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    kubeconfig = testbed.service_account_kubeconfig(namespace=namespace, name="reader")

    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as reader:
        objects = kubernetes.client.CustomObjectsApi(reader)
        get = lambda: objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "absent")  # noqa: E731
        wait_for("the binding to apply", lambda: status_of(get) == 404)  # allowed, nothing there
        with pytest.raises(ApiException) as raised:
            objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)

    assert raised.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in raised.value.body


def test_namespace_deletion_completes(api: ApiClient, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "leftover"}})
    wait_for("the default ServiceAccount", lambda: core.read_namespaced_service_account("default", namespace))

    core.delete_namespace(namespace)

    wait_for(f"namespace {namespace} gone", lambda: status_of(lambda: core.read_namespace(namespace)) == 404)


def test_status_written_with_the_operator_stopped_is_kept(testbed: Testbed, api: ApiClient, namespace: str) -> None:
    objects = kubernetes.client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, cluster("pg"))
    testbed.stop_operator()
    try:
        objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "pg", {"status": {
            "phase": "Cluster in healthy state", "readyInstances": 1, "instances": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})

        status = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pg")["status"]
        assert status["phase"] == "Cluster in healthy state"
        assert status["conditions"][0]["status"] == "True"
        # The webhooks fail closed while the operator is down.
        assert status_of(lambda: objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, cluster("other"))) == 500
    finally:
        testbed.start_operator()

    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, cluster("other"))
