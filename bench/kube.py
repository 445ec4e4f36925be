"""The Kubernetes test bed seen from outside (bench.cnpg_loop): every object of a namespace and who moved it, what
the agent's watch caches select, its Kubernetes calls by verb and resource, the bed's processes."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil
import yaml

from bench.loop import Scrape
from devstack.kube.build import Binaries
from devstack.kube.testbed import ApiError, Testbed

CLUSTERS_API = "/apis/postgresql.cnpg.io/v1/clusters"
SELECTOR = "app.kubernetes.io/managed-by=orochi-agent"
Call = tuple[str, str, str, str]  # verb, group, resource, scope
Key = tuple[str, str]  # resource, name


@dataclass(frozen=True)
class ObjectState:
    version: str
    managers: dict[tuple[str, str, str], str]


@dataclass(frozen=True)
class Move:
    key: Key
    how: str  # created, changed, deleted
    writers: tuple[str, ...]  # managers whose managedFields entry appeared or changed


def moves(before: dict[Key, ObjectState], after: dict[Key, ObjectState]) -> list[Move]:
    found = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if new is None:
            found.append(Move(key, "deleted", ()))
        elif old is None or old.version != new.version:
            writers = tuple(sorted({_manager(m) for m, v in new.managers.items()
                                    if old is None or old.managers.get(m) != v}))
            found.append(Move(key, "created" if old is None else "changed", writers or ("no managedFields",)))
    return found


def _manager(entry: tuple[str, str, str]) -> str:
    manager, operation, subresource = entry
    who = "CNPG operator (`manager`)" if manager == "manager" else manager  # the operator's binary name
    return f"{who} {operation}{'/' + subresource if subresource else ''}"


def kube_calls(scrape: Scrape) -> Counter[Call]:
    """`orochi_agent_kube_requests_total` by verb, group, resource and scope."""
    return Counter({(labels["verb"], labels["group"], labels["resource"], labels["scope"]): value
                    for labels, value in scrape.labelled("orochi_agent_kube_requests_total")})


class Bed:
    """The test bed's objects and processes."""

    def __init__(self, bed: Testbed, binaries: Binaries) -> None:
        self.bed, self.binaries = bed, binaries
        paths = ["/api/v1"] + [f"/apis/{group['preferredVersion']['groupVersion']}"
                               for group in bed.request("GET", "/apis")["groups"]]
        self.resources = [(path, r["name"]) for path in paths for r in bed.request("GET", path)["resources"]
                          if r["namespaced"] and "list" in r["verbs"] and "/" not in r["name"]
                          and r["name"] != "events"]

    def snapshot(self, namespace: str) -> dict[Key, ObjectState]:
        """Every object in `namespace` (and the namespace itself): resourceVersion and managedFields entries."""
        try:
            objects = [("namespaces", self.bed.request("GET", f"/api/v1/namespaces/{namespace}"))]
        except ApiError as e:
            if e.status != 404:
                raise
            return {}
        objects += [(plural, item) for path, plural in self.resources
                    for item in self.bed.request("GET", f"{path}/namespaces/{namespace}/{plural}")["items"]]
        return {(plural, item["metadata"]["name"]): ObjectState(item["metadata"]["resourceVersion"], {
            (m.get("manager", ""), m.get("operation", ""), m.get("subresource", "")):
                json.dumps([m.get("time"), m.get("fieldsV1")], sort_keys=True)
            for m in item["metadata"].get("managedFields") or []}) for plural, item in objects}

    def settled(self, namespace: str, *, calm: float = 3.0, timeout: float = 60.0) -> None:
        """Wait until no object of the namespace moved for `calm` seconds (at most `timeout`: what still moves is
        reported as moves of the next step, by their writers)."""
        deadline = time.monotonic() + timeout
        last, since = self.snapshot(namespace), time.monotonic()
        while time.monotonic() - since < calm and time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.snapshot(namespace)
            if {k: v.version for k, v in now.items()} != {k: v.version for k, v in last.items()}:
                last, since = now, time.monotonic()

    def watched(self) -> dict[str, tuple[int, int, Counter[str]]]:
        """What the agent's three watch caches select, as the apiserver holds it: kind → (objects, their JSON bytes
        without managedFields, names by count)."""
        found = {}
        for kind, path in (("Namespace", "/api/v1/namespaces"), ("Cluster", CLUSTERS_API),
                           ("Service", "/api/v1/services")):
            items = self.bed.request("GET", f"{path}?labelSelector={SELECTOR}")["items"]
            for item in items:
                item["metadata"].pop("managedFields", None)
            found[kind] = (len(items), sum(len(json.dumps(i, separators=(",", ":"))) for i in items),
                           Counter(i["metadata"]["name"] for i in items if kind != "Namespace"))
        return found

    def cluster_objects(self) -> dict[str, dict[str, Any]]:
        """orochi cluster id → its CNPG Cluster object as the apiserver holds it."""
        items = self.bed.request("GET", f"{CLUSTERS_API}?labelSelector={SELECTOR}")["items"]
        return {item["metadata"]["labels"]["orochi.io/cluster"]: item for item in items}

    def stop_operator(self) -> None:
        """Stop the CNPG operator and remove its webhook configurations (which would refuse every Cluster write)."""
        self.bed.stop_operator()
        for configuration in yaml.safe_load_all(self.binaries.cnpg_webhooks.read_text()):
            if configuration:
                plural = configuration["kind"].lower() + "s"
                self.bed.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{plural}/cnpg-"
                                           f"{configuration['metadata']['name']}")

    def processes(self) -> dict[str, psutil.Process]:
        """The bed's processes and moto's (children of this process) by role; the operator only while it runs."""
        roles = {str(self.binaries.kube_apiserver): "kube-apiserver", str(self.binaries.etcd): "etcd",
                 str(self.binaries.kube_controller_manager): "kube-controller-manager",
                 str(self.binaries.cnpg_manager): "cnpg-operator"}
        found = {}
        for child in psutil.Process().children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if command and command[0] in roles:
                found[roles[command[0]]] = child
            elif "devstack.moto_server" in command:
                found["moto"] = child
        return found
