"""Transactions DynamoDB cancels because another transaction was writing the same items at that moment.

moto applies transactions one at a time and never answers `TransactionConflict`, so the cancellation is
injected at the boundary: a botocore `before-call` handler on the one DynamoDB client the app shares
answers the next N TransactWriteItems calls as DynamoDB does under contention. The API runs in this
process (chalice's test client), over the real moto server for everything else.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from conftest import cluster_body, clusters_path


@dataclass
class Api:
    http: Any
    contended: list[int]

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        response = getattr(self.http, method.lower())(path, headers=headers, body=json.dumps(body) if body is not None else None)
        return response.status_code, json.loads(response.body) if response.body else None

    def contend(self, times: int) -> None:
        """Cancel the next `times` transactions with a TransactionConflict reason."""
        self.contended[:] = [times]


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str]) -> Iterator[Api]:
    from chalice.test import Client

    from devstack import bootstrap
    from chalicelib.settings import get_settings

    table = f"contention-{uuid.uuid4().hex[:8]}"
    saved = dict(os.environ)
    os.environ.update({**stack_env, "TABLE_NAME": table,
                       "JOB_QUEUE_URL_TEMPLATE": f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/{table}-{{region}}.fifo"})
    get_settings.cache_clear()
    bootstrap.main()
    app = importlib.import_module("app")
    contended = [0]

    def cancel(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if contended[0] == 0:
            return None
        contended[0] -= 1
        reasons = [{"Code": "None"} for _ in json.loads(params["body"])["TransactItems"]]
        reasons[0] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
        return AWSResponse("https://dynamodb", 400, {}, None), {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": reasons,
        }

    from chalicelib.store.table import Item

    events = Item._get_connection().connection.client.meta.events
    events.register("before-call.dynamodb.TransactWriteItems", cancel)
    with tempfile.TemporaryDirectory() as project_dir, Client(app.app, project_dir=project_dir) as client:
        yield Api(http=client.http, contended=contended)
    events.unregister("before-call.dynamodb.TransactWriteItems", cancel)
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def owner(api: Api) -> dict[str, Any]:
    status, body = api.call("POST", "/v1/auth/register", body={
        "email": f"contention-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery",
        "name": "Contended", "organization_name": "Contention",
    })
    assert status == 201, body
    return body


def test_cluster_create_cancelled_by_a_concurrent_writer_is_retried(api: Api, owner: dict[str, Any]) -> None:
    token, org_id = owner["access_token"], owner["organization"]["id"]
    api.contend(2)
    status, body = api.call("POST", clusters_path(org_id), token=token, body=cluster_body(name="retried"))
    assert status == 202, body
    assert api.contended == [0]
    status, listing = api.call("GET", clusters_path(org_id), token=token)
    assert [c["name"] for c in listing["items"]] == ["retried"]


def test_cluster_create_still_contended_after_retries_answers_409_and_writes_nothing(
    api: Api, owner: dict[str, Any],
) -> None:
    token, org_id = owner["access_token"], owner["organization"]["id"]
    api.contend(10)
    status, body = api.call("POST", clusters_path(org_id), token=token, body=cluster_body(name="given-up"))
    api.contend(0)
    assert status == 409, body
    assert body["error"]["code"] == "concurrent_update"
    status, listing = api.call("GET", clusters_path(org_id), token=token)
    assert "given-up" not in [c["name"] for c in listing["items"]]


def test_scale_cancelled_by_a_concurrent_writer_rereads_and_applies_once(api: Api, owner: dict[str, Any]) -> None:
    token, org_id = owner["access_token"], owner["organization"]["id"]
    status, created = api.call("POST", clusters_path(org_id), token=token, body=cluster_body(name="scaled"))
    assert status == 202, created
    cluster = created["cluster"]
    api.contend(1)
    status, body = api.call("POST", f"{clusters_path(org_id)}/{cluster['id']}/scale", token=token, body={"instances": 3})
    assert status == 202, body
    assert api.contended == [0]
    assert (body["cluster"]["instances"], body["cluster"]["generation"]) == (3, cluster["generation"] + 1)
