"""Cursors of paginated lists: opaque, tamper-evident, and good only for the list and caller they were issued to.

A cursor is the store's start key for the next page, authenticated with an HMAC-SHA256 whose key is
derived from JWT_SECRET and whose message names the listing (e.g. `clusters:<org>:<caller>`). Anything
that does not verify — a crafted key, a cursor of another list or another caller, a truncated one — is
400 `invalid_cursor`, before the store sees it; so is a start key DynamoDB itself refuses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from chalicelib import errors
from chalicelib.settings import Settings
from chalicelib.shapes import CURSOR_MAX_LENGTH
from chalicelib.store.table import BadStartKey, Item, StartKey
from chalicelib.store.table import Page as StoredPage

S = TypeVar("S", bound=Item)
_MAC_BYTES = 16


@functools.cache
def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"orochi list cursor v1", hashlib.sha256).digest()


def _mac(settings: Settings, listing: str, payload: bytes) -> bytes:
    return hmac.new(_key(settings.jwt_secret), listing.encode() + b"\n" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Decode unpadded URL-safe base64, refusing any other spelling of the same bytes (e.g. other padding bits)."""
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(decoded) != text:
        raise ValueError("not the canonical encoding")
    return decoded


def seal(settings: Settings, last_key: StartKey | None, *, listing: str) -> str | None:
    """The cursor of the page after the one that ended at `last_key` (None: that was the last page)."""
    if not last_key:
        return None
    payload = json.dumps(last_key, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(payload)}.{_b64(_mac(settings, listing, payload))}"


def open_cursor(settings: Settings, cursor: str | None, *, listing: str) -> StartKey | None:
    """The start key a cursor of `listing` carries; InvalidCursor unless this API issued it for that listing."""
    if not cursor:
        return None
    if len(cursor) > CURSOR_MAX_LENGTH:
        raise _invalid()
    encoded, _, mac = cursor.partition(".")
    try:
        payload, given = _unb64(encoded), _unb64(mac)
        if not hmac.compare_digest(given, _mac(settings, listing, payload)):
            raise ValueError
        start = json.loads(payload)
        if not isinstance(start, dict):
            raise ValueError
    except (ValueError, binascii.Error):
        raise _invalid() from None
    return start


def _invalid() -> errors.InvalidCursor:
    return errors.InvalidCursor("cursor is not valid", details=[{"field": "cursor", "message": "not a cursor of this listing"}])


@contextmanager
def _start_key_refused() -> Iterator[None]:
    try:
        yield
    except BadStartKey:
        raise _invalid() from None


def listing(settings: Settings, cursor: str | None, *, name: str,
            read: Callable[[StartKey | None], StoredPage[S]]) -> tuple[list[S], str | None]:
    """One page of the listing `name` — `read(start key)` from the store — and the cursor of the next one."""
    start = open_cursor(settings, cursor, listing=name)
    with _start_key_refused():
        stored = read(start)
    return stored.items, seal(settings, stored.last_key, listing=name)
