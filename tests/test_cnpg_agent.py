"""The whole agent with its `cnpg` driver, for real: API → queue → `orochi-agent` processes → a real kube-apiserver
v1.37 with the real CNPG v1.30 operator and its webhooks (devstack/kube) → status back through the API.

`kube-agent/deploy` is rendered with kustomize and applied as it is, and the agents run as its ServiceAccount
(a TokenRequest token): RBAC and the admission policy apply to every call they make. Only the public API acts on
clusters; Kubernetes is read (and, for faults and CNPG's side, written) as admin. There is no kubelet, so a
Cluster never gets healthy by itself: with the operator stopped, a test writes the status CNPG writes for a
healthy cluster, with its proof of having acted on the spec (`status.secretsResourceVersion.
applicationSecretVersion` = the app Secret's resourceVersion, see orochi_agent/drivers/cnpg/status.py), and the
load balancer's address. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from conftest import ROOT, Account, Stack, cluster_path, new_stack, until
from kube_agent import AGENT_NAMESPACE, KubeAgent
from kubernetes.client import ApiException

from devstack.kube.testbed import ApiError, Testbed
from orochi_agent.drivers.cnpg import names

REGION = "nyc1"
IMAGE_17 = "ghcr.io/cloudnative-pg/postgresql:17.6"
LATEST_18 = "ghcr.io/cloudnative-pg/postgresql:latest"  # the catalog's 18, which CNPG's webhook rejects
LEASE = f"orochi-agent-{REGION}"
LEASE_SECONDS = 5
"""The replicas' lease duration (the shortest the agent takes)."""
FIELD_MANAGER = "orochi-deploy-test"
MERGE = "application/merge-patch+json"
PLURALS = {
    "Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps",
    "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
    "RoleBinding": "rolebindings", "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings", "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
}
POLICY_MESSAGE = "the orochi agent may only change namespaces it manages, and what is inside them"
COLD = {"endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "acme-cold", "region": "eu-west-1",
        "prefix": "orders/", "access_key_id": "AKIACOLD", "secret_access_key": "c0ld-secret-key"}


# The test bed, the deploy manifests, the API


@pytest.fixture(scope="module")
def bed(testbed: Testbed) -> Testbed:
    return testbed


@dataclass(frozen=True)
class Deployed:
    objects: list[dict[str, Any]]
    """`kustomize build kube-agent/deploy`, as applied."""
    kubeconfig: Path
    """The ServiceAccount orochi-agent/orochi-agent's, with a TokenRequest token."""
    token: str


def object_path(obj: dict[str, Any]) -> str:
    api_version, metadata = obj["apiVersion"], obj["metadata"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    where = f"/namespaces/{metadata['namespace']}" if "namespace" in metadata else ""
    return f"{base}{where}/{PLURALS[obj['kind']]}/{metadata['name']}"


@pytest.fixture(scope="module")
def deployed(bed: Testbed) -> Deployed:
    rendered = subprocess.run([str(bed.binaries.kustomize), "build", str(ROOT / "kube-agent" / "deploy")],
                              capture_output=True, text=True, check=True).stdout
    objects = [obj for obj in yaml.safe_load_all(rendered) if obj]
    for obj in objects:  # server-side apply as admin; an unknown field is a 400, not silently pruned
        bed.request("PATCH", f"{object_path(obj)}?fieldManager={FIELD_MANAGER}&force=true&fieldValidation=Strict",
                    body=obj, content_type="application/apply-patch+yaml")
    kubeconfig = bed.service_account_kubeconfig(namespace=AGENT_NAMESPACE, name="orochi-agent")
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]

    def policy_in_force() -> bool:  # RBAC grants it, so only the admission policy can refuse it
        try:
            bed.request("POST", "/api/v1/namespaces/default/secrets?dryRun=All", token=token,
                        body={"metadata": {"name": "policy-probe"}, "stringData": {"k": "v"}})
        except ApiError as e:
            return POLICY_MESSAGE in e.body
        return False

    until(policy_in_force, timeout=120, what="the admission policy to be in force for the agent's ServiceAccount")
    return Deployed(objects=objects, kubeconfig=kubeconfig, token=token)


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """The API, with a catalog whose PostgreSQL 18 is an image CNPG's webhook rejects."""
    api = new_stack(stack_env, POSTGRES_IMAGES=f"17={IMAGE_17},18={LATEST_18}")
    yield api
    api.close()


