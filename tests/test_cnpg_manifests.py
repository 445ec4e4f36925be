"""The cnpg driver's manifests, pure: validated against CNPG v1.30's Cluster CRD schema (../shared/cnpg), their
names, labels and the parameters a size gives. tests/test_cnpg_driver.py applies them to the real thing."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import SecretStr

from orochi_agent.drivers import sizing
from orochi_agent.drivers.cnpg import manifests, names
from orochi_agent.drivers.cnpg.manifests import Placement
from orochi_agent.drivers.local import driver as local_driver
from orochi_agent.models import DesiredState, DesiredStorageTiers, S3Credentials

SHARED = Path(__file__).resolve().parents[2] / "shared" / "cnpg"
PLACEMENT = Placement(storage_class="do-block-storage", operator_namespace="cnpg-system",
                      scrape_namespaces=("orochi-agent",))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# CNPG's FixedConfigurationParameters (pkg/postgres/configuration.go): the webhook refuses them.
FIXED = {"allow_system_table_mods", "archive_mode", "cluster_name", "config_file", "data_directory", "hba_file",
         "hot_standby", "ident_file", "listen_addresses", "logging_collector", "port", "primary_conninfo",
         "primary_slot_name", "restore_command", "shared_preload_libraries", "unix_socket_directories",
         "archive_command", "log_destination", "log_directory", "ssl", "synchronous_standby_names", "wal_level",
         "wal_log_hints", "full_page_writes"}


@pytest.fixture(scope="module")
def cluster_schema() -> dict[str, Any]:
    crd = yaml.safe_load((SHARED / "postgresql.cnpg.io_clusters.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def desired(**changes: Any) -> DesiredState:
    fields: dict[str, Any] = dict(
        id="cls_hnqcXXTizNGxxpR6kbfdIg", org_id="org_Q2xYp0aZ9bT7uVwX1yZ3aB", name="orders", region="nyc1",
        generation=3, deleting=False, postgres_version="18", image="ghcr.io/cloudnative-pg/postgresql:18.0",
        size="db-s-2vcpu-4gb", vcpu=2, memory_gb=4, instances=3, storage_gb=10, ip_allowlist=["203.0.113.0/24"],
        database="app", owner="app", password=SecretStr("s3cret-Pa55word"),
    )
    fields.update(changes)
    return DesiredState(**fields)


def tiers() -> DesiredStorageTiers:
    return DesiredStorageTiers(
        cold=S3Credentials(endpoint="https://s3.eu-west-1.amazonaws.com", bucket="acme-cold", region="eu-west-1",
                           prefix="orders/", access_key_id="AKIACOLD", secret_access_key=SecretStr("c0ld-S3CRET-value")),
        frozen=S3Credentials(endpoint="https://fra1.digitaloceanspaces.com", bucket="acme-frozen", region="fra1",
                             access_key_id="DOFROZEN", secret_access_key=SecretStr("frozen-secret")),
    )


def all_objects(state: DesiredState) -> list[dict[str, Any]]:
    return manifests.objects(state, PLACEMENT, generation=state.generation, follows=1)


def undeclared(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of `value` the structural schema does not declare (the API server would prune or, Strict, refuse)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            if properties is not None and key in properties:
                found += undeclared(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += undeclared(item, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                found.append(f"{path}.{key}")
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [f for i, item in enumerate(value) for f in undeclared(item, schema["items"], f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("state", [
    desired(),
    desired(instances=1, storage_gb=1, vcpu=1, memory_gb=2, ip_allowlist=[]),
    desired(storage_tiers=tiers(), vcpu=16, memory_gb=64, instances=9, ip_allowlist=["198.51.100.7/32", "2001:db8::/32"]),
], ids=["three-instances", "smallest", "tiers-and-largest"])
def test_the_cluster_validates_against_the_cnpg_crd_schema_and_declares_every_field(
        cluster_schema: dict[str, Any], state: DesiredState) -> None:
    cluster = manifests.stamped(manifests.build(state, PLACEMENT).cluster, generation=state.generation)

    jsonschema.validate(cluster, cluster_schema)
    # The Cluster's metadata is an open object in the CRD: everything else must be declared.
    assert undeclared(cluster["spec"], cluster_schema["properties"]["spec"], "spec") == []


def test_the_cluster_carries_size_storage_image_bootstrap_anti_affinity_and_pdb() -> None:
    spec = manifests.build(desired(), PLACEMENT).cluster["spec"]

    assert spec["instances"] == 3
    assert spec["imageName"] == "ghcr.io/cloudnative-pg/postgresql:18.0"
    assert spec["storage"] == {"size": "10Gi", "storageClass": "do-block-storage"}
    assert spec["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert spec["bootstrap"] == {"initdb": {"database": "app", "owner": "app", "secret": {"name": names.APP_SECRET}}}
    assert spec["affinity"] == {"enablePodAntiAffinity": True, "podAntiAffinityType": "required",
                                "topologyKey": "kubernetes.io/hostname"}
    assert spec["enablePDB"] is True
    assert "env" not in spec


@pytest.mark.parametrize(("vcpu", "memory_gb"), [(1, 2), (2, 4), (4, 32), (16, 32)])
def test_parameters_follow_the_size_and_avoid_what_cnpg_fixes(vcpu: int, memory_gb: int) -> None:
    parameters = manifests.build(desired(vcpu=vcpu, memory_gb=memory_gb), PLACEMENT).cluster["spec"]["postgresql"][
        "parameters"]

    memory_mb = memory_gb * 1024
    assert parameters["shared_buffers"] == f"{memory_mb // 4}MB"
    assert parameters["effective_cache_size"] == f"{memory_mb * 3 // 4}MB"
    assert parameters["max_connections"] == str(local_driver.max_connections(memory_gb))
    assert local_driver.max_connections is sizing.max_connections  # one function for both drivers
    assert parameters["max_parallel_workers"] == str(vcpu)
    assert int(parameters["work_mem"].removesuffix("kB")) >= 4096
    assert all(isinstance(v, str) for v in parameters.values())
    assert not FIXED & set(parameters)


def test_namespaces_are_dns_labels_distinct_for_ids_that_differ_only_in_case() -> None:
    lower, upper = names.namespace("cls_abcdefghijklmnopqrstuv"), names.namespace("cls_ABCDEFGHIJKLMNOPQRSTUV")

    assert lower != upper
    for name in (lower, upper, names.namespace("cls_hnqcXXTizNGxxpR6kbfdIg")):
        assert DNS_LABEL.match(name) and len(name) <= 63 and name.startswith("orochi-")
    assert names.namespace("cls_hnqcXXTizNGxxpR6kbfdIg") == names.namespace("cls_hnqcXXTizNGxxpR6kbfdIg")


def test_every_object_is_in_the_clusters_namespace_and_carries_the_agents_labels() -> None:
    state = desired(storage_tiers=tiers())
    namespace = names.namespace(state.id)
    objects = all_objects(state)

    assert [o["kind"] for o in objects] == ["Namespace"] + ["NetworkPolicy"] * 5 + ["Secret", "Cluster", "Secret",
                                                                                     "Service"]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[names.MANAGED_BY] == "orochi-agent"
        assert labels[names.CLUSTER_LABEL] == state.id
        assert labels[names.ORG_LABEL] == state.org_id
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace
    assert objects[0]["metadata"]["name"] == namespace
    # What CNPG makes (pods, PVCs, its Services) inherits the labels.
    cluster = next(o for o in objects if o["kind"] == "Cluster")
    assert cluster["spec"]["inheritedMetadata"]["labels"] == objects[0]["metadata"]["labels"]


def test_the_app_secret_is_basic_auth_for_the_owner_and_follows_the_cluster_generation() -> None:
    secret = manifests.app_secret(desired(owner="orders_owner"), follows=7)

    assert secret["type"] == "kubernetes.io/basic-auth"
    assert base64.b64decode(secret["data"]["username"]).decode() == "orders_owner"
    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cret-Pa55word"
    assert secret["metadata"]["labels"]["cnpg.io/reload"] == "true"
    assert secret["metadata"]["annotations"] == {names.FOLLOWS: "7"}


def test_storage_tiers_are_a_secret_given_to_the_pods_as_variables_only_when_set() -> None:
    without = manifests.build(desired(), PLACEMENT)
    built = manifests.build(desired(storage_tiers=tiers()), PLACEMENT)

    assert without.tiers_secret is None and not manifests.uses_tiers_secret(without.cluster)
    assert built.tiers_secret is not None and manifests.uses_tiers_secret(built.cluster)
    data = {k: base64.b64decode(v).decode() for k, v in built.tiers_secret["data"].items()}
    assert data["cold-secret-access-key"] == "c0ld-S3CRET-value" and data["frozen-access-key-id"] == "DOFROZEN"
    assert "frozen-prefix" not in data
    env = {e["name"]: e for e in built.cluster["spec"]["env"]}
    reference = env["OROCHI_COLD_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": names.TIERS_SECRET, "key": "cold-secret-access-key"}
    assert {r["valueFrom"]["secretKeyRef"]["key"] for r in env.values() if "valueFrom" in r} == set(data)
    assert "c0ld-S3CRET-value" not in str(built.cluster)  # the credentials themselves never are in the Cluster
    rotated = tiers().model_copy(update={"cold": tiers().cold.model_copy(update={"secret_access_key": SecretStr("new")})})
    changed = manifests.build(desired(storage_tiers=rotated), PLACEMENT).cluster
    assert {e["name"]: e.get("value") for e in changed["spec"]["env"]}[manifests.TIERS_REVISION] != env[
        manifests.TIERS_REVISION]["value"]  # new credentials roll the pods


def test_an_allow_list_change_changes_only_the_load_balancer() -> None:
    before = all_objects(desired(ip_allowlist=["203.0.113.0/24"]))
    after = all_objects(desired(ip_allowlist=["198.51.100.0/24", "203.0.113.9/32"]))

    changed = [a["kind"] + "/" + a["metadata"]["name"] for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [f"Service/{names.SERVICE}"]
    assert after[-1]["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24", "203.0.113.9/32"]


def test_scale_size_and_storage_change_the_cluster_spec_and_its_hash_but_a_new_generation_alone_does_not() -> None:
    base = manifests.build(desired(), PLACEMENT).cluster
    same = manifests.build(desired(generation=9, ip_allowlist=[]), PLACEMENT).cluster

    assert manifests.spec_hash(same) == manifests.spec_hash(base)
    for change in ({"instances": 5}, {"storage_gb": 20}, {"vcpu": 4, "memory_gb": 8},
                   {"image": "ghcr.io/cloudnative-pg/postgresql:18.1"}, {"storage_tiers": tiers()}):
        assert manifests.spec_hash(manifests.build(desired(**change), PLACEMENT).cluster) != manifests.spec_hash(base)
    stamped = manifests.stamped(base, generation=3)
    assert stamped["metadata"]["annotations"] == {names.GENERATION: "3", names.SPEC_HASH: manifests.spec_hash(base)}


def test_an_object_carries_its_manifest_when_every_field_set_is_there_even_among_defaults() -> None:
    service = manifests.build(desired(), PLACEMENT).service
    stored = json.loads(json.dumps(service))  # as the API server keeps it: defaults and an ownerless annotation added
    stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    stored["metadata"]["resourceVersion"] = "42"
    stored["spec"]["ports"][0]["nodePort"] = 31234
    stored["spec"].update(clusterIP="10.96.0.9", sessionAffinity="None")

    assert manifests.carries(stored, service)
    stored["spec"]["loadBalancerSourceRanges"] = ["0.0.0.0/0"]  # changed by hand
    assert not manifests.carries(stored, service)
    assert not manifests.carries(stored, manifests.build(desired(ip_allowlist=[]), PLACEMENT).service)


def test_the_load_balancer_selects_the_primary_on_5432_and_keeps_client_addresses() -> None:
    service = manifests.build(desired(), PLACEMENT).service
    open_to_all = manifests.build(desired(ip_allowlist=[]), PLACEMENT).service

    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {"cnpg.io/cluster": names.CLUSTER, "cnpg.io/instanceRole": "primary"}
    assert service["spec"]["ports"] == [{"name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert "loadBalancerSourceRanges" not in open_to_all["spec"]


def test_network_policies_deny_by_default_and_admit_only_what_must_reach_postgres() -> None:
    placement = Placement(operator_namespace="cnpg-system", scrape_namespaces=("orochi-agent", "monitoring"),
                          internal_cidrs=("10.244.0.0/16", "10.245.0.0/16", "fd00::/8"))
    policies = {p["metadata"]["name"]: p["spec"] for p in manifests.build(desired(), placement).network_policies}

    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress"]}  # no rule: nothing gets in

    def admitted(name: str) -> tuple[list[dict[str, Any]], set[int]]:
        (rule,) = policies[name]["ingress"]
        assert policies[name]["podSelector"] == {"matchLabels": names.instance_selector()}
        return rule["from"], {p["port"] for p in rule["ports"]}

    peers, ports = admitted("allow-clients")
    assert ports == {5432}
    assert peers == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16", "10.245.0.0/16"]}},
                     {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}]
    peers, ports = admitted("allow-replication")
    assert ports == {5432, 8000} and peers == [{"podSelector": {"matchLabels": {"cnpg.io/cluster": names.CLUSTER}}}]
    peers, ports = admitted("allow-operator")
    assert ports == {5432, 8000}
    assert peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}]
    peers, ports = admitted("allow-metrics")
    assert ports == {9187}
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers] == [
        "orochi-agent", "monitoring"]
    assert "allow-metrics" not in {p["metadata"]["name"] for p in manifests.build(desired(), Placement()).network_policies}
