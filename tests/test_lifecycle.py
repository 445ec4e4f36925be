"""A cluster's public status and its operations, driven by the agent's status reports over HTTP.

pending → provisioning → running; updating while a newer generation is applied; degraded when fewer
instances are ready than desired after having been running; deleting → deleted; failed with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from conftest import Account, Stack, cluster_path, clusters_path


class Cluster:
    """One cluster seen from both sides: its owner's public API and the region agent's reports."""

    def __init__(self, stack: Stack, owner: Account, **fields: Any) -> None:
        self.stack, self.owner = stack, owner
        created = stack.create_cluster(owner, **fields)
        self.id: str = created["cluster"]["id"]
        self.name: str = created["cluster"]["name"]
        self.create_op: dict[str, Any] = created["operation"]
        self.path = cluster_path(owner.org_id, self.id)

    def _user(self, method: str, path: str, json: Any = None) -> Any:
        return self.stack.call(method, path, token=self.owner.access_token, json=json)

    def get(self) -> dict[str, Any]:
        return self.stack.get_cluster(self.owner, self.id)

    def operation(self, operation_id: str) -> dict[str, Any]:
        response = self._user("GET", f"{self.path}/operations/{operation_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def operations(self) -> list[dict[str, Any]]:
        response = self._user("GET", f"{self.path}/operations")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def change(self, method: str, suffix: str = "", json: Any = None) -> dict[str, Any]:
        response = self._user(method, self.path + suffix, json=json)
        assert response.status_code == 202, response.text
        return response.json()

    def report_raw(self, generation: int, phase: str, ready: int, **extra: Any) -> requests.Response:
        return self.stack.call("POST", f"/v1/agent/clusters/{self.id}/status", token=self.stack.agent(), json={
            "observed_generation": generation, "phase": phase, "ready_instances": ready, **extra})

    def report(self, generation: int, phase: str, ready: int, **extra: Any) -> dict[str, Any]:
        return self.stack.report(self.id, observed_generation=generation, phase=phase, ready_instances=ready, **extra)


NewCluster = Callable[..., Cluster]


@pytest.fixture
def new_cluster(stack: Stack, owner: Account) -> NewCluster:
    return lambda **fields: Cluster(stack, owner, **fields)


ENDPOINT = {"host": "c1-rw.orochi.svc", "port": 5432}


def test_new_cluster_goes_pending_provisioning_running_with_its_create_operation(new_cluster: NewCluster) -> None:
    cluster = new_cluster(instances=2)
    seen = cluster.get()
    assert (seen["status"], seen["generation"], seen["observed_generation"]) == ("pending", 1, 0)
    assert seen["ready_instances"] == 0
    assert "endpoint" not in seen
    assert cluster.create_op["kind"] == "create" and cluster.create_op["status"] == "pending"

    answer = cluster.report(1, "provisioning", 0)
    assert answer == {"applied": True, "status": "provisioning", "generation": 1, "observed_generation": 1}
    assert cluster.get()["status"] == "provisioning"
    assert cluster.operation(cluster.create_op["id"])["status"] == "running"

    answer = cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    assert answer["status"] == "provisioning", "one of two instances ready is not running yet"
    assert cluster.operation(cluster.create_op["id"])["status"] == "running"

    answer = cluster.report(1, "ready", 2, endpoint=ENDPOINT, primary="c1-1")
    assert answer["status"] == "running"
    seen = cluster.get()
    assert (seen["status"], seen["observed_generation"], seen["ready_instances"]) == ("running", 1, 2)
    assert seen["endpoint"] == ENDPOINT
    operation = cluster.operation(cluster.create_op["id"])
    assert operation["status"] == "succeeded" and "error" not in operation


def test_scale_is_updating_until_the_new_generation_is_ready(new_cluster: NewCluster) -> None:
    cluster = new_cluster(instances=1)
    cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    assert cluster.get()["status"] == "running"

    scaled = cluster.change("POST", "/scale", json={"instances": 3})
    scale_op = scaled["operation"]
    assert (scaled["cluster"]["status"], scaled["cluster"]["generation"]) == ("updating", 2)
    assert (scale_op["kind"], scale_op["status"], scale_op["generation"]) == ("scale", "pending", 2)

    answer = cluster.report(1, "ready", 1)
    assert answer == {"applied": True, "status": "updating", "generation": 2, "observed_generation": 1}
    answer = cluster.report(2, "ready", 2)
    assert answer["status"] == "updating", "two of three instances ready is still being applied"
    assert cluster.operation(scale_op["id"])["status"] == "running"

    answer = cluster.report(2, "ready", 3)
    assert answer["status"] == "running"
    seen = cluster.get()
    assert (seen["status"], seen["generation"], seen["observed_generation"], seen["instances"]) == ("running", 2, 2, 3)
    assert cluster.operation(scale_op["id"])["status"] == "succeeded"
    history = [(op["kind"], op["status"]) for op in cluster.operations()]
    assert history == [("scale", "succeeded"), ("create", "succeeded")]


def test_fewer_ready_instances_after_running_is_degraded_until_they_recover(new_cluster: NewCluster) -> None:
    cluster = new_cluster(instances=2)
    assert cluster.report(1, "degraded", 1)["status"] == "provisioning", "never running yet: not degraded"
    assert cluster.report(1, "ready", 2, endpoint=ENDPOINT)["status"] == "running"

    answer = cluster.report(1, "degraded", 1, message="instance c1-2 is not ready")
    assert answer == {"applied": True, "status": "degraded", "generation": 1, "observed_generation": 1}
    seen = cluster.get()
    assert (seen["status"], seen["ready_instances"]) == ("degraded", 1)
    assert seen["status_message"] == "instance c1-2 is not ready"
    assert cluster.operation(cluster.create_op["id"])["status"] == "succeeded"

    assert cluster.report(1, "ready", 1)["status"] == "degraded", "ready phase but one instance short"
    assert cluster.report(1, "ready", 2)["status"] == "running"
    assert "status_message" not in cluster.get()


def test_failed_report_fails_the_cluster_and_its_operation_with_the_reason(new_cluster: NewCluster) -> None:
    cluster = new_cluster()
    cluster.report(1, "provisioning", 0)
    reason = "PersistentVolumeClaim pending: no storage class can satisfy 10Gi"

    answer = cluster.report(1, "failed", 0, message=reason)
    assert answer["status"] == "failed" and answer["applied"] is True
    seen = cluster.get()
    assert (seen["status"], seen["status_message"]) == ("failed", reason)
    operation = cluster.operation(cluster.create_op["id"])
    assert (operation["status"], operation["error"]) == ("failed", reason)


def test_failed_report_fails_only_the_operation_of_the_reached_generation(new_cluster: NewCluster) -> None:
    cluster = new_cluster(storage_gb=10)
    cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    scale_op = cluster.change("POST", "/scale", json={"storage_gb": 20})["operation"]

    cluster.report(2, "failed", 1, message="volume expansion is not supported")
    assert cluster.get()["status"] == "failed"
    assert cluster.operation(scale_op["id"])["error"] == "volume expansion is not supported"
    assert cluster.operation(cluster.create_op["id"])["status"] == "succeeded"


def test_report_older_than_the_applied_generation_changes_nothing(new_cluster: NewCluster) -> None:
    cluster = new_cluster()
    cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    scale_op = cluster.change("POST", "/scale", json={"instances": 2})["operation"]
    cluster.report(2, "ready", 2)
    before = cluster.get()
    assert (before["status"], before["observed_generation"]) == ("running", 2)

    answer = cluster.report(1, "failed", 0, message="stale news from generation 1")
    assert answer == {"applied": False, "status": "running", "generation": 2, "observed_generation": 2}
    after = cluster.get()
    assert (after["status"], after["observed_generation"], after["ready_instances"]) == ("running", 2, 2)
    assert "status_message" not in after
    assert after["updated_at"] == before["updated_at"]
    assert cluster.operation(scale_op["id"])["status"] == "succeeded"


def test_report_for_a_generation_never_issued_is_unprocessable(new_cluster: NewCluster) -> None:
    cluster = new_cluster()
    response = cluster.report_raw(2, "ready", 1)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unprocessable"
    seen = cluster.get()
    assert (seen["status"], seen["observed_generation"]) == ("pending", 0)


def test_deleted_report_for_a_cluster_not_being_deleted_is_unprocessable(new_cluster: NewCluster) -> None:
    cluster = new_cluster()
    cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    response = cluster.report_raw(1, "deleted", 0)
    assert response.status_code == 422, response.text
    assert cluster.get()["status"] == "running"

    cluster.change("DELETE")
    response = cluster.report_raw(1, "deleted", 0)
    assert response.status_code == 422, "the delete generation was not reached yet"
    assert cluster.get()["status"] == "deleting"


def test_deleted_cluster_disappears_everywhere_and_its_name_can_be_reused(
    stack: Stack, owner: Account, new_cluster: NewCluster,
) -> None:
    cluster = new_cluster()
    cluster.report(1, "ready", 1, endpoint=ENDPOINT)
    deleting = cluster.change("DELETE")
    delete_op = deleting["operation"]
    assert (deleting["cluster"]["status"], deleting["cluster"]["generation"]) == ("deleting", 2)
    assert delete_op["kind"] == "delete"
    assert cluster.report(2, "ready", 1)["status"] == "deleting", "a ready report does not undo a delete"
    assert cluster.operation(delete_op["id"])["status"] == "running"

    answer = cluster.report(2, "deleted", 0)
    assert answer["status"] == "deleted"
    assert stack.call("GET", cluster.path, token=owner.access_token).status_code == 404
    operation = stack.call("GET", f"{cluster.path}/operations/{delete_op['id']}", token=owner.access_token)
    assert operation.status_code == 404
    listed = stack.call("GET", clusters_path(owner.org_id), token=owner.access_token).json()["items"]
    assert cluster.id not in {c["id"] for c in listed}
    assert stack.call("GET", f"/v1/agent/clusters/{cluster.id}", token=stack.agent()).status_code == 404
    assert cluster.id not in {c["id"] for c in stack.listing("/v1/agent/clusters", stack.agent())}
    again = cluster.report_raw(2, "deleted", 0)
    assert again.status_code in (200, 404) and (again.status_code == 404 or again.json()["applied"] is False)

    reused = new_cluster(name=cluster.name)
    assert reused.id != cluster.id and reused.get()["status"] == "pending"