@pytest.fixture(scope="module")
def agent(stack: Stack, deployed: Deployed) -> Iterator[KubeAgent]:
    """The region's one agent for the first flows: resyncs every 2 s, samples every 1 s. Its retries back off up to
    5 s, so the five receives of a delete job outlast a namespace's deletion here (see the deletion test below)."""
    main = KubeAgent(stack, kubeconfig=deployed.kubeconfig, pod="orochi-agent-main",
                     OROCHI_RESYNC_INTERVAL_SECONDS="2", OROCHI_RETRY_MAX_SECONDS="5")
    main.start()
    yield main
    if main.running:
        main.stop(signal.SIGKILL)


# Kubernetes, read and written as admin


def get(bed: Testbed, path: str) -> Any:
    """The object at `path` as admin; None on 404."""
    try:
        return bed.request("GET", path)
    except ApiError as e:
        if e.status == 404:
            return None
        raise


def merge(bed: Testbed, path: str, body: dict[str, Any]) -> Any:
    return bed.request("PATCH", path, body=body, content_type=MERGE)


def cnpg_cluster(namespace: str, *, status: bool = False) -> str:
    return f"/apis/postgresql.cnpg.io/v1/namespaces/{namespace}/clusters/{names.CLUSTER}" + ("/status" if status else "")


def core(namespace: str, plural: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}/{name}"


def applied(bed: Testbed, namespace: str, generation: int) -> bool:
    """Whether the agent applied `generation` in full (the namespace's annotation is its last write)."""
    found = get(bed, f"/api/v1/namespaces/{namespace}")
    return bool(found) and found["metadata"].get("annotations", {}).get(names.GENERATION) == str(generation)


def write_healthy_status(bed: Testbed, namespace: str, *, instances: int) -> None:
    """The status CNPG writes for a healthy cluster, recording the app Secret's current resourceVersion (what
    CNPG's reconcile records before it acts on the spec: the agent's proof)."""
    secret = bed.request("GET", core(namespace, "secrets", names.APP_SECRET))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    merge(bed, cnpg_cluster(namespace, status=True), {"status": {
        "phase": "Cluster in healthy state", "phaseReason": "", "instances": instances, "readyInstances": instances,
        "currentPrimary": "pg-1", "targetPrimary": "pg-1", "instanceNames": [f"pg-{i}" for i in range(1, instances + 1)],
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                        "lastTransitionTime": now}],
        "secretsResourceVersion": {"applicationSecretVersion": secret["metadata"]["resourceVersion"]}}})


def give_load_balancer_address(bed: Testbed, namespace: str, ip: str) -> None:
    merge(bed, core(namespace, "services", names.SERVICE) + "/status",
          {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})


@contextmanager
def operator_stopped(bed: Testbed) -> Iterator[None]:
    """The CNPG operator down (it would overwrite the status a test writes); up again afterwards."""
    bed.stop_operator()
    try:
        yield
    finally:
        bed.start_operator()


def lease(bed: Testbed) -> dict[str, Any] | None:
    return get(bed, f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NAMESPACE}/leases/{LEASE}")


