"""Shared benchmark pieces: a moto server with the table, the app's environment, the in-process API,
a DynamoDB call counter on the shared botocore client, the API as an HTTP server with a user acting through it
and an agent's /metrics (for the agent loops), statistics and markdown tables.

The app reads its settings once per process, so every benchmark script runs in its own process
(`bench.run_all` starts each one) and calls `use_environment` before importing `app`.
"""

from __future__ import annotations

import atexit
import base64
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


# --- the stack -------------------------------------------------------------------------------------


def app_environment(endpoint: str, table: str, **overrides: str) -> dict[str, str]:
    """The variables the app needs, pointing at a moto server on `endpoint` with table `table`.

    Starts from the dev stage of .chalice/config.json (so a newly required setting is picked up) with
    its endpoint replaced; inherited AWS_* variables are dropped.
    """
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage = {**config.get("environment_variables", {}), **config["stages"]["dev"].get("environment_variables", {})}
    dev_endpoint = stage.get("AWS_ENDPOINT_URL", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v.replace(dev_endpoint, endpoint) if dev_endpoint else v for k, v in stage.items()})
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        JWT_SECRET="bench-jwt-secret-that-is-long-enough-0123456789",
        ENCRYPTION_KEY="b1:" + base64.b64encode(bytes(range(32))).decode(),
        TABLE_NAME=table,
        STAGE="bench",
        LOG_LEVEL="WARNING",
    )
    if "JOB_QUEUE_URL_TEMPLATE" in env:
        env["JOB_QUEUE_URL_TEMPLATE"] = f"{endpoint}/123456789012/{table}-jobs-{{region}}.fifo"
    env.update(overrides)
    return env


