"""What the tests and the benchmarks both run: a moto server, the API as an HTTP server on a table of its own, and
users, clusters and agents acting on it over HTTP; waits that say what they waited for.

    with moto_server(folder / "moto.log") as endpoint:
        stack = Stack(with_table(environment(endpoint)), folder=folder)
        owner = stack.register()
        cluster = stack.create_cluster(owner)["cluster"]
        stack.until_status(owner, cluster["id"], "running")

Each `Stack` is one `python -m devstack.api` process with its own clock (`--clock-file`): `advance_clock` moves
it forward, `run` and `admin` run a module on it (devstack.clocked).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import requests

from devstack.ports import NotListening, free_port, wait_for_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ENCRYPTION_KEY = "t1:" + base64.b64encode(b"k" * 32).decode()
ALLOWED_ORIGINS = "http://localhost:3000,http://localhost:5173"


class TimedOut(AssertionError):
    """A wait ran out; the message names what it waited for and for how long."""


def until(check: Callable[[], T | None], *, timeout: float = 120, what: str, every: float = 0.05) -> T:
    """Poll `check` every `every` seconds until it returns something truthy, and return that; TimedOut naming `what`
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def start(args: list[str], env: dict[str, str], port: int, *, what: str, log: Path) -> subprocess.Popen[bytes]:
    """`python *args`, its output appended to `log`, once it accepts connections on `port` (NotListening naming
    `what` and quoting `log` if it exits first or does not within 120 s)."""
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        wait_for_port(port, process=process, what=what, log=log, timeout=120)
    except NotListening:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes], *, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def run_module(module: str, *args: str, env: dict[str, str], clock_file: Path | None = None, check: bool = True,
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m module *args` in the repository with `env`, on the clock of `clock_file` if given (as a Stack's
    API reads it); with `check`, an AssertionError quoting its stderr when it exits non-zero."""
    command = [sys.executable, "-m", module, *args]
    if clock_file is not None:
        command = [sys.executable, "-m", "devstack.clocked", str(clock_file), module, *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"python -m {module} {' '.join(args)} exited with {done.returncode}:\n{done.stderr}")
    return done


def aws_client(env: dict[str, str], service: str) -> Any:
    """A boto3 client of `service` on the moto server that `env` points at."""
    import boto3

    return boto3.client(
        service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """A moto server (DynamoDB, SQS) on a free loopback port, logging to `log`; its endpoint."""
    port = free_port()
    process = start(["-m", "devstack.moto_server", "--port", str(port)], dict(os.environ), port,
                    what="the moto server", log=log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def environment(endpoint: str, *, stage: str | None = None) -> dict[str, str]:
    """The API's environment on the moto server at `endpoint`: this process's variables and the test settings, or,
    with `stage`, that stage's variables of .chalice/config.json instead of the test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if stage is None:
        env.update(JWT_SECRET=JWT_SECRET, ENCRYPTION_KEY=ENCRYPTION_KEY, ALLOWED_ORIGINS=ALLOWED_ORIGINS, STAGE="test")
    else:
        config = json.loads((ROOT / ".chalice" / "config.json").read_text())
        env.update(config.get("environment_variables", {}))
        env.update(config["stages"][stage].get("environment_variables", {}))
    return {**env, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "JOB_QUEUE_URL_TEMPLATE": f"{endpoint}/123456789012/orochi-jobs-{{region}}.fifo"}


def with_table(env: dict[str, str], **overrides: str) -> dict[str, str]:
    """`env` on a fresh table name with queues of its own, `overrides` on top."""
    name = f"orochi-{uuid.uuid4().hex[:8]}"
    queues = f"{env['AWS_ENDPOINT_URL']}/123456789012/{name}-jobs-{{region}}.fifo"
    return {**env, "TABLE_NAME": name, "JOB_QUEUE_URL_TEMPLATE": queues, **overrides}


def clusters_path(org_id: str) -> str:
    return f"/v1/orgs/{org_id}/clusters"


def cluster_path(org_id: str, cluster_id: str) -> str:
    return f"/v1/orgs/{org_id}/clusters/{cluster_id}"


def cluster_body(**overrides: Any) -> dict[str, Any]:
    """A valid cluster to create (a unique name, nyc1, PostgreSQL 17, the smallest size, 1 instance, 20 GB),
    with `overrides` on top."""
    return {
        "name": f"pg-{uuid.uuid4().hex[:10]}", "region": "nyc1", "postgres_version": "17", "size": "db-s-1vcpu-2gb",
        "instances": 1, "storage_gb": 20, **overrides,
    }


@dataclass
class Account:
    """A registered user with a live session in their own organization."""

    user_id: str
    email: str
    password: str
    org_id: str
    access_token: str
    refresh_token: str


class AgentToken(NamedTuple):
    """An agent token as `agent-token create` prints it, once: its id and the bearer token `<id>.<secret>`."""

    id: str
    token: str


_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/1\.[01]" (\d{3})')


def raw_key(key: tuple[str, str]) -> dict[str, Any]:
    """A key of `chalicelib.store.keys` as a DynamoDB request spells it."""
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


PORT_ATTEMPTS = 3
# Every secret the helpers see (any JSON field so named, sent or answered, and agent tokens), for the tests' check
# that none reaches a log (tests/conftest.py, tests/test_log_secrets.py).
SECRET_FIELDS = {"password", "access_token", "refresh_token", "token", "invitation_token", "secret_access_key"}
SECRETS: set[str] = {JWT_SECRET, ENCRYPTION_KEY.partition(":")[2]}


def remember_secrets(payload: Any) -> None:
    """Remember the value of every field named like a secret in `payload` (JSON: dicts, lists, values)."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key in SECRET_FIELDS and isinstance(value, str) and len(value.strip()) >= 8:  # blank: nothing to find
                SECRETS.add(value)
            else:
                remember_secrets(value)
    elif isinstance(payload, list):
        for value in payload:
            remember_secrets(value)


class Stack:
    """One API process over a moto server, with its own table, settings, clock and log."""

    def __init__(self, env: dict[str, str], *, folder: Path | None = None, own_clock: bool = False) -> None:
        self.env = env
        self._own_folder = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="orochi-stack-"))
        self.own_clock = own_clock
        self._clock_offset = 0.0
        run_module("devstack.bootstrap", env=env)
        for attempt in range(PORT_ATTEMPTS):
            # A port free when chosen can be taken by another process before the API binds it: choose again.
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.clock_file = self.folder / f"clock-{self.port}"
            self.log = self.folder / f"api-{self.port}.log"
            try:
                self.process = start(["-m", "devstack.api", "--port", str(self.port), "--clock-file",
                                      str(self.clock_file)], env, self.port,
                                     what=f"the API on table {env['TABLE_NAME']}", log=self.log)
                break
            except NotListening:
                if attempt == PORT_ATTEMPTS - 1 or "Address already in use" not in self.log.read_text(errors="replace"):
                    raise
        self.http = requests.Session()
        self._agents: dict[str, str] = {}

    def advance_clock(self, seconds: float) -> None:
        """Move this API's clock `seconds` forward (it never goes back): what tests do instead of sleeping. Only on
        a stack made with `own_clock`, so that no other test sees its time jump."""
        assert self.own_clock, "advance_clock on a shared stack: use the own_stack fixture"
        assert seconds >= 0, "the clock never goes back"
        self._clock_offset += seconds
        written = self.clock_file.with_suffix(".new")
        written.write_text(str(self._clock_offset))
        written.replace(self.clock_file)  # atomic: the API never reads a half-written offset

    def now(self) -> int:
        """This API's clock, as its records and tokens read it."""
        return int(time.time() + self._clock_offset)

    def requests_served(self) -> list[tuple[str, str, str]]:
        """(method, path, status) of every request in the API's access log so far."""
        return [m.groups() for m in _ACCESS.finditer(self.log.read_text(errors="replace"))]  # type: ignore[misc]

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, *, token: str | None = None, json: Any = None,
        headers: dict[str, str] | None = None, data: bytes | str | None = None,
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        remember_secrets(json)
        response = self.http.request(method, self.url + path, json=json, data=data, headers=all_headers, timeout=60)
        if response.headers.get("Content-Type", "").startswith("application/json") and response.content:
            try:
                remember_secrets(response.json())
            except ValueError:
                pass
        return response

    def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        """`call(...)`'s parsed body, asserting its status."""
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def listing(self, path: str, token: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated listing (`path` may carry a query), following `next_cursor` to the end;
        no page holds more than `limit` items."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        separator = "&" if "?" in path else "?"
        for _ in range(200):
            query = f"{separator}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            page = self.expect(200, "GET", path + query, token=token)
            assert len(page["items"]) <= limit
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items
        raise AssertionError(f"the listing of {path} never ends")

    # --- users and invitations ----------------------------------------------------------------------------------

    def register(self, *, email: str | None = None, password: str = PASSWORD, name: str = "Test User",
                 organization_name: str = "Test Org") -> Account:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        body = self.expect(201, "POST", "/v1/auth/register", json={
            "email": email, "password": password, "name": name, "organization_name": organization_name})
        return Account(
            user_id=body["user"]["id"], email=email, password=password, org_id=body["organization"]["id"],
            access_token=body["access_token"], refresh_token=body["refresh_token"],
        )

    def invite(self, inviter: Account, *, email: str | None = None, role: str = "member") -> dict[str, Any]:
        """An invitation to `inviter`'s organization, created by `inviter`; the 201 body, token included."""
        email = email or f"invitee-{uuid.uuid4().hex[:12]}@example.com"
        return dict(self.expect(201, "POST", f"/v1/orgs/{inviter.org_id}/invitations", token=inviter.access_token,
                                json={"email": email, "role": role}))

    def join(self, owner: Account, role: str) -> Account:
        """A new user who joined `owner`'s organization with `role` through an invitation."""
        email = f"{role}-{uuid.uuid4().hex[:12]}@example.com"
        invitation = self.invite(owner, email=email, role=role)
        body = self.expect(201, "POST", "/v1/auth/register", json={
            "email": email, "password": "another good password", "name": role.title(),
            "invitation_token": invitation["token"]})
        return Account(
            user_id=body["user"]["id"], email=email, password="another good password", org_id=owner.org_id,
            access_token=body["access_token"], refresh_token=body["refresh_token"],
        )

    def refresh(self, account: Account) -> Account:
        """`account` with the tokens of a refresh of its session (after moving the clock past its access token)."""
        body = self.expect(200, "POST", "/v1/auth/refresh", json={"refresh_token": account.refresh_token})
        account.access_token, account.refresh_token = body["access_token"], body["refresh_token"]
        return account

    # --- clusters, as a user ------------------------------------------------------------------------------------

    def post_cluster(self, account: Account, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """POST `body` to `account`'s organization's clusters, as `account`; the response, whatever it is."""
        return self.call("POST", clusters_path(account.org_id), token=account.access_token, json=body, headers=headers)

    def create_cluster(self, account: Account, **fields: Any) -> dict[str, Any]:
        """Create `cluster_body(**fields)` in `account`'s organization; the 202 body `{cluster, operation}`."""
        response = self.post_cluster(account, cluster_body(**fields))
        assert response.status_code == 202, response.text
        return dict(response.json())

    def change_cluster(self, account: Account, method: str, cluster_id: str, suffix: str = "",
                       body: Any = None) -> dict[str, Any]:
        """PATCH, DELETE or POST `suffix` (e.g. "/scale") on the cluster as `account`; the 202 answer's cluster."""
        path = cluster_path(account.org_id, cluster_id) + suffix
        return dict(self.expect(202, method, path, token=account.access_token, json=body)["cluster"])

    def find_cluster(self, account: Account, cluster_id: str) -> dict[str, Any] | None:
        """The cluster as `account` reads it, or None once it is gone (404)."""
        response = self.call("GET", cluster_path(account.org_id, cluster_id), token=account.access_token)
        assert response.status_code in (200, 404), response.text
        return dict(response.json()) if response.status_code == 200 else None

    def get_cluster(self, account: Account, cluster_id: str) -> dict[str, Any]:
        """The cluster as `account` reads it through the public API."""
        return dict(self.expect(200, "GET", cluster_path(account.org_id, cluster_id), token=account.access_token))

    def until_status(self, account: Account, cluster_id: str, status: str, *, ready: int | None = None,
                     timeout: float = 120, every: float = 0.05) -> dict[str, Any]:
        """The cluster once the API shows it in `status` (with `ready` instances ready, if given)."""
        def reached() -> dict[str, Any] | None:
            cluster = self.find_cluster(account, cluster_id)
            if cluster and cluster["status"] == status and (ready is None or cluster["ready_instances"] == ready):
                return cluster
            return None

        return until(reached, timeout=timeout, every=every, what=f"{cluster_id} {status} with {ready} ready in the API")

    # --- agents: tokens from the operator command, status reports -----------------------------------------------

    def run(self, module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m module *args` with this stack's environment (or `env`) on its clock; fails unless it exits 0."""
        return run_module(module, *args, env=env or self.env, clock_file=self.clock_file)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m chalicelib.admin *args` on this stack's table and clock; the finished command, whatever its
        exit code."""
        return run_module("chalicelib.admin", *args, env=self.env, clock_file=self.clock_file, check=False)

    def agent_token(self, region: str = "nyc1") -> AgentToken:
        """A new agent token of `region` from the operator command: the id ends its first line, the token its output."""
        done = self.admin("agent-token", "create", "--region", region)
        assert done.returncode == 0, done.stderr
        created = AgentToken(id=done.stdout.splitlines()[0].split()[-1], token=done.stdout.split()[-1])
        SECRETS.update({created.token, created.token.partition(".")[2]})
        return created

    def agent(self, region: str = "nyc1") -> str:
        """The bearer token of this stack's agent of `region`, created on first use and never revoked."""
        if region not in self._agents:
            self._agents[region] = self.agent_token(region).token
        return self._agents[region]

    def report(self, cluster_id: str, *, region: str = "nyc1", **status: Any) -> dict[str, Any]:
        """Report `status` for the cluster as the agent of `region`; the 200 answer."""
        return dict(self.expect(200, "POST", f"/v1/agent/clusters/{cluster_id}/status", token=self.agent(region),
                                json=status))

    # --- the stack's table and queues, read directly ------------------------------------------------------------

    def dynamodb(self) -> Any:
        return aws_client(self.env, "dynamodb")

    def sqs(self) -> Any:
        return aws_client(self.env, "sqs")

    def queue_url(self, region: str) -> str:
        """The URL of the region's job queue."""
        return self.env["JOB_QUEUE_URL_TEMPLATE"].format(region=region)

    def table_items(self) -> list[dict[str, Any]]:
        """Every item of the stack's table as DynamoDB stores it (a Scan: fine in a test, never on a request path)."""
        pages = self.dynamodb().get_paginator("scan").paginate(TableName=self.env["TABLE_NAME"], ConsistentRead=True)
        return [item for page in pages for item in page["Items"]]

    def raw_item(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """The item at `key` (from `chalicelib.store.keys`) as DynamoDB stores it (`{"attribute": {"S": ...}}`),
        read consistently; None if there is none."""
        return self.dynamodb().get_item(TableName=self.env["TABLE_NAME"], Key=raw_key(key), ConsistentRead=True).get("Item")

    def close(self) -> None:
        self.http.close()
        stop(self.process)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
