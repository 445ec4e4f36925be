"""Idempotency keys: claimed with a conditional put, expiring by TTL; see `keys` for where they live.

A claim in progress is only held until `in_progress_until`: a request that died with its function (a
Lambda killed at its timeout never releases anything) leaves a claim the next retry may take over.
"""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, UnicodeAttribute

from chalicelib.store import keys
from chalicelib.store.table import IntegerAttribute, OptionalIntegerAttribute, Item, LostRace, get, written

IN_PROGRESS = "in_progress"
DONE = "done"


class IdempotencyRecord(Item):
    fingerprint = UnicodeAttribute()
    state = UnicodeAttribute()
    response_status = OptionalIntegerAttribute()
    response_body = UnicodeAttribute(null=True)
    response_headers = JSONAttribute(null=True)
    expires_at = IntegerAttribute()
    in_progress_until = OptionalIntegerAttribute()
    holder = UnicodeAttribute(null=True)


def claim(scope: str, key: str, *, holder: str, fingerprint: str, at: int, ttl: int,
          in_progress_for: int) -> IdempotencyRecord | None:
    """Claim `key` for the request `holder`: None when claimed, else the live record that holds it.

    A record that expired, or whose claim is still in progress past `in_progress_until`, is taken over.
    Raises LostRace when the record changed between the failed claim and the read of it (retry).
    """
    record = IdempotencyRecord(
        *keys.idempotency(scope, key), fingerprint=fingerprint, state=IN_PROGRESS,
        expires_at=at + ttl, expires_ttl=at + ttl, in_progress_until=at + in_progress_for, holder=holder,
    )
    free = (IdempotencyRecord.pk.does_not_exist() | (IdempotencyRecord.expires_at <= at)
            | ((IdempotencyRecord.state == IN_PROGRESS) & (IdempotencyRecord.in_progress_until <= at)))
    if written(lambda: record.save(condition=free)):
        return None
    existing = get(IdempotencyRecord, keys.idempotency(scope, key))
    if existing is None or existing.expires_at <= at or _abandoned(existing, at):
        raise LostRace()
    return existing


def _abandoned(record: IdempotencyRecord, at: int) -> bool:
    return record.state == IN_PROGRESS and record.in_progress_until is not None and record.in_progress_until <= at


def complete(scope: str, key: str, *, holder: str, status: int, body: str, headers: dict[str, str]) -> None:
    """Store the answer of the request that holds the claim (one whose claim was taken over writes nothing)."""
    written(lambda: IdempotencyRecord(*keys.idempotency(scope, key)).update(
        actions=[
            IdempotencyRecord.state.set(DONE),
            IdempotencyRecord.response_status.set(status),
            IdempotencyRecord.response_body.set(body),
            IdempotencyRecord.response_headers.set(headers),
            IdempotencyRecord.in_progress_until.remove(),
        ],
        condition=(IdempotencyRecord.state == IN_PROGRESS) & (IdempotencyRecord.holder == holder),
    ))


def release(scope: str, key: str, *, holder: str) -> None:
    """Give the claim up (the request failed), so a retry runs afresh."""
    written(lambda: IdempotencyRecord(*keys.idempotency(scope, key)).delete(
        condition=(IdempotencyRecord.state == IN_PROGRESS) & (IdempotencyRecord.holder == holder)))
