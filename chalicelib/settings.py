"""The control plane's configuration: read from the environment once, validated, frozen."""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_REGIONS = "nyc1:New York 1,sfo3:San Francisco 3,fra1:Frankfurt 1,ams3:Amsterdam 3,sgp1:Singapore 1"
DEFAULT_POSTGRES_IMAGES = (
    "16=ghcr.io/cloudnative-pg/postgresql:16.10,"
    "17=ghcr.io/cloudnative-pg/postgresql:17.6,"
    "18=ghcr.io/cloudnative-pg/postgresql:18.0"
)
MIN_JWT_SECRET_BYTES = 32
MIN_SCRAPE_TOKEN_BYTES = 24
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
    rate_limit_user_per_minute: int
    rate_limit_agent_per_minute: int
    rate_limit_auth_per_minute: int
    invitation_ttl: int
    allowed_origins: tuple[str, ...]
    encryption_keys: tuple[tuple[str, bytes], ...]
    log_level: str
    regions: tuple[tuple[str, str], ...]
    postgres_images: tuple[tuple[str, str], ...]
    storage_gb_min: int
    storage_gb_max: int
    org_cluster_quota: int
    job_queue_url_template: str
    idempotency_ttl: int
    function_timeout: int
    reconcile_stale_after: int
    operation_deadline: int
    metrics_retention: int
    tombstone_retention: int
    autoscale_max_sample_gap: int
    autoscale_trend_window: int
    metrics_token: str | None

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
            rate_limit_user_per_minute=reader.integer("RATE_LIMIT_USER_PER_MINUTE", 700, minimum=1),
            rate_limit_agent_per_minute=reader.integer("RATE_LIMIT_AGENT_PER_MINUTE", 6000, minimum=1),
            rate_limit_auth_per_minute=reader.integer("RATE_LIMIT_AUTH_PER_MINUTE", 60, minimum=1),
            invitation_ttl=reader.seconds("INVITATION_TTL_SECONDS", 7 * 86400),
            allowed_origins=reader.origins("ALLOWED_ORIGINS"),
            encryption_keys=reader.encryption_keys("ENCRYPTION_KEY"),
            log_level=reader.text("LOG_LEVEL", "INFO").upper(),
            regions=reader.pairs("REGIONS", DEFAULT_REGIONS, separator=":"),
            postgres_images=reader.pairs("POSTGRES_IMAGES", DEFAULT_POSTGRES_IMAGES, separator="="),
            storage_gb_min=reader.integer("STORAGE_GB_MIN", 10, minimum=1),
            storage_gb_max=reader.integer("STORAGE_GB_MAX", 4096, minimum=1),
            org_cluster_quota=reader.integer("ORG_CLUSTER_QUOTA", 10, minimum=0),
            job_queue_url_template=reader.queue_url_template("JOB_QUEUE_URL_TEMPLATE"),
            idempotency_ttl=reader.seconds("IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
            function_timeout=reader.seconds("FUNCTION_TIMEOUT_SECONDS", 30),
            reconcile_stale_after=reader.seconds("RECONCILE_STALE_AFTER_SECONDS", 5 * 60),
            operation_deadline=reader.seconds("OPERATION_DEADLINE_SECONDS", 60 * 60),
            metrics_retention=reader.seconds("METRICS_RETENTION_SECONDS", 7 * 86400),
            tombstone_retention=reader.seconds("TOMBSTONE_RETENTION_SECONDS", 30 * 86400),
            autoscale_max_sample_gap=reader.seconds("AUTOSCALE_MAX_SAMPLE_GAP_SECONDS", 90),
            autoscale_trend_window=reader.integer("AUTOSCALE_TREND_WINDOW_SECONDS", 3600, minimum=600),
            metrics_token=reader.scrape_token("METRICS_TOKEN"),
        )
        if settings.refresh_idle_ttl > settings.refresh_absolute_ttl:
            raise SettingsError("REFRESH_IDLE_TTL_SECONDS must not exceed REFRESH_ABSOLUTE_TTL_SECONDS")
        if settings.storage_gb_min > settings.storage_gb_max:
            raise SettingsError("STORAGE_GB_MIN must not exceed STORAGE_GB_MAX")
        return settings

    @property
    def region_slugs(self) -> tuple[str, ...]:
        return tuple(slug for slug, _ in self.regions)

    def job_queue_url(self, region: str) -> str:
        return self.job_queue_url_template.format(region=region)


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

    def pairs(self, name: str, default: str, *, separator: str) -> tuple[tuple[str, str], ...]:
        """`key<separator>value,...`, e.g. REGIONS=nyc1:New York 1,fra1:Frankfurt 1."""
        pairs: list[tuple[str, str]] = []
        for entry in (self._env.get(name, "").strip() or default).split(","):
            key, sep, value = entry.strip().partition(separator)
            if not sep or not key.strip() or not value.strip():
                raise SettingsError(f"{name}: each entry is key{separator}value, got {entry.strip()!r}")
            pairs.append((key.strip(), value.strip()))
        if len({key for key, _ in pairs}) != len(pairs):
            raise SettingsError(f"{name} lists a key twice")
        return tuple(pairs)

    def queue_url_template(self, name: str) -> str:
        template = self.text(name, "")
        if "{region}" not in template or not template.endswith(".fifo"):
            raise SettingsError(f"{name} must contain {{region}} and name a FIFO queue (.fifo), got {template!r}")
        return template

    def jwt_secret(self, name: str) -> bytes:
        secret = self._env.get(name, "").encode()
        if len(secret) < MIN_JWT_SECRET_BYTES:
            raise SettingsError(
                f"{name} must be at least {MIN_JWT_SECRET_BYTES} bytes (got {len(secret)}); "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return secret

    def scrape_token(self, name: str) -> str | None:
        """The bearer token that GET /metrics answers to; None (unset) keeps that route closed."""
        token = self._env.get(name, "").strip()
        if token and len(token) < MIN_SCRAPE_TOKEN_BYTES:
            raise SettingsError(f"{name} must be at least {MIN_SCRAPE_TOKEN_BYTES} characters when set (got {len(token)})")
        return token or None

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
