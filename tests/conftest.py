"""Fixtures: a real moto server for DynamoDB and SQS, and the API served by chalice's local gateway.

Each `Stack` is its own API process on its own table, so tests that need other settings (short TTLs,
a small login limit) start one with overrides and never disturb the others. A `Stack` also carries the
helpers the test modules share: users and invitations, clusters, agent tokens and status reports, and
direct reads of its table and queues; `send_together` races requests against it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import boto3
import pytest
import requests

from devstack.ports import free_port, wait_for_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ENCRYPTION_KEY = "t1:" + base64.b64encode(b"k" * 32).decode()
ALLOWED_ORIGINS = "http://localhost:3000,http://localhost:5173"


def until(check: Callable[[], T | None], *, timeout: float = 120, what: str = "the condition") -> T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def start(args: list[str], env: dict[str, str], port: int, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `python *args` and wait for its port; its output goes to `log` (appended) if given, else nowhere."""
    if log is None:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    else:
        with log.open("ab") as output:
            process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
                                       stdout=output, stderr=subprocess.STDOUT)
    wait_for_port(port, process=process)
    return process


# --- no secret in the logs ----------------------------------------------------------------------------------------
# The API processes' output (their logs) goes to files in one directory per run, shared by the xdist workers. Every
# secret the helpers below see (passwords, access and refresh tokens, invitation and agent tokens, database passwords,
# S3 secret keys: any JSON field so named, sent or answered) is remembered; each process writes its set there when its
# session ends, and the run's last process to finish (the xdist controller, or pytest alone) fails the run if any log
# holds any of them. tests/test_log_secrets.py checks one stack's log on its own and shows the check can fail.
LOG_DIR = "OROCHI_TEST_LOG_DIR"
SECRET_FIELDS = {"password", "access_token", "refresh_token", "token", "invitation_token", "secret_access_key"}
SECRETS: set[str] = {JWT_SECRET, ENCRYPTION_KEY.partition(":")[2]}


def log_dir() -> Path:
    return Path(os.environ[LOG_DIR])


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


_WORD = re.compile(r"[A-Za-z0-9_-]+")


def leaked_secrets(logs: list[Path], secrets: set[str]) -> dict[str, int]:
    """Each log file that holds any of `secrets`, with how many of them it holds.

    Thousands of secrets over megabytes of logs: a secret made of token characters (`[A-Za-z0-9_-]`, parts joined
    by dots as in a JWT or an agent token) is looked up as whole words of the log (each part a word, delimited by
    any other character); any other secret (a password with spaces, an S3 key with slashes) is searched for as is.
    """
    words_only = {s for s in secrets if all(_WORD.fullmatch(part) for part in s.split("."))}
    others = secrets - words_only
    found = {}
    for path in logs:
        text = path.read_text(errors="replace")
        words = set(_WORD.findall(text))
        hit = sum(1 for s in words_only if all(part in words for part in s.split(".")))
        hit += sum(1 for s in others if s in text)
        if hit:
            found[path.name] = hit
    return found


