"""The control plane's configuration: read from the environment once, validated, frozen."""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

MIN_JWT_SECRET_BYTES = 32
ENCRYPTION_KEY_BYTES = 32


class SettingsError(RuntimeError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    stage: str
    table_name: str
    jwt_secret: bytes
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl: int
    refresh_absolute_ttl: int
    refresh_idle_ttl: int
    password_memory_kib: int
    password_iterations: int
    password_lanes: int
    login_max_failures: int
    login_failure_window: int
    invitation_ttl: int
    allowed_origins: tuple[str, ...]
    encryption_keys: tuple[tuple[str, bytes], ...]
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        reader = _Reader(env)
        settings = cls(
            stage=reader.text("STAGE", "dev"),
            table_name=reader.text("TABLE_NAME", "orochi"),
            jwt_secret=reader.jwt_secret("JWT_SECRET"),
            jwt_issuer=reader.text("JWT_ISSUER", "orochi-db"),
            jwt_audience=reader.text("JWT_AUDIENCE", "orochi-api"),
            access_token_ttl=reader.seconds("ACCESS_TOKEN_TTL_SECONDS", 15 * 60),
            refresh_absolute_ttl=reader.seconds("REFRESH_ABSOLUTE_TTL_SECONDS", 30 * 86400),
            refresh_idle_ttl=reader.seconds("REFRESH_IDLE_TTL_SECONDS", 7 * 86400),
            password_memory_kib=reader.integer("PASSWORD_HASH_MEMORY_KIB", 19 * 1024, minimum=19 * 1024),
            password_iterations=reader.integer("PASSWORD_HASH_ITERATIONS", 2, minimum=2),
            password_lanes=reader.integer("PASSWORD_HASH_LANES", 1, minimum=1),
            login_max_failures=reader.integer("LOGIN_MAX_FAILURES", 10, minimum=1),
            login_failure_window=reader.seconds("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60),
            invitation_ttl=reader.seconds("INVITATION_TTL_SECONDS", 7 * 86400),
            allowed_origins=reader.origins("ALLOWED_ORIGINS"),
            encryption_keys=reader.encryption_keys("ENCRYPTION_KEY"),
            log_level=reader.text("LOG_LEVEL", "INFO").upper(),
        )
        if settings.refresh_idle_ttl > settings.refresh_absolute_ttl:
            raise SettingsError("REFRESH_IDLE_TTL_SECONDS must not exceed REFRESH_ABSOLUTE_TTL_SECONDS")
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        return value

    def seconds(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1)

    def jwt_secret(self, name: str) -> bytes:
        secret = self._env.get(name, "").encode()
        if len(secret) < MIN_JWT_SECRET_BYTES:
            raise SettingsError(
                f"{name} must be at least {MIN_JWT_SECRET_BYTES} bytes (got {len(secret)}); "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return secret

    def origins(self, name: str) -> tuple[str, ...]:
        origins = tuple(o.strip().rstrip("/") for o in self._env.get(name, "").split(",") if o.strip())
        for origin in origins:
            if origin == "*" or "://" not in origin:
                raise SettingsError(f"{name} lists exact origins like https://app.example.com, got {origin!r}")
        return origins

    def encryption_keys(self, name: str) -> tuple[tuple[str, bytes], ...]:
        """`kid:base64key[,kid:base64key...]`; the first key encrypts, every key decrypts."""
        raw = self._env.get(name, "").strip()
        if not raw:
            raise SettingsError(
                f"{name} is required: kid:base64(32 random bytes), e.g. "
                "k1:$(python -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')"
            )
        keys: list[tuple[str, bytes]] = []
        for entry in raw.split(","):
            kid, sep, encoded = entry.strip().partition(":")
            if not sep or not kid.isalnum() or len(kid) > 16:
                raise SettingsError(f"{name}: each key is kid:base64key with an alphanumeric kid of at most 16 characters")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise SettingsError(f"{name}: key {kid!r} is not valid base64") from None
            if len(key) != ENCRYPTION_KEY_BYTES:
                raise SettingsError(f"{name}: key {kid!r} must decode to {ENCRYPTION_KEY_BYTES} bytes, got {len(key)}")
            if any(kid == known for known, _ in keys):
                raise SettingsError(f"{name}: key id {kid!r} appears twice")
            keys.append((kid, key))
        return tuple(keys)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env(os.environ)
