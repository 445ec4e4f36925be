"""Idempotency keys: `IDEMP#<scope>#<key>`/`IDEMP`, claimed with a conditional put, expiring by TTL."""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PutError

from chalicelib.store.base import Item, condition_failed, get

IN_PROGRESS = "in_progress"
DONE = "done"


class IdempotencyRecord(Item):
    fingerprint = UnicodeAttribute()
    state = UnicodeAttribute()
    response_status = NumberAttribute(null=True)
    response_body = UnicodeAttribute(null=True)
    response_headers = JSONAttribute(null=True)
    expires_at = NumberAttribute()

    @staticmethod
    def key(scope: str, key: str) -> tuple[str, str]:
        return f"IDEMP#{scope}#{key}", "IDEMP"


def claim(scope: str, key: str, *, fingerprint: str, at: int, ttl: int) -> IdempotencyRecord | None:
    """Claim `key` for a new request: None when claimed, else the live record that holds it."""
    record = IdempotencyRecord(
        *IdempotencyRecord.key(scope, key), fingerprint=fingerprint, state=IN_PROGRESS,
        expires_at=at + ttl, expires_ttl=at + ttl,
    )
    for _ in range(3):
        try:
            record.save(condition=IdempotencyRecord.pk.does_not_exist() | (IdempotencyRecord.expires_at <= at))
            return None
        except PutError as e:
            if not condition_failed(e):
                raise
        existing = get(IdempotencyRecord, *IdempotencyRecord.key(scope, key))
        if existing is not None and existing.expires_at > at:
            return existing
    raise RuntimeError("idempotency key could not be claimed")


def complete(scope: str, key: str, *, status: int, body: str, headers: dict[str, str]) -> None:
    IdempotencyRecord(*IdempotencyRecord.key(scope, key)).update(actions=[
        IdempotencyRecord.state.set(DONE),
        IdempotencyRecord.response_status.set(status),
        IdempotencyRecord.response_body.set(body),
        IdempotencyRecord.response_headers.set(headers),
    ])


def release(scope: str, key: str) -> None:
    IdempotencyRecord(*IdempotencyRecord.key(scope, key)).delete(condition=IdempotencyRecord.state == IN_PROGRESS)