def pytest_configure(config: pytest.Config) -> None:
    if LOG_DIR not in os.environ:  # the first process of the run; xdist's workers inherit the directory
        os.environ[LOG_DIR] = tempfile.mkdtemp(prefix="orochi-test-logs-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (log_dir() / f"secrets-{worker}.json").write_text(json.dumps(sorted(SECRETS)))
    if hasattr(session.config, "workerinput"):
        return  # a worker: the controller checks once every worker has written its secrets
    secrets = {s for path in log_dir().glob("secrets-*.json") for s in json.loads(path.read_text())}
    logs = sorted(log_dir().glob("*.log"))
    leaks = leaked_secrets(logs, secrets)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"SECRETS IN THE LOGS ({log_dir()}): {leaks}", red=True)
    elif reporter is not None:
        reporter.write_line(f"no secret in the logs: {len(secrets)} secrets, {len(logs)} API logs")
    if not leaks and session.exitstatus == 0:
        shutil.rmtree(log_dir(), ignore_errors=True)  # kept only when something failed, to read


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def aws_client(env: dict[str, str], service: str) -> Any:
    """A boto3 client of `service` on the moto server that `env` points at."""
    return boto3.client(
        service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def raw_key(key: tuple[str, str]) -> dict[str, Any]:
    """A key of `chalicelib.store.keys` as a DynamoDB request spells it."""
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


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


class Stack:
    """One API process over the shared moto server, with its own table and settings."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.clock_file = Path(tempfile.mkdtemp(prefix="orochi-clock-")) / "offset"
        self._clock_offset = 0.0
        subprocess.run([sys.executable, "-m", "devstack.bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
        self.log_path = log_dir() / f"api-{env.get('TABLE_NAME', 'orochi')}-{self.port}.log"
        self.process = start(["-m", "devstack.api", "--port", str(self.port), "--clock-file", str(self.clock_file)],
                             env, self.port, log=self.log_path)
        self.http = requests.Session()
        self._agents: dict[str, str] = {}

    def advance_clock(self, seconds: float) -> None:
        """Move this API's clock `seconds` forward (it never goes back): what tests do instead of sleeping."""
        self._clock_offset += seconds
        self.clock_file.write_text(str(self._clock_offset))

    def now(self) -> int:
        """This API's clock, as its records and tokens read it."""
        return int(time.time() + self._clock_offset)

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, *, token: str | None = None, json: Any = None,
        headers: dict[str, str] | None = None, data: bytes | str | None = None,
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        remember_secrets(json)
        response = self.http.request(method, self.url + path, json=json, data=data, headers=all_headers, timeout=30)
        if response.headers.get("Content-Type", "").startswith("application/json") and response.content:
            try:
                remember_secrets(response.json())
            except ValueError:
                pass
        return response

    def listing(self, path: str, token: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated listing (`path` may carry a query), following `next_cursor` to the end;
        no page holds more than `limit` items."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        separator = "&" if "?" in path else "?"
        for _ in range(200):
            query = f"{separator}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            response = self.call("GET", path + query, token=token)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= limit
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items
        raise AssertionError(f"the listing of {path} never ends")

    # --- users and invitations ----------------------------------------------------------------------------------

    def register(self, *, email: str | None = None, password: str = "correct horse battery", name: str = "Test User",
                 organization_name: str = "Test Org") -> Account:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        response = self.call("POST", "/v1/auth/register", json={
            "email": email, "password": password, "name": name, "organization_name": organization_name,
        })
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(
            user_id=body["user"]["id"], email=email, password=password, org_id=body["organization"]["id"],
            access_token=body["access_token"], refresh_token=body["refresh_token"],
        )

    def invite(self, inviter: Account, *, email: str | None = None, role: str = "member") -> dict[str, Any]:
        """An invitation to `inviter`'s organization, created by `inviter`; the 201 body, token included."""
        email = email or f"invitee-{uuid.uuid4().hex[:12]}@example.com"
        response = self.call("POST", f"/v1/orgs/{inviter.org_id}/invitations", token=inviter.access_token,
                             json={"email": email, "role": role})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def join(self, owner: Account, role: str) -> Account:
        """A new user who joined `owner`'s organization with `role` through an invitation."""
        email = f"{role}-{uuid.uuid4().hex[:12]}@example.com"
        invitation = self.invite(owner, email=email, role=role)
        response = self.call("POST", "/v1/auth/register", json={
            "email": email, "password": "another good password", "name": role.title(),
            "invitation_token": invitation["token"],
        })
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(
            user_id=body["user"]["id"], email=email, password="another good password", org_id=owner.org_id,
            access_token=body["access_token"], refresh_token=body["refresh_token"],
        )

    # --- clusters, as a user ------------------------------------------------------------------------------------

    def post_cluster(self, account: Account, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """POST `body` to `account`'s organization's clusters, as `account`; the response, whatever it is."""
        return self.call("POST", clusters_path(account.org_id), token=account.access_token, json=body, headers=headers)

    def create_cluster(self, account: Account, **fields: Any) -> dict[str, Any]:
        """Create `cluster_body(**fields)` in `account`'s organization; the 202 body `{cluster, operation}`."""
        response = self.post_cluster(account, cluster_body(**fields))
        assert response.status_code == 202, response.text
        return dict(response.json())

    def find_cluster(self, account: Account, cluster_id: str) -> dict[str, Any] | None:
        """The cluster as `account` reads it, or None once it is gone (404)."""
        response = self.call("GET", cluster_path(account.org_id, cluster_id), token=account.access_token)
        assert response.status_code in (200, 404), response.text
        return dict(response.json()) if response.status_code == 200 else None

    def until_status(self, account: Account, cluster_id: str, status: str, *, ready: int | None = None,
                     timeout: float = 120) -> dict[str, Any]:
        """The cluster once the API shows it in `status` (with `ready` instances ready, if given)."""
        def reached() -> dict[str, Any] | None:
            cluster = self.find_cluster(account, cluster_id)
            if cluster and cluster["status"] == status and (ready is None or cluster["ready_instances"] == ready):
                return cluster
            return None

        return until(reached, timeout=timeout, what=f"{cluster_id} {status} with {ready} ready in the API")

    def get_cluster(self, account: Account, cluster_id: str) -> dict[str, Any]:
        """The cluster as `account` reads it through the public API."""
        response = self.call("GET", cluster_path(account.org_id, cluster_id), token=account.access_token)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # --- agents: tokens from the operator command, status reports -----------------------------------------------

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m chalicelib.admin *args` on this stack's table; the finished command, whatever its exit code."""
        return subprocess.run([sys.executable, "-m", "chalicelib.admin", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def agent_token(self, region: str = "nyc1") -> AgentToken:
        """A new agent token of `region` from the operator command: the id ends its first line, the token its output."""
        done = self.admin("agent-token", "create", "--region", region)
        assert done.returncode == 0, done.stderr
        token = AgentToken(id=done.stdout.splitlines()[0].split()[-1], token=done.stdout.split()[-1])
        SECRETS.update({token.token, token.token.partition(".")[2]})
        return token

    def agent(self, region: str = "nyc1") -> str:
        """The bearer token of this stack's agent of `region`, created on first use and never revoked."""
        if region not in self._agents:
            self._agents[region] = self.agent_token(region).token
        return self._agents[region]

    def report(self, cluster_id: str, *, region: str = "nyc1", **status: Any) -> dict[str, Any]:
        """Report `status` for the cluster as the agent of `region`; the 200 answer."""
        response = self.call("POST", f"/v1/agent/clusters/{cluster_id}/status", token=self.agent(region), json=status)
        assert response.status_code == 200, response.text
        return dict(response.json())

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


def send_together(stack: Stack, method: str, path: str, bodies: list[Any], *, token: str | None = None,
                  headers: dict[str, str] | None = None) -> list[tuple[int, Any]]:
    """Send one request per body (JSON, or none for None) at the same instant, with `token` as the bearer and
    `headers` if given; `(status, parsed body)` for each, in order.

    Every connection is opened (and accepted by the server, whose listen backlog is small) before any
    request is written, so the requests really race inside the API instead of queueing at the socket.
    """
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    connections = []
    for _ in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
        connection.connect()
        connections.append(connection)
        time.sleep(0.01)
    barrier = threading.Barrier(len(bodies))

    def send(connection: http.client.HTTPConnection, body: Any) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        barrier.wait()
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        answer = json.loads(raw) if raw else None
        remember_secrets(body)
        remember_secrets(answer)
        return response.status, answer

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, connections, bodies))
    finally:
        for connection in connections:
            connection.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    process = start(["-m", "devstack.moto_server", "--port", str(port)], dict(os.environ), port)
    yield f"http://127.0.0.1:{port}"
    stop(process)


@pytest.fixture(scope="session")
def stack_env(moto_endpoint: str) -> dict[str, str]:
    """The environment every test stack starts from."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "JWT_SECRET": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "ALLOWED_ORIGINS": ALLOWED_ORIGINS,
        "JOB_QUEUE_URL_TEMPLATE": f"{moto_endpoint}/123456789012/orochi-jobs-{{region}}.fifo",
        "STAGE": "test",
        # The suite is a load generator no real caller resembles: schemathesis sends about a thousand requests a
        # minute as one user, and several modules log in or register more than 60 times a minute from 127.0.0.1.
        # The default limits would refuse some of those; tests of the limits start stacks with small ones.
        "RATE_LIMIT_USER_PER_MINUTE": "1000000",
        "RATE_LIMIT_AGENT_PER_MINUTE": "1000000",
        "RATE_LIMIT_AUTH_PER_MINUTE": "1000000",
    }


def new_stack(stack_env: dict[str, str], **overrides: str) -> Stack:
    """An API process on a fresh table and fresh queues, with `overrides` on top of the test settings."""
    name = f"orochi-{uuid.uuid4().hex[:8]}"
    queues = f"{stack_env['AWS_ENDPOINT_URL']}/123456789012/{name}-jobs-{{region}}.fifo"
    return Stack({**stack_env, "TABLE_NAME": name, "JOB_QUEUE_URL_TEMPLATE": queues, **overrides})


@pytest.fixture(scope="session")
def stack_factory(stack_env: dict[str, str]) -> Iterator[Any]:
    """`stack_factory(**overrides)` starts an API with those settings on a fresh table (one per override set)."""
    stacks: dict[tuple[tuple[str, str], ...], Stack] = {}

    def make(**overrides: str) -> Stack:
        key = tuple(sorted(overrides.items()))
        if key not in stacks:
            stacks[key] = new_stack(stack_env, **overrides)
        return stacks[key]

    yield make
    for stack in stacks.values():
        stack.close()


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """The API with default settings, on a table of this test module's own.

    moto copies a whole table for every transaction (to roll it back on failure), so small tables
    keep transactions, and the races that depend on their timing, fast.
    """
    stack = new_stack(stack_env)
    yield stack
    stack.close()


@pytest.fixture
def owner(stack: Stack) -> Account:
    return stack.register()


@pytest.fixture(scope="module")
def testbed() -> Iterator[Any]:
    """A real kube-apiserver, etcd, controller-manager and the CNPG operator for this test module, built on first use
    (cached outside the work tree, see devstack/kube/build.py). A failed build fails the test: it never skips."""
    from devstack.kube.build import BuildError, ensure_built
    from devstack.kube.testbed import Testbed

    try:
        binaries = ensure_built()
    except BuildError as e:
        pytest.fail(f"building the Kubernetes test bed failed:\n{e}", pytrace=False)
    with Testbed(binaries) as bed:
        yield bed
