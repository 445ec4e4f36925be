"""Password hashing, opaque tokens and encryption at rest.

`cryptography` is imported where it is used (hashing a password, sealing a secret), so a cold start that
serves neither does not load it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass

from chalicelib.settings import Settings

_PHC_PARAMS = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")
_HASH_BYTES = 32
_SALT_BYTES = 16
_NONCE_BYTES = 12


@dataclass(frozen=True)
class PasswordPolicy:
    """Argon2id cost parameters (memory in KiB)."""

    memory_kib: int
    iterations: int
    lanes: int

    def hash(self, password: str) -> str:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        kdf = Argon2id(
            salt=os.urandom(_SALT_BYTES),
            length=_HASH_BYTES,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        return kdf.derive_phc_encoded(password.encode())

    def verify(self, password: str, encoded: str) -> bool:
        from cryptography.exceptions import InvalidKey
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        try:
            Argon2id.verify_phc_encoded(password.encode(), encoded)
        except (InvalidKey, ValueError):
            return False
        return True

    def needs_rehash(self, encoded: str) -> bool:
        """True when `encoded` was made with weaker parameters than this policy's."""
        match = _PHC_PARAMS.match(encoded)
        if match is None:
            return True
        memory, iterations, lanes = (int(g) for g in match.groups())
        return memory < self.memory_kib or iterations < self.iterations or lanes < self.lanes


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier such as `usr_3kTMd9...` (128 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16).replace('-', 'x').replace('_', 'y')}"


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of an opaque token: SHA-256, hex. Tokens carry 256 bits, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Cipher:
    """AES-256-GCM with key ids: `kid.base64(nonce || ciphertext)`. The first key encrypts, all decrypt."""

    def __init__(self, keys: tuple[tuple[str, bytes], ...]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._primary = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._primary].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self._primary}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, context: str) -> str:
        """`context` must be the one given to encrypt (it binds a ciphertext to its record and field)."""
        kid, _, payload = token.partition(".")
        aead = self._keys.get(kid)
        if aead is None:
            raise ValueError(f"ciphertext uses unknown key id {kid!r}")
        from cryptography.exceptions import InvalidTag

        raw = base64.urlsafe_b64decode(payload)
        try:
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            raise ValueError("ciphertext failed authentication") from None


@functools.cache
def cipher(settings: Settings) -> Cipher:
    return Cipher(settings.encryption_keys)