def stop_cleanly(bed: Testbed, agent: KubeAgent) -> None:
    """SIGTERM: the agent drains, exits 0 and gives its lease up (expired at once), so the next one leads at once."""
    assert agent.stop() == 0
    given_up = lease(bed)
    assert given_up is not None and given_up["spec"]["holderIdentity"] == agent.pod
    renewed = datetime.datetime.strptime(given_up["spec"]["renewTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    expires = renewed + datetime.timedelta(seconds=given_up["spec"]["leaseDurationSeconds"])
    assert expires < datetime.datetime.now(datetime.UTC), f"{agent.pod} did not give its lease up"


# The API



def mutate(stack: Stack, account: Account, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = stack.call(method, path, token=account.access_token, json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def send_job(stack: Stack, account: Account, cluster_id: str, *, generation: int, dedup: str) -> None:
    """A job message straight onto the region's queue, as the API would send it (a hint: no desired state)."""
    job = {"v": 1, "kind": "reconcile", "cluster_id": cluster_id, "org_id": account.org_id, "region": REGION,
           "generation": generation, "enqueued_at": int(time.time())}
    stack.sqs().send_message(QueueUrl=stack.queue_url(REGION), MessageGroupId=cluster_id,
                             MessageDeduplicationId=f"{cluster_id}:{dedup}", MessageBody=json.dumps(job))


# The manifests


def test_the_deploy_manifests_are_accepted_and_the_deployments_pods_pass_the_restricted_pod_security(
        bed: Testbed, deployed: Deployed) -> None:
    assert sorted(o["kind"] for o in deployed.objects) == sorted([
        "Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Deployment", "PodDisruptionBudget"])
    selector = "labelSelector=app.kubernetes.io%2Fname%3Dorochi-agent"

    def pods() -> list[dict[str, Any]] | None:
        found = bed.request("GET", f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods?{selector}")["items"]
        return found if len(found) == 2 else None

    try:  # no kubelet: the pods stay Pending, but they were admitted in a namespace enforcing `restricted`
        admitted = until(pods, timeout=120, what="the Deployment's 2 pods")
    except AssertionError:
        sets = bed.request("GET", f"/apis/apps/v1/namespaces/{AGENT_NAMESPACE}/replicasets?{selector}")["items"]
        pytest.fail(f"the Deployment's pods were not created: {[s.get('status') for s in sets]}")
    assert {p["spec"]["serviceAccountName"] for p in admitted} == {"orochi-agent"}
    config = next(o for o in deployed.objects if o["kind"] == "ConfigMap")
    assert admitted[0]["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    namespace = bed.request("GET", f"/api/v1/namespaces/{AGENT_NAMESPACE}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# The whole loop, through the public API


def test_a_cluster_is_applied_runs_changes_in_place_and_is_deleted_through_the_api(
        bed: Testbed, stack: Stack, agent: KubeAgent) -> None:
    owner = stack.register()
    created = mutate(stack, owner, "POST", f"/v1/orgs/{owner.org_id}/clusters", {
        "name": f"pg-{uuid.uuid4().hex[:8]}", "region": REGION, "postgres_version": "17", "size": "db-s-1vcpu-2gb",
        "instances": 1, "storage_gb": 10, "ip_allowlist": ["203.0.113.0/24"], "storage_tiers": {"cold": COLD}})
    cluster_id = created["cluster"]["id"]
    path = cluster_path(owner.org_id, cluster_id)
    namespace = names.namespace(cluster_id)

    cluster = until(lambda: get(bed, cnpg_cluster(namespace)), what="the CNPG Cluster")
    assert {k: cluster["metadata"]["labels"].get(k) for k in (names.MANAGED_BY, names.CLUSTER_LABEL, names.ORG_LABEL)} \
        == {names.MANAGED_BY: "orochi-agent", names.CLUSTER_LABEL: cluster_id, names.ORG_LABEL: owner.org_id}
    assert cluster["spec"]["instances"] == 1 and cluster["spec"]["imageName"] == IMAGE_17
    assert cluster["spec"]["storage"]["size"] == "10Gi"
    uid = cluster["metadata"]["uid"]
    # The real operator's children.
    assert until(lambda: get(bed, core(namespace, "services", "pg-rw")), what="Service pg-rw")["spec"]["selector"][
        "cnpg.io/instanceRole"] == "primary"
    pvc = until(lambda: get(bed, core(namespace, "persistentvolumeclaims", "pg-1")), what="PVC pg-1")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    job = until(lambda: get(bed, f"/apis/batch/v1/namespaces/{namespace}/jobs/pg-1-initdb"), what="Job pg-1-initdb")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Cluster"
    until(lambda: applied(bed, namespace, 1), what="generation 1 applied in full")
    assert get(bed, core(namespace, "secrets", names.TIERS_SECRET)) is not None
    assert stack.find_cluster(owner, cluster_id)["status"] == "provisioning"  # type: ignore[index]

    with operator_stopped(bed):
        write_healthy_status(bed, namespace, instances=1)
        give_load_balancer_address(bed, namespace, "203.0.113.10")
        running = stack.until_status(owner, cluster_id, "running", ready=1)
        until(lambda: (c := stack.find_cluster(owner, cluster_id)) and c.get("endpoint") and c, what="the endpoint")
    running = stack.find_cluster(owner, cluster_id)
    assert running is not None and running["endpoint"] == {"host": "203.0.113.10", "port": 5432}
    assert running["observed_generation"] == running["generation"] == 1

    # Storage tiers removed: the Cluster no longer takes variables from their Secret, and the Secret goes.
    mutate(stack, owner, "PATCH", path, {"storage_tiers": None})
    until(lambda: get(bed, core(namespace, "secrets", names.TIERS_SECRET)) is None, what="the tiers Secret gone")
    # Scale: the same Cluster, changed in place.
    generation = mutate(stack, owner, "POST", path + "/scale", {"instances": 3})["cluster"]["generation"]
    until(lambda: applied(bed, namespace, generation), what=f"generation {generation} applied in full")
    scaled = bed.request("GET", cnpg_cluster(namespace))
    assert scaled["metadata"]["uid"] == uid and scaled["spec"]["instances"] == 3
    assert not [e for e in scaled["spec"].get("env", []) if "valueFrom" in e]
    assert stack.find_cluster(owner, cluster_id)["status"] != "running"  # type: ignore[index]
    with operator_stopped(bed):
        write_healthy_status(bed, namespace, instances=3)
        running = stack.until_status(owner, cluster_id, "running", ready=3)
    assert running["observed_generation"] == running["generation"] == generation
    assert running["instances"] == 3 and running["endpoint"] == {"host": "203.0.113.10", "port": 5432}

    mutate(stack, owner, "DELETE", path)
    until(lambda: get(bed, f"/api/v1/namespaces/{namespace}") is None, timeout=120, what="the namespace gone")
    until(lambda: stack.find_cluster(owner, cluster_id) is None, what="the cluster deleted in the API")


# Duplicates, stale jobs, drift


@dataclass(frozen=True)
class Settled:
    owner: Account
    cluster_id: str
    namespace: str
    generation: int


@pytest.fixture(scope="module")
def settled(bed: Testbed, stack: Stack, agent: KubeAgent) -> Settled:
    """A cluster created with 1 instance and scaled to 2: at generation 2, applied in full."""
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="17", instances=1, storage_gb=10)["cluster"]["id"]
    namespace = names.namespace(cluster_id)
    until(lambda: applied(bed, namespace, 1), what="generation 1 applied")
    generation = mutate(stack, owner, "POST", cluster_path(owner.org_id, cluster_id) + "/scale",
                        {"instances": 2})["cluster"]["generation"]
    until(lambda: applied(bed, namespace, generation), what=f"generation {generation} applied")
    return Settled(owner=owner, cluster_id=cluster_id, namespace=namespace, generation=generation)


def test_a_duplicate_and_a_stale_job_change_nothing_in_kubernetes_or_in_the_api(
        bed: Testbed, stack: Stack, agent: KubeAgent, settled: Settled) -> None:
    owner, cluster_id, namespace = settled.owner, settled.cluster_id, settled.namespace
    objects = [f"/api/v1/namespaces/{namespace}", cnpg_cluster(namespace), core(namespace, "services", names.SERVICE),
               core(namespace, "secrets", names.APP_SECRET)]
    with operator_stopped(bed):  # nothing else moves the Cluster meanwhile
        write_healthy_status(bed, namespace, instances=2)
        stack.until_status(owner, cluster_id, "running", ready=2)
        before = stack.find_cluster(owner, cluster_id)
        versions = [bed.request("GET", o)["metadata"]["resourceVersion"] for o in objects]
        calls, done = agent.kube_calls(), agent.metric("orochi_agent_jobs_processed_total", outcome="applied")

        send_job(stack, owner, cluster_id, generation=settled.generation, dedup="duplicate")
        send_job(stack, owner, cluster_id, generation=1, dedup="stale")
        until(lambda: agent.metric("orochi_agent_jobs_processed_total", outcome="applied") >= done + 2,
              what="both jobs processed")

        assert [bed.request("GET", o)["metadata"]["resourceVersion"] for o in objects] == versions
        assert stack.find_cluster(owner, cluster_id) == before
        made = agent.kube_calls() - calls
        assert not [c for c in made if c.resource == "clusters" and c.verb != "watch"]  # the Cluster is not even sent
    assert before is not None and before["generation"] == before["observed_generation"] == settled.generation


def test_a_load_balancer_deleted_and_instances_changed_by_hand_are_put_back_by_the_next_resync(
        bed: Testbed, agent: KubeAgent, settled: Settled) -> None:
    namespace = settled.namespace
    uid = bed.request("GET", cnpg_cluster(namespace))["metadata"]["uid"]
    resyncs = agent.log_text().count('"message": "resync"')

    bed.request("DELETE", core(namespace, "services", names.SERVICE))
    merge(bed, cnpg_cluster(namespace), {"spec": {"instances": 1}})

    until(lambda: get(bed, core(namespace, "services", names.SERVICE)), what="the load balancer Service back")
    until(lambda: bed.request("GET", cnpg_cluster(namespace))["spec"]["instances"] == 2, what="2 instances again")
    service = bed.request("GET", core(namespace, "services", names.SERVICE))
    assert service["spec"]["type"] == "LoadBalancer" and service["metadata"]["labels"][names.CLUSTER_LABEL] == \
        settled.cluster_id
    assert bed.request("GET", cnpg_cluster(namespace))["metadata"]["uid"] == uid
    assert agent.log_text().count('"message": "resync"') > resyncs  # no job: the resync put them back


# A desired state the webhook rejects


def test_a_desired_state_the_webhook_rejects_fails_the_cluster_with_the_webhooks_message(
        bed: Testbed, stack: Stack, agent: KubeAgent) -> None:
    owner = stack.register()
    created = stack.create_cluster(owner, postgres_version="18", instances=1, storage_gb=10)
    cluster_id = created["cluster"]["id"]

    failed = stack.until_status(owner, cluster_id, "failed")

    assert "denied the request" in failed["status_message"]
    assert "Can't use 'latest' as image tag" in failed["status_message"]
    operation = stack.call("GET", cluster_path(owner.org_id, cluster_id) + f"/operations/{created['operation']['id']}",
                           token=owner.access_token).json()
    assert operation["status"] == "failed" and "Can't use 'latest' as image tag" in operation["error"]
    assert get(bed, cnpg_cluster(names.namespace(cluster_id))) is None
    mutate(stack, owner, "DELETE", cluster_path(owner.org_id, cluster_id))
    until(lambda: stack.find_cluster(owner, cluster_id) is None, timeout=120, what="the failed cluster deleted")


# RBAC, both ways, and the admission policy


def granted_calls(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(verb, group, resource) for obj in objects if obj["kind"] in ("ClusterRole", "Role")
            for rule in obj["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_the_agent_made_exactly_the_calls_its_roles_grant_and_none_was_refused(
        bed: Testbed, deployed: Deployed, agent: KubeAgent) -> None:
    calls = agent.kube_calls()
    made = {(c.verb, c.group, c.resource) for c in calls}
    granted = granted_calls(deployed.objects)

    assert made - granted == set(), "called without a grant"
    assert granted - made == set(), "granted but never called"
    # The Role grants the Lease in the agent's namespace only; everything else is the ClusterRole's.
    assert {c.scope for c in calls if c.resource == "leases"} == {"namespace"}
    role = next(o for o in deployed.objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == AGENT_NAMESPACE and role["rules"][0]["resources"] == ["leases"]

    # The testbed serves no metrics.k8s.io: the agent's PodMetrics lists answer 404, which the API server sends only
    # after authorizing the request (an identity without the grant gets 403 on the same path).
    pods = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"
    with pytest.raises(ApiError) as unserved:
        bed.request("GET", pods, token=deployed.token)
    stranger = yaml.safe_load(bed.service_account_kubeconfig(namespace="default", name="default").read_text())
    with pytest.raises(ApiError) as refused:
        bed.request("GET", pods, token=stranger["users"][0]["user"]["token"])
    assert (unserved.value.status, refused.value.status) == (404, 403)

    log = agent.log_text()
    assert "forbidden" not in log.lower() and "ValidatingAdmissionPolicy" not in log
    failed = {reason: n for reason, n in agent.by_label("orochi_agent_jobs_failed_total", "reason").items() if n}
    assert failed.get("refused", 0) >= 1  # the webhook's rejection, above
    # A deletion waits a few seconds per receive for the namespace to go, then hands its job back (transient):
    # the only other failed attempts allowed.
    transient = [line for line in log.splitlines() if "failed (transient" in line]
    assert all("still being removed" in line for line in transient), transient
    assert set(failed) <= {"refused", "transient"}, failed


def test_the_agents_metrics_give_each_series_once(agent: KubeAgent) -> None:
    keys = [key for key, _ in agent.series()]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    assert repeated == []


def test_the_admission_policy_denies_the_agent_writes_outside_its_namespaces_that_rbac_alone_allows(
        bed: Testbed, deployed: Deployed) -> None:
    bed.request("POST", "/api/v1/namespaces/default/secrets",
                body={"metadata": {"name": "not-the-agents"}, "stringData": {"password": "s3cret"}})
    review = bed.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token=deployed.token, body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "patch", "resource": "secrets"}}})
    assert review["status"]["allowed"] is True  # RBAC alone would let it

    with kubernetes.config.new_client_from_config(config_file=str(deployed.kubeconfig)) as client:
        v1 = kubernetes.client.CoreV1Api(client)
        with pytest.raises(ApiException) as patched:
            v1.patch_namespaced_secret("not-the-agents", "default", {"stringData": {"password": "taken"}})
        with pytest.raises(ApiException) as own:  # its own namespace is not one it manages either
            v1.create_namespaced_secret(AGENT_NAMESPACE, {"metadata": {"name": "planted"}, "stringData": {"k": "v"}})
        with pytest.raises(ApiException) as unlabelled:
            v1.create_namespace({"metadata": {"name": f"not-managed-{uuid.uuid4().hex[:6]}"}})

    for raised in (patched, own, unlabelled):
        assert raised.value.status == 422, raised.value.body
        assert "ValidatingAdmissionPolicy 'orochi-agent-own-namespaces'" in raised.value.body
        assert POLICY_MESSAGE in raised.value.body
    secret = bed.request("GET", core("default", "secrets", "not-the-agents"))
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
    assert get(bed, core(AGENT_NAMESPACE, "secrets", "planted")) is None


# A deletion that takes its time


@pytest.fixture(scope="module")
def impatient(bed: Testbed, stack: Stack, deployed: Deployed, agent: KubeAgent) -> Iterator[KubeAgent]:
    """In the first agent's place, one whose retries back off 20 times faster: a job's five receives (the queue's
    maxReceiveCount) go by in seconds instead of minutes."""
    stop_cleanly(bed, agent)
    fast = KubeAgent(stack, kubeconfig=deployed.kubeconfig, pod="orochi-agent-impatient",
                     OROCHI_RETRY_BASE_SECONDS="0.05", OROCHI_RETRY_MAX_SECONDS="0.1")
    fast.start()
    yield fast
    if fast.running:
        fast.stop(signal.SIGKILL)


def test_a_deletion_slower_than_the_jobs_receives_is_not_reported_failed(
        bed: Testbed, stack: Stack, impatient: KubeAgent) -> None:
    owner = stack.register()
    cluster_id = stack.create_cluster(owner, postgres_version="17", instances=1, storage_gb=10)["cluster"]["id"]
    namespace = names.namespace(cluster_id)
    until(lambda: applied(bed, namespace, 1), what="generation 1 applied")
    # Something in the namespace that takes long to go, as a cloud load balancer's or a volume's removal does.
    held = core(namespace, "configmaps", "held")
    bed.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                body={"metadata": {"name": "held", "finalizers": ["orochi.test/hold"]}})
    dlq = stack.queue_url(REGION).replace(".fifo", "-dlq.fifo")

    def dead_lettered() -> bool:
        dead = stack.sqs().get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
        return int(dead["Attributes"]["ApproximateNumberOfMessages"]) > 0

    mutate(stack, owner, "DELETE", cluster_path(owner.org_id, cluster_id))
    try:  # while the job's receives go by (or for 30 s), the cluster is being deleted, not failed
        window = time.monotonic() + 30
        while time.monotonic() < window and not dead_lettered():
            shown = stack.find_cluster(owner, cluster_id)
            assert shown is not None and shown["status"] == "deleting", (shown["status"], shown["status_message"])
            time.sleep(0.1)
    finally:
        merge(bed, held, {"metadata": {"finalizers": None}})
        if (stack.find_cluster(owner, cluster_id) or {}).get("status") == "failed":  # else a resync would apply it again
            mutate(stack, owner, "DELETE", cluster_path(owner.org_id, cluster_id))
    until(lambda: stack.find_cluster(owner, cluster_id) is None, timeout=120, what="the cluster deleted in the API")


# Two replicas


class LeaseWatch:
    """Every version of the region's Lease, from a watch as admin: (holder, renewTime, transitions)."""

    def __init__(self, bed: Testbed) -> None:
        self.seen: list[tuple[str, datetime.datetime, int]] = []
        self._client = kubernetes.config.new_client_from_config(config_file=str(bed.admin_kubeconfig))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        leases = kubernetes.client.CoordinationV1Api(self._client)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(leases.list_namespaced_lease, AGENT_NAMESPACE, field_selector=
                                      f"metadata.name={LEASE}", timeout_seconds=2):
                spec = event["object"].spec
                self.seen.append((spec.holder_identity, spec.renew_time, spec.lease_transitions or 0))
                if self._stop.is_set():
                    watch.stop()

    def renewals(self, holder: str) -> list[float]:
        """The seconds between consecutive renewals by `holder`."""
        times = sorted({renewed for who, renewed, _ in self.seen if who == holder and renewed})
        return [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()


@dataclass
class Replicas:
    owner: Account
    leader: KubeAgent
    other: KubeAgent
    watch: LeaseWatch
    applied_by: dict[str, list[str]]
    """Pod name → the clusters whose namespace it created (so whose first job it took)."""


@pytest.fixture(scope="module")
def replicas(bed: Testbed, stack: Stack, deployed: Deployed, impatient: KubeAgent) -> Iterator[Replicas]:
    """In the single agent's place, two replicas with a 5 s Lease and a 300 s resync."""
    stop_cleanly(bed, impatient)
    watch = LeaseWatch(bed)
    pair = [KubeAgent(stack, kubeconfig=deployed.kubeconfig, pod=f"orochi-agent-{suffix}",
                      OROCHI_LEASE_DURATION_SECONDS=str(LEASE_SECONDS)) for suffix in ("7d9f-a", "7d9f-b")]
    try:
        for replica in pair:
            replica.spawn()
        for replica in pair:
            replica.wait_ready()
        holder = until(lambda: (held := lease(bed)) and held["spec"]["holderIdentity"] in {r.pod for r in pair}
                       and held["spec"]["holderIdentity"], what="a replica holding the lease")
        leader = next(r for r in pair if r.pod == holder)
        other = next(r for r in pair if r.pod != holder)
        yield Replicas(owner=stack.register(), leader=leader, other=other, watch=watch,
                       applied_by={r.pod: [] for r in pair})
    finally:
        watch.close()
        for replica in pair:
            if replica.running:
                replica.stop(signal.SIGKILL)


def new_cluster_applied_by(bed: Testbed, stack: Stack, replicas: Replicas, *,
                           stop_when: Callable[[KubeAgent], bool] = lambda _: False) -> tuple[str, KubeAgent]:
    """Create a cluster; the replica that took its job (the one whose count of created namespaces went up), once
    it applied generation 1 in full, or at once (namespace just created) when `stop_when(replica)` says so."""
    agents = (replicas.leader, replicas.other)
    before = {a.pod: a.namespaces_created() for a in agents}
    cluster_id = stack.create_cluster(replicas.owner, postgres_version="17", instances=1,
                                      storage_gb=10)["cluster"]["id"]
    namespace = names.namespace(cluster_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        taker = next((a for a in agents if a.running and a.namespaces_created() > before[a.pod]), None)
        if taker is not None and (stop_when(taker) or applied(bed, namespace, 1)):
            replicas.applied_by[taker.pod].append(cluster_id)
            return cluster_id, taker
        time.sleep(0.01)
    raise AssertionError(f"timed out after 120s waiting for a replica to apply {cluster_id}")


def test_one_replica_holds_the_lease_runs_the_region_loops_and_both_take_jobs(
        bed: Testbed, stack: Stack, replicas: Replicas) -> None:
    leader, other = replicas.leader, replicas.other
    until(lambda: leader.metric("orochi_agent_last_resync_age_seconds") >= 0, what="the leader's first resync")
    assert other.metric("orochi_agent_last_resync_age_seconds") == -1  # the other runs no resync

    for _ in range(12):  # each job goes to whichever replica's long poll gets it first
        new_cluster_applied_by(bed, stack, replicas)
        if all(replicas.applied_by.values()):
            break
    assert all(replicas.applied_by.values()), replicas.applied_by

    held = lease(bed)
    assert held is not None and held["spec"]["holderIdentity"] == leader.pod
    assert other.metric("orochi_agent_last_resync_age_seconds") == -1
    for replica in (leader, other):  # and each deleted the job's message once done
        until(lambda r=replica: r.metric("orochi_agent_jobs_processed_total", outcome="applied") >= 1,
              what=f"{replica.pod} to be done with a job")


def test_the_lease_holder_renews_well_within_the_lease_duration(replicas: Replicas) -> None:
    until(lambda: len(replicas.watch.renewals(replicas.leader.pod)) >= 2, what="two renewals of the lease")
    gaps = replicas.watch.renewals(replicas.leader.pod)
    # On schedule well within the lease, and none so late that the lease lapsed (a loaded machine delays some).
    assert statistics.median(gaps) < LEASE_SECONDS * 0.5, f"renewals {gaps} s apart for a {LEASE_SECONDS} s lease"
    assert max(gaps) < LEASE_SECONDS, f"renewals {gaps} s apart: the {LEASE_SECONDS} s lease lapsed, and the other " \
        "replica may take it over"
    holders = [who for who, _, _ in replicas.watch.seen]
    assert set(holders[holders.index(replicas.leader.pod):]) == {replicas.leader.pod}  # no take-over meanwhile


def test_a_cluster_the_other_replica_applied_runs_once_cnpg_acted_on_it(
        bed: Testbed, stack: Stack, replicas: Replicas) -> None:
    cluster_id = replicas.applied_by[replicas.other.pod][0]
    with operator_stopped(bed):
        write_healthy_status(bed, names.namespace(cluster_id), instances=1)
        try:
            stack.until_status(replicas.owner, cluster_id, "running", ready=1, timeout=60)
        except AssertionError as e:
            shown = stack.find_cluster(replicas.owner, cluster_id) or {}
            raise AssertionError(f"{e}: still {shown.get('status')}, observed generation "
                                 f"{shown.get('observed_generation')} of {shown.get('generation')}") from None


def test_the_other_replica_takes_the_lease_when_the_leader_is_killed_mid_apply_and_the_cluster_converges(
        bed: Testbed, stack: Stack, replicas: Replicas) -> None:
    leader, other = replicas.leader, replicas.other
    transitions = lease(bed)["spec"]["leaseTransitions"]  # type: ignore[index]
    for _ in range(12):
        cluster_id, taker = new_cluster_applied_by(bed, stack, replicas, stop_when=lambda a: a is leader)
        if taker is leader:
            leader.stop(signal.SIGKILL)
            break
    assert not leader.running, "the leader took none of 12 jobs"
    namespace = names.namespace(cluster_id)
    mid_apply = not applied(bed, namespace, 1)

    until(lambda: (held := lease(bed)) and held["spec"]["holderIdentity"] == other.pod, timeout=60,
          what="the other replica to take the lease")
    until(lambda: applied(bed, namespace, 1), what="the cluster applied in full by the new leader")
    cluster = bed.request("GET", cnpg_cluster(namespace))
    assert cluster["spec"]["instances"] == 1 and cluster["spec"]["imageName"] == IMAGE_17
    assert cluster["metadata"]["labels"][names.CLUSTER_LABEL] == cluster_id
    with operator_stopped(bed):
        write_healthy_status(bed, namespace, instances=1)
        running = stack.until_status(replicas.owner, cluster_id, "running", ready=1)
    assert running["observed_generation"] == running["generation"] == 1
    assert mid_apply, "the leader had applied the whole cluster before it was killed"
    assert lease(bed)["spec"]["leaseTransitions"] == transitions + 1  # type: ignore[index]
