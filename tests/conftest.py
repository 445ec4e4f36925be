"""Fixtures: a real moto server for DynamoDB and SQS, and the API served by chalice's local gateway.

Each `Stack` is its own API process on its own table, so tests that need other settings (short TTLs,
a small login limit) start one with overrides and never disturb the others.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ENCRYPTION_KEY = "t1:" + base64.b64encode(b"k" * 32).decode()
ALLOWED_ORIGINS = "http://localhost:3000,http://localhost:5173"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port}")


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def send_together(stack: Stack, method: str, path: str, bodies: list[Any]) -> list[tuple[int, Any]]:
    """Send one JSON request per body at the same instant; `(status, parsed body)` for each, in order.

    Every connection is opened (and accepted by the server, whose listen backlog is small) before any
    request is written, so the requests really race inside the API instead of queueing at the socket.
    """
    connections = []
    for _ in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
        connection.connect()
        connections.append(connection)
        time.sleep(0.01)
    barrier = threading.Barrier(len(bodies))

    def send(connection: http.client.HTTPConnection, body: Any) -> tuple[int, Any]:
        payload = json.dumps(body).encode()
        barrier.wait()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, connections, bodies))
    finally:
        for connection in connections:
            connection.close()


@dataclass
class Account:
    """A registered user with a live session in their own organization."""

    user_id: str
    email: str
    password: str
    org_id: str
    access_token: str
    refresh_token: str


class Stack:
    """One API process over the shared moto server, with its own table and settings."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        subprocess.run([sys.executable, "-m", "devstack.bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
        self.process = start(["-m", "devstack.api", "--port", str(self.port)], env, self.port)
        self.http = requests.Session()

    def call(
        self, method: str, path: str, *, token: str | None = None, json: Any = None,
        headers: dict[str, str] | None = None, data: bytes | str | None = None,
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url + path, json=json, data=data, headers=all_headers, timeout=30)

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

    def join(self, owner: Account, role: str) -> Account:
        """A new user who joined `owner`'s organization with `role` through an invitation."""
        email = f"{role}-{uuid.uuid4().hex[:12]}@example.com"
        invitation = self.call("POST", f"/v1/orgs/{owner.org_id}/invitations", token=owner.access_token,
                               json={"email": email, "role": role})
        assert invitation.status_code == 201, invitation.text
        response = self.call("POST", "/v1/auth/register", json={
            "email": email, "password": "another good password", "name": role.title(),
            "invitation_token": invitation.json()["token"],
        })
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(
            user_id=body["user"]["id"], email=email, password="another good password", org_id=owner.org_id,
            access_token=body["access_token"], refresh_token=body["refresh_token"],
        )

    def close(self) -> None:
        self.http.close()
        stop(self.process)


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
