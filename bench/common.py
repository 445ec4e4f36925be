"""Shared benchmark pieces: a moto server with the table, the app's environment, the in-process API,
a DynamoDB call counter on the shared botocore client, statistics and markdown tables.

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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port}")


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
        _wait_for_port(port, process)
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
        import app
        from chalice.test import Client

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


# --- counting DynamoDB calls ----------------------------------------------------------------------


@dataclass
class DynamoCall:
    operation: str
    params: dict[str, Any]
    seconds: float = 0.0


@dataclass
class DynamoCalls:
    """Every DynamoDB API call (and HTTP attempt, retries included) made by one botocore client."""

    calls: list[DynamoCall] = field(default_factory=list)
    http_attempts: int = 0

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-call.dynamodb", self._before_call)
        events.register("after-call.dynamodb", self._after_call)
        events.register("before-send.dynamodb", self._before_send)

    def reset(self) -> None:
        self.calls.clear()
        self.http_attempts = 0

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    def _before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b"{}"
        call = DynamoCall(model.name, json.loads(body))
        self.calls.append(call)
        context["bench_call"] = (call, time.perf_counter())

    def _after_call(self, context: dict[str, Any], **_: Any) -> None:
        call, started = context.pop("bench_call", (None, 0.0))
        if call is not None:
            call.seconds = time.perf_counter() - started

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


def _describe(call: DynamoCall) -> str:
    if call.operation in ("TransactWriteItems", "TransactGetItems"):
        kinds = _transact_kinds(call)
        inner = ",".join(f"{kind}×{n}" if n > 1 else kind for kind, n in kinds.items())
        return f"{call.operation}[{inner}]"
    if call.operation == "BatchGetItem":
        keys = sum(len(t.get("Keys", [])) for t in call.params.get("RequestItems", {}).values())
        return f"BatchGetItem[{keys} keys]"
    if call.operation == "Query" and "IndexName" in call.params:
        return f"Query({call.params['IndexName']})"
    return call.operation


def _capacity(call: DynamoCall) -> tuple[float, float]:
    """Estimated on-demand (read, write) request units, assuming items ≤ 1 KB and query pages ≤ 4 KB.

    Strongly consistent reads 1, eventually consistent ½; transactional items 2 each (a ConditionCheck
    is a transactional read). A failed conditional write still consumes its write unit. GSI write
    units (Member items carry gsi1 keys) are not included.
    """
    op, params = call.operation, call.params
    read_unit = 1.0 if params.get("ConsistentRead") else 0.5
    if op in ("GetItem", "Query", "Scan"):
        return read_unit, 0.0
    if op == "BatchGetItem":
        return sum(len(t.get("Keys", [])) * (1.0 if t.get("ConsistentRead") else 0.5)
                   for t in params.get("RequestItems", {}).values()), 0.0
    if op in ("PutItem", "UpdateItem", "DeleteItem"):
        return 0.0, 1.0
    if op == "TransactWriteItems":
        kinds = _transact_kinds(call)
        return 2.0 * kinds.get("ConditionCheck", 0), 2.0 * (sum(kinds.values()) - kinds.get("ConditionCheck", 0))
    if op == "TransactGetItems":
        return 2.0 * len(params.get("TransactItems", [])), 0.0
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