@contextmanager
def moto_stack(**overrides: str) -> Iterator[dict[str, str]]:
    """A moto server (devstack.moto_server) with a fresh table; yields the app's environment for it."""
    port = free_port()
    env = app_environment(f"http://127.0.0.1:{port}", f"bench-{uuid.uuid4().hex[:8]}", **overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.moto_server", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        subprocess.run([sys.executable, "-m", "devstack.bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
        yield env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def use_environment(env: dict[str, str]) -> None:
    """Make `env` this process's environment; call before the first `import app`."""
    if "app" in sys.modules:
        raise RuntimeError("app was imported before the benchmark environment was set")
    os.environ.clear()
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- the app in this process -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """The app served in this process by chalice's test client (its local API Gateway emulation).

    The client is pointed at an empty project directory so it does not overlay .chalice/config.json's
    stage variables on the environment during requests.
    """

    def __init__(self) -> None:
        from chalice.test import Client

        import app

        self.app = app
        self._project_dir = tempfile.mkdtemp(prefix="bench-chalice-")
        atexit.register(shutil.rmtree, self._project_dir, True)
        self.http = Client(app.app, project_dir=self._project_dir).http

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Reply:
        all_headers = {"content-type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        raw = b"" if body is None else json.dumps(body).encode()
        response = self.http.request(method, path, headers=all_headers, body=raw)
        try:
            parsed = json.loads(response.body) if response.body else None
        except ValueError:
            parsed = response.body
        return Reply(response.status_code, parsed, dict(response.headers))


@dataclass
class Account:
    user_id: str
    email: str
    org_id: str
    access_token: str
    refresh_token: str
    password: str = PASSWORD


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def register(api: Api, *, email: str | None = None, organization: str = "Bench Org",
             invitation_token: str | None = None) -> Account:
    email = email or new_email()
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "name": "Bench User"}
    if invitation_token:
        body["invitation_token"] = invitation_token
    else:
        body["organization_name"] = organization
    reply = api.call("POST", "/v1/auth/register", body=body)
    if reply.status != 201:
        raise RuntimeError(f"register failed: {reply.status} {reply.body}")
    return Account(
        user_id=reply.body["user"]["id"], email=email, org_id=reply.body["organization"]["id"],
        access_token=reply.body["access_token"], refresh_token=reply.body["refresh_token"],
    )


def invite(api: Api, owner: Account, *, email: str, role: str = "member") -> dict[str, Any]:
    reply = api.call("POST", f"/v1/orgs/{owner.org_id}/invitations", token=owner.access_token,
                     body={"email": email, "role": role})
    if reply.status != 201:
        raise RuntimeError(f"invite failed: {reply.status} {reply.body}")
    return reply.body  # type: ignore[no-any-return]


def join(api: Api, owner: Account, *, role: str = "member") -> Account:
    """A new user who registered through an invitation to `owner`'s organization."""
    email = new_email(role)
    return register(api, email=email, invitation_token=invite(api, owner, email=email, role=role)["token"])


def cluster_body(**overrides: Any) -> dict[str, Any]:
    """A valid cluster to create (a unique name, nyc1, PostgreSQL 17, the smallest size, 1 instance, 20 GB)."""
    return {"name": f"pg-{uuid.uuid4().hex[:10]}", "region": "nyc1", "postgres_version": "17",
            "size": "db-s-1vcpu-2gb", "instances": 1, "storage_gb": 20, **overrides}


def clusters_path(org_id: str) -> str:
    return f"/v1/orgs/{org_id}/clusters"


def cluster_path(org_id: str, cluster_id: str) -> str:
    return f"/v1/orgs/{org_id}/clusters/{cluster_id}"


def create_cluster(api: Api, account: Account, **fields: Any) -> dict[str, Any]:
    """Create `cluster_body(**fields)` in `account`'s organization; the 202 body `{cluster, operation}`."""
    reply = api.call("POST", clusters_path(account.org_id), token=account.access_token, body=cluster_body(**fields))
    if reply.status != 202:
        raise RuntimeError(f"create cluster failed: {reply.status} {reply.body}")
    return reply.body  # type: ignore[no-any-return]


def agent_token(region: str) -> str:
    """A new agent token of `region`, made in-process as `python -m chalicelib.admin agent-token create` does."""
    from chalicelib import agents
    from chalicelib.settings import get_settings

    return agents.create_token(get_settings(), region).token


def report_status(api: Api, agent: str, cluster_id: str, **status: Any) -> dict[str, Any]:
    """The agent's status report for the cluster; the 200 answer."""
    reply = api.call("POST", f"/v1/agent/clusters/{cluster_id}/status", token=agent, body=status)
    if reply.status != 200:
        raise RuntimeError(f"status report failed: {reply.status} {reply.body}")
    return reply.body  # type: ignore[no-any-return]


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


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the API as an HTTP server, a user acting through it, an agent's /metrics (the agent loops) -----


POLL_SECONDS = 0.02


def until(check: Callable[[], Any], *, timeout: float, what: str, every: float = POLL_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; that value. RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram (or the difference of two scrapes of one): cumulative buckets, sum, count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(tuple((b, c - o) for (b, c), (_, o) in zip(self.buckets, other.buckets, strict=True)),
                         self.total - other.total, self.count - other.count)

    def __add__(self, other: Histogram) -> Histogram:
        if not other.buckets:
            return self
        if not self.buckets:
            return other
        return Histogram(tuple((b, c + o) for (b, c), (_, o) in zip(self.buckets, other.buckets, strict=True)),
                         self.total + other.total, self.count + other.count)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """As Prometheus' histogram_quantile: linear within the bucket holding the rank (from 0 for the first)."""
        if self.count <= 0:
            return math.nan
        rank, low, below = q * self.count, 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return low
                if cumulative == below:
                    return bound
                return low + (bound - low) * (rank - below) / (cumulative - below)
            low, below = bound, cumulative
        return math.nan


EMPTY = Histogram((), 0.0, 0.0)


class Scrape:
    """One scrape of a Prometheus text endpoint (an agent's /metrics): every sample by name and labels."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum over every label set of `name`."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def histogram(self, name: str) -> Histogram:
        buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in self.samples.items()
                         if n == f"{name}_bucket")
        return Histogram(tuple(buckets), self.value(f"{name}_sum"), self.value(f"{name}_count"))


@dataclass
class User:
    org_id: str
    token: str


def serve_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The API as an HTTP server (`python -m devstack.api`) on a free loopback port, its stderr (chalice local's
    access log) appended to `log`; (the process, its URL) once it listens."""
    port = free_port()
    with log.open("ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "devstack.api", "--port", str(port)], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=handle)
    wait_for_port(port, process=process)
    return process, f"http://127.0.0.1:{port}"


class HttpApi:
    """The public API over HTTP, as a registered user. The class using it sets `url` (the API's), `http` (a
    `requests.Session`) and `api_log` (the API's access log, see `serve_api`)."""

    url: str
    http: Any
    api_log: Path
    email_prefix = "bench"

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, self.url + path, json=body, headers=headers, timeout=30)

    def register(self) -> User:
        response = self.call("POST", "/v1/auth/register", body={
            "email": new_email(self.email_prefix), "password": PASSWORD, "name": "Bench User",
            "organization_name": "Bench Org"})
        if response.status_code != 201:
            raise RuntimeError(f"register: {response.status_code} {response.text}")
        body = response.json()
        return User(org_id=body["organization"]["id"], token=body["access_token"])

    def create(self, user: User, **fields: Any) -> dict[str, Any]:
        response = self.call("POST", clusters_path(user.org_id), token=user.token, body=cluster_body(**fields))
        if response.status_code != 202:
            raise RuntimeError(f"create cluster: {response.status_code} {response.text}")
        return dict(response.json()["cluster"])

    def cluster(self, user: User, cluster_id: str) -> dict[str, Any] | None:
        response = self.call("GET", cluster_path(user.org_id, cluster_id), token=user.token)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RuntimeError(f"get cluster: {response.status_code} {response.text}")
        return dict(response.json())

    def clusters(self, user: User) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            query = "?limit=100" + (f"&cursor={cursor}" if cursor else "")
            response = self.call("GET", clusters_path(user.org_id) + query, token=user.token)
            if response.status_code != 200:
                raise RuntimeError(f"list clusters: {response.status_code} {response.text}")
            page = response.json()
            items += page["items"]
            if not (cursor := page.get("next_cursor")):
                return items
        raise RuntimeError("the cluster listing never ends")

    def delete(self, user: User, cluster_id: str) -> None:
        response = self.call("DELETE", cluster_path(user.org_id, cluster_id), token=user.token)
        if response.status_code != 202:
            raise RuntimeError(f"delete cluster: {response.status_code} {response.text}")

    def credentials(self, user: User, cluster_id: str) -> dict[str, Any]:
        response = self.call("GET", cluster_path(user.org_id, cluster_id) + "/credentials", token=user.token)
        if response.status_code != 200:
            raise RuntimeError(f"credentials: {response.status_code} {response.text}")
        return dict(response.json())

    def api_requests(self) -> int:
        return len(access_lines(self.api_log))


def aws_sqs(env: dict[str, str]) -> Any:
    """An SQS client of the moto server in `env` (to send jobs straight to a region's queue)."""
    import boto3

    return boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/1\.[01]" (\d{3})')


def access_lines(log: Path) -> list[tuple[str, str, str]]:
    """(method, path, status) of every request in the API's access log (http.server's lines on stderr)."""
    return [m.groups() for m in _ACCESS.finditer(log.read_text(errors="replace"))]  # type: ignore[misc]


def route(method: str, path: str) -> str:
    """A request line as its route: ids replaced by {id} and {org}, the query dropped."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^/v1/agent/clusters/[^/]+", "/v1/agent/clusters/{id}", path)
    path = re.sub(r"^/v1/orgs/[^/]+", "/v1/orgs/{org}", path)
    path = re.sub(r"/clusters/[^/]+", "/clusters/{id}", path)
    return f"{method} {path}"


# --- counting DynamoDB calls ----------------------------------------------------------------------


@dataclass
class DynamoCall:
    operation: str
    params: dict[str, Any]
    seconds: float = 0.0
    returned: int = 0  # items in the response (Count for Query/Scan)
    scanned: int = 0  # items DynamoDB read to answer (ScannedCount for Query/Scan; found items for the gets)
    read_sizes: list[int] = field(default_factory=list)  # estimated sizes (bytes) of the items returned
    written_size: int | None = None  # estimated size of the item after an UpdateItem (pynamodb asks for ALL_NEW)
    index_count: int = 0  # GSIs the item is in after an UpdateItem
    reported_units: float | None = None  # ConsumedCapacity.CapacityUnits as the server reported it
    error: str = ""  # the error code of a refused call (e.g. ConditionalCheckFailedException)


# Operations whose request accepts ReturnConsumedCapacity (checked against the service model at run time).
def _accepts_consumed_capacity(model: Any) -> bool:
    shape = getattr(model, "input_shape", None)
    return shape is not None and "ReturnConsumedCapacity" in shape.members


@dataclass
class DynamoCalls:
    """Every DynamoDB API call (and HTTP attempt, retries included) made by one botocore client.

    With `consumed_capacity=True`, `attach` also asks for `ReturnConsumedCapacity: TOTAL` on every call
    that accepts it (a `before-parameter-build` hook) and records what the server reports. Items read are
    counted from the responses (`after-call`): Count/ScannedCount of a Query, the Responses of a
    BatchGetItem/TransactGetItems, 1 for a GetItem that found its item.
    """

    calls: list[DynamoCall] = field(default_factory=list)
    http_attempts: int = 0

    def attach(self, client: Any, *, consumed_capacity: bool = False) -> None:
        events = client.meta.events
        if consumed_capacity:
            events.register("before-parameter-build.dynamodb", self._ask_for_capacity)
        events.register("before-call.dynamodb", self._before_call)
        events.register("after-call.dynamodb", self._after_call)
        events.register("before-send.dynamodb", self._before_send)

    def reset(self) -> None:
        self.calls.clear()
        self.http_attempts = 0

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    @property
    def items_read(self) -> int:
        """Items DynamoDB read for these calls (scanned, so a filtered-out Query item counts)."""
        return sum(c.scanned for c in self.calls)

    @property
    def items_returned(self) -> int:
        return sum(c.returned for c in self.calls)

    @property
    def read_bytes(self) -> int:
        return sum(sum(c.read_sizes) for c in self.calls)

    @property
    def reported_units(self) -> float | None:
        reported = [c.reported_units for c in self.calls if c.reported_units is not None]
        return sum(reported) if reported else None

    @staticmethod
    def _ask_for_capacity(params: dict[str, Any], model: Any, **_: Any) -> None:
        if _accepts_consumed_capacity(model):
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b"{}"
        call = DynamoCall(model.name, json.loads(body))
        self.calls.append(call)
        context["bench_call"] = (call, time.perf_counter())

    def _after_call(self, context: dict[str, Any], parsed: dict[str, Any] | None = None, **_: Any) -> None:
        call, started = context.pop("bench_call", (None, 0.0))
        if call is None:
            return
        call.seconds = time.perf_counter() - started
        parsed = parsed or {}
        call.error = str((parsed.get("Error") or {}).get("Code", ""))
        _count_items(call, parsed)
        call.reported_units = _reported_units(parsed.get("ConsumedCapacity"))

    def _before_send(self, **_: Any) -> None:
        self.http_attempts += 1

    def breakdown(self) -> str:
        """e.g. `2 GetItem, 1 TransactWriteItems[Put×2]` in call order of first appearance."""
        parts: dict[str, int] = {}
        for call in self.calls:
            parts[_describe(call)] = parts.get(_describe(call), 0) + 1
        return ", ".join(f"{n} {what}" for what, n in parts.items()) or "—"

    def capacity(self) -> tuple[float, float]:
        read = write = 0.0
        for call in self.calls:
            r, w = _capacity(call)
            read, write = read + r, write + w
        return read, write

    def index_write_units(self) -> float:
        return float(sum(_index_writes(call) for call in self.calls))


class AwsCalls:
    """API calls by operation on another botocore client (the app's SQS client, for the jobs it enqueues)."""

    def __init__(self) -> None:
        self.operations: Counter[str] = Counter()

    def attach(self, client: Any, service: str) -> None:
        client.meta.events.register(f"before-call.{service}", self._before_call)

    def reset(self) -> None:
        self.operations.clear()

    def _before_call(self, model: Any, **_: Any) -> None:
        self.operations[model.name] += 1

    def summary(self) -> str:
        return ", ".join(f"{n} {op}" for op, n in self.operations.items()) or "—"


def sqs_client() -> Any:
    """The SQS client chalicelib.jobs enqueues with (created on first use, then cached)."""
    from chalicelib import jobs

    return jobs._sqs()


def shared_client() -> Any:
    """The botocore client behind every entity model (asserting that they really share one)."""
    from chalicelib.store.base import Item

    connection = Item._get_connection()
    models = _subclasses(Item)
    separate = [m.__name__ for m in models if m._get_connection() is not connection]
    if separate:
        raise RuntimeError(f"these models do not share Item's connection: {separate}")
    return connection.connection.client


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _transact_kinds(call: DynamoCall) -> Counter[str]:
    return Counter(next(iter(entry)) for entry in call.params.get("TransactItems", []))


REFUSED = {"ConditionalCheckFailedException": "condition failed", "TransactionCanceledException": "cancelled"}


def _describe(call: DynamoCall) -> str:
    refused = f" ({REFUSED.get(call.error, call.error)})" if call.error else ""
    if call.operation in ("TransactWriteItems", "TransactGetItems"):
        kinds = _transact_kinds(call)
        inner = ",".join(f"{kind}×{n}" if n > 1 else kind for kind, n in kinds.items())
        return f"{call.operation}[{inner}]{refused}"
    if call.operation == "BatchGetItem":
        keys = sum(len(t.get("Keys", [])) for t in call.params.get("RequestItems", {}).values())
        return f"BatchGetItem[{keys} keys]{refused}"
    if call.operation == "BatchWriteItem":
        writes = sum(len(t) for t in call.params.get("RequestItems", {}).values())
        return f"BatchWriteItem[{writes} items]{refused}"
    if call.operation == "Query" and "IndexName" in call.params:
        return f"Query({call.params['IndexName']}){refused}"
    return call.operation + refused


def item_size(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules (names + values; numbers ~1 byte per 2 digits + 1), in bytes."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, raw), = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return math.ceil(len(raw.lstrip("-").replace(".", "").strip("0") or "0") / 2) + 1
    if kind == "B":
        return len(base64.b64decode(raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in raw.items())
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: v}) for v in raw)
    return 0


def _count_items(call: DynamoCall, parsed: dict[str, Any]) -> None:
    op = call.operation
    if op in ("Query", "Scan"):
        call.returned = int(parsed.get("Count", 0))
        call.scanned = int(parsed.get("ScannedCount", call.returned))
        call.read_sizes = [item_size(i) for i in parsed.get("Items", [])]
    elif op == "GetItem":
        found = parsed.get("Item")
        call.returned = call.scanned = 1 if found else 0
        call.read_sizes = [item_size(found)] if found else []
    elif op == "BatchGetItem":
        items = [i for table in (parsed.get("Responses") or {}).values() for i in table]
        call.returned = call.scanned = len(items)
        call.read_sizes = [item_size(i) for i in items]
    elif op == "TransactGetItems":
        items = [r["Item"] for r in parsed.get("Responses") or [] if r.get("Item")]
        call.returned = call.scanned = len(items)
        call.read_sizes = [item_size(i) for i in items]
    elif op == "UpdateItem" and parsed.get("Attributes"):
        call.written_size = item_size(parsed["Attributes"])
        call.index_count = sum(1 for key in INDEX_KEYS if key in parsed["Attributes"])


def _reported_units(consumed: Any) -> float | None:
    if consumed is None:
        return None
    entries = consumed if isinstance(consumed, list) else [consumed]
    return float(sum(e.get("CapacityUnits", 0) for e in entries))


def _units(size: int, unit_bytes: int) -> int:
    return max(1, math.ceil(size / unit_bytes))


INDEX_KEYS = ("gsi1pk", "gsi2pk", "gsi3pk")


def _index_writes(call: DynamoCall) -> int:
    """A lower bound of the GSI write units: every index (all three project ALL attributes) holding an item
    that is put, or left in it by an UpdateItem, is written once per started KB. An item moved between
    index keys or removed from an index (unknown without the old item) costs more; not counted."""
    op, params = call.operation, call.params
    puts: list[dict[str, Any]] = []
    if op == "PutItem":
        puts = [params.get("Item", {})]
    elif op == "BatchWriteItem":
        puts = [w["PutRequest"]["Item"] for t in params.get("RequestItems", {}).values() for w in t if "PutRequest" in w]
    elif op == "TransactWriteItems":
        puts = [e["Put"]["Item"] for e in params.get("TransactItems", []) if "Put" in e]
    units = sum(_units(item_size(item), 1024) * sum(1 for key in INDEX_KEYS if key in item) for item in puts)
    if op == "UpdateItem" and call.written_size:
        # pynamodb's update returns ALL_NEW: the item's own index keys are in the answer, not kept here
        units += _units(call.written_size, 1024) * call.index_count
    return units


def _capacity(call: DynamoCall) -> tuple[float, float]:
    """Estimated on-demand (read, write) request units, from the sizes of the items actually read and written.

    Reads: 4 KB units, strongly consistent 1, eventually consistent ½; a Query pays for the total size of the
    items it read (those a filter dropped assumed of the returned items' average size), rounded up once (at
    least one unit); a missing item still costs one unit. Writes:
    1 KB units (an UpdateItem by the item after it, Deletes and Updates inside transactions assumed ≤ 1 KB).
    Transactional items cost double (a ConditionCheck is a transactional read). A failed conditional write
    still consumes its write units. GSI writes are estimated apart (`_index_writes`).
    """
    op, params = call.operation, call.params
    read_unit = 1.0 if params.get("ConsistentRead") else 0.5
    if op == "GetItem":
        return read_unit * _units(sum(call.read_sizes), 4096), 0.0
    if op in ("Query", "Scan"):
        size = sum(call.read_sizes)
        if call.returned and call.scanned > call.returned:  # filtered out: assume their average size
            size = size * call.scanned // call.returned
        return read_unit * _units(size, 4096), 0.0
    if op == "BatchGetItem":
        keys = sum(len(t.get("Keys", [])) for t in params.get("RequestItems", {}).values())
        consistent = all(t.get("ConsistentRead") for t in params.get("RequestItems", {}).values())
        unit = 1.0 if consistent else 0.5
        found = sum(_units(size, 4096) for size in call.read_sizes)
        return unit * (found + max(0, keys - len(call.read_sizes))), 0.0
    if op == "PutItem":
        return 0.0, float(_units(item_size(params.get("Item", {})), 1024))
    if op == "UpdateItem":
        return 0.0, float(_units(call.written_size or 0, 1024))
    if op == "DeleteItem":
        return 0.0, 1.0
    if op == "BatchWriteItem":
        writes = [w for t in params.get("RequestItems", {}).values() for w in t]
        return 0.0, float(sum(_units(item_size(w["PutRequest"]["Item"]), 1024) if "PutRequest" in w else 1
                              for w in writes))
    if op == "TransactWriteItems":
        read = write = 0.0
        for entry in params.get("TransactItems", []):
            (kind, body), = entry.items()
            if kind == "ConditionCheck":
                read += 2.0
            elif kind == "Put":
                write += 2.0 * _units(item_size(body.get("Item", {})), 1024)
            else:
                write += 2.0
        return read, write
    if op == "TransactGetItems":
        return 2.0 * sum(_units(size, 4096) for size in call.read_sizes) + 2.0 * (
            len(params.get("TransactItems", [])) - len(call.read_sizes)), 0.0
    return 0.0, 0.0


# --- statistics and output ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = next((line.split()[1] for line in memory if line.startswith("Mem:")), "unknown")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": str(os.cpu_count()),
        "memory": total,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def heading(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


@contextmanager
def app_in_process(*, consumed_capacity: bool = False, **overrides: str) -> Iterator[tuple[Api, DynamoCalls]]:
    """A moto stack, this process pointed at it, the app served in-process, and its DynamoDB calls counted."""
    with moto_stack(**overrides) as env:
        use_environment(env)
        api = Api()
        counter = DynamoCalls()
        counter.attach(shared_client(), consumed_capacity=consumed_capacity)
        yield api, counter
