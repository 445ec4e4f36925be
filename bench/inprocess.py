"""The app served in the benchmark's own process (chalice's test client, its API Gateway emulation) over a moto
server of devstack.harness, with its DynamoDB calls counted.

The app reads its settings once per process, so every benchmark script runs in its own process (`bench.run_all`
starts each one) and points it at its moto server before the first `import app`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.counting import DynamoCalls, shared_client
from devstack.harness import PASSWORD, ROOT, Account, cluster_body, clusters_path, environment, moto_server, \
    run_module, with_table


@contextmanager
def moto_stack(**overrides: str) -> Iterator[dict[str, str]]:
    """A moto server with a fresh table and queues (devstack.bootstrap); the app's environment for it: the tests'
    settings (the dev stage's catalog offers only the versions the local driver serves here), `overrides` on top."""
    folder = tempfile.mkdtemp(prefix="bench-moto-")
    try:
        with moto_server(Path(folder) / "moto.log") as endpoint:
            env = with_table(environment(endpoint), **{"LOG_LEVEL": "WARNING", **overrides})
            run_module("devstack.bootstrap", env=env)
            yield env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """The app served in this process; the client is pointed at an empty project directory so that it does not
    overlay .chalice/config.json's stage variables on the environment during requests."""

    def __init__(self) -> None:
        from chalice.test import Client

        import app

        self.app = app
        project_dir = tempfile.mkdtemp(prefix="bench-chalice-")
        atexit.register(shutil.rmtree, project_dir, True)
        self.http = Client(app.app, project_dir=project_dir).http

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Reply:
        all_headers = {"content-type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        response = self.http.request(method, path, headers=all_headers,
                                     body=b"" if body is None else json.dumps(body).encode())
        try:
            parsed = json.loads(response.body) if response.body else None
        except ValueError:
            parsed = response.body
        return Reply(response.status_code, parsed, dict(response.headers))

    def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.call(method, path, **kwargs)
        if reply.status != status:
            raise RuntimeError(f"{method} {path}: {reply.status} {reply.body}")
        return reply.body


@contextmanager
def app_in_process(*, consumed_capacity: bool = False, **overrides: str) -> Iterator[tuple[Api, DynamoCalls]]:
    """A moto stack, this process pointed at it, the app served in-process, and its DynamoDB calls counted."""
    with moto_stack(**overrides) as env:
        if "app" in sys.modules:
            raise RuntimeError("app was imported before the benchmark environment was set")
        os.environ.clear()
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        api = Api()
        counter = DynamoCalls()
        counter.attach(shared_client(), consumed_capacity=consumed_capacity)
        yield api, counter


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def register(api: Api, *, email: str | None = None, organization: str = "Bench Org",
             invitation_token: str | None = None) -> Account:
    email = email or new_email()
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "name": "Bench User"}
    body.update({"invitation_token": invitation_token} if invitation_token else {"organization_name": organization})
    answer = api.expect(201, "POST", "/v1/auth/register", body=body)
    return Account(user_id=answer["user"]["id"], email=email, password=PASSWORD, org_id=answer["organization"]["id"],
                   access_token=answer["access_token"], refresh_token=answer["refresh_token"])


def invite(api: Api, owner: Account, *, email: str, role: str = "member") -> dict[str, Any]:
    return dict(api.expect(201, "POST", f"/v1/orgs/{owner.org_id}/invitations", token=owner.access_token,
                           body={"email": email, "role": role}))


def join(api: Api, owner: Account, *, role: str = "member") -> Account:
    """A new user who registered through an invitation to `owner`'s organization."""
    email = new_email(role)
    return register(api, email=email, invitation_token=invite(api, owner, email=email, role=role)["token"])


def create_cluster(api: Api, account: Account, **fields: Any) -> dict[str, Any]:
    """Create `cluster_body(**fields)` in `account`'s organization; the 202 body `{cluster, operation}`."""
    return dict(api.expect(202, "POST", clusters_path(account.org_id), token=account.access_token,
                           body=cluster_body(**fields)))


def agent_token(region: str) -> str:
    """A new agent token of `region`, made in-process as `python -m chalicelib.admin agent-token create` does."""
    from chalicelib import agents
    from chalicelib.settings import get_settings

    return agents.create_token(get_settings(), region).token


def report_status(api: Api, agent: str, cluster_id: str, **status: Any) -> dict[str, Any]:
    """The agent's status report for the cluster; the 200 answer."""
    return dict(api.expect(200, "POST", f"/v1/agent/clusters/{cluster_id}/status", token=agent, body=status))


def settle(api: Api, agent: str, cluster: dict[str, Any], *, endpoint: bool = True) -> dict[str, Any]:
    """Report the cluster ready at its generation (closing its open operations), with an endpoint."""
    status: dict[str, Any] = {"observed_generation": cluster["generation"], "phase": "ready",
                              "ready_instances": cluster["instances"]}
    if endpoint:
        status["endpoint"] = {"host": f"{cluster['id'].replace('_', '-')}.db.example.net", "port": 5432}
    return report_status(api, agent, cluster["id"], **status)


def reaper_event() -> dict[str, Any]:
    """The scheduled event EventBridge sends the reaper (as devstack.scheduler builds it)."""
    from devstack.scheduler import event

    return event("reaper")


def reap() -> None:
    """What EventBridge does every minute: `app.reap` with its event, in this process."""
    import app

    app.reap(reaper_event(), None)

