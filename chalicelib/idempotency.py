"""`Idempotency-Key` on POSTs: the same key and body within the TTL replay the first answer, once.

A retry while the first request is still running is 409; a first request that died with its function
(a Lambda killed at its timeout) holds the key only until FUNCTION_TIMEOUT_SECONDS have passed, as
Powertools' idempotency does with its in-progress expiry, and the next retry then runs afresh.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib import errors, retrying
from chalicelib.clock import now
from chalicelib.settings import Settings
from chalicelib.store import idempotency_records

HEADER = "idempotency-key"


@dataclass(frozen=True)
class Answer:
    """A route's answer, as sent and as stored for replay."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's identity: method, path and the JSON body regardless of key order and spacing."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def run(settings: Settings, *, scope: str, key: str, request_fingerprint: str, execute: Callable[[], Answer]) -> Answer:
    """Answer once per (scope, key): replay a finished answer, refuse a different body or a concurrent retry.

    The web layer has checked `key` against its documented pattern (shapes.HEADER_PATTERNS) already."""
    holder = secrets.token_hex(8)
    existing = retrying.until_won(lambda: idempotency_records.claim(
        scope, key, holder=holder, fingerprint=request_fingerprint, at=now(), ttl=settings.idempotency_ttl,
        in_progress_for=settings.function_timeout,
    ), what="this Idempotency-Key")
    if existing is not None:
        if existing.fingerprint != request_fingerprint:
            raise errors.Unprocessable("this Idempotency-Key was used with a different request")
        if existing.state != idempotency_records.DONE or existing.response_status is None:
            raise errors.Conflict("a request with this Idempotency-Key is still in progress")
        return Answer(status=existing.response_status, body=existing.response_body or "",
                      headers=dict(existing.response_headers or {}), replayed=True)
    try:
        answer = execute()
    except BaseException:
        idempotency_records.release(scope, key, holder=holder)
        raise
    idempotency_records.complete(scope, key, holder=holder, status=answer.status, body=answer.body,
                                 headers=answer.headers)
    return answer
