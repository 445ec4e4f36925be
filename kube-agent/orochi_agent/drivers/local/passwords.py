"""Random passwords for the driver's own roles, and digests that tell whether an app password is already set.

The digest is PBKDF2-HMAC-SHA256 with 4096 iterations and a random salt: the strength of the SCRAM verifier
PostgreSQL itself stores, which is all an attacker who reads the state file could otherwise get.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_ITERATIONS = 4096


def generate() -> str:
    return secrets.token_urlsafe(24)


def digest(password: str) -> str:
    salt = secrets.token_bytes(16)
    return _digest(password, salt=salt, iterations=_ITERATIONS)


def matches(password: str, expected: str | None) -> bool:
    if not expected:
        return False
    try:
        _, iterations, salt, _ = expected.split("$")
        computed = _digest(password, salt=base64.b64decode(salt), iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(computed, expected)


def _digest(password: str, *, salt: bytes, iterations: int) -> str:
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2-sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
