"""Fixtures: a real moto server for DynamoDB and SQS, and the API served by chalice's local gateway (the Stack
of devstack.harness, which the benchmarks use too).

Each `Stack` is its own API process on its own table, so tests that need other settings (a small login limit, a
quota) start one with overrides and never disturb the others. A `Stack` also carries the helpers the test modules
share: users and invitations, clusters, agent tokens and status reports, and direct reads of its table and queues;
`send_together` races requests against it. A test that moves the clock does it on a stack of its own (`own_stack`).
"""

from __future__ import annotations

import http.client
from pathlib import Path
import tempfile
import shutil
import re
import os
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devstack.harness import (  # noqa: F401  (the test modules import these from here)
    JWT_SECRET,
    SECRETS,
    ROOT,
    Account,
    Stack,
    aws_client,
    cluster_body,
    cluster_path,
    clusters_path,
    environment,
    moto_server,
    raw_key,
    remember_secrets,
    until,
    with_table,
)


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
        barrier.wait(timeout=60)
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
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def stack_env(moto_endpoint: str) -> dict[str, str]:
    """The environment every test stack starts from."""
    # The suite is a load generator no real caller resembles: schemathesis sends about a thousand requests a
    # minute as one user, and several modules log in or register more than 60 times a minute from 127.0.0.1.
    # The default limits would refuse some of those; tests of the limits start stacks with small ones.
    return {**environment(moto_endpoint), "RATE_LIMIT_USER_PER_MINUTE": "1000000",
            "RATE_LIMIT_AGENT_PER_MINUTE": "1000000", "RATE_LIMIT_AUTH_PER_MINUTE": "1000000"}


def new_stack(stack_env: dict[str, str], *, own_clock: bool = False, **overrides: str) -> Stack:
    """An API process on a fresh table and fresh queues, with `overrides` on top of the test settings."""
    return Stack(with_table(stack_env, **overrides), folder=log_dir(), own_clock=own_clock)


@pytest.fixture
def own_stack(stack_env: dict[str, str]) -> Iterator[Callable[..., Stack]]:
    """`own_stack(**overrides)`: an API of this test's alone, on a fresh table, with those settings; the only kind of
    stack whose clock a test may move (`Stack.advance_clock`), since no other test sees it."""
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        stacks.append(new_stack(stack_env, own_clock=True, **overrides))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def stack_factory(stack_env: dict[str, str]) -> Iterator[Any]:
    """`stack_factory(**overrides)` starts an API with those settings on a fresh table (one per override set and
    test module: stopped with the module, so that a session never holds every module's API processes at once)."""
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


# --- no secret in the logs ----------------------------------------------------------------------------------------
# The API processes of the test stacks log to files in one directory per run, shared by the xdist workers. Every
# secret the helpers see is remembered (devstack.harness.SECRETS); each process writes its set there when its session
# ends, and the run's last process to finish (the xdist controller, or pytest alone) fails the run if any log holds
# any of them. tests/test_log_secrets.py checks one stack's log on its own and shows the check can fail.
LOG_DIR = "OROCHI_TEST_LOG_DIR"
_WORD = re.compile(r"[A-Za-z0-9_-]+")


def log_dir() -> Path:
    return Path(os.environ[LOG_DIR])


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
