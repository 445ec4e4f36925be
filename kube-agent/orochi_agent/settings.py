"""The agent's configuration: read from OROCHI_* (and AWS_*) variables once, validated, frozen."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

DRIVERS = ("local", "cnpg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")  # "cnpg" joins with the Kubernetes driver


class SettingsError(RuntimeError):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class LocalSettings:
    """The local driver's: where the servers' data lives, who runs them, how storage is counted."""

    data_dir: Path
    server_user: str | None
    storage_bytes_per_gb: int
    stop_servers_on_exit: bool


@dataclass(frozen=True)
class KubeSettings:
    """The cnpg driver's: how to reach Kubernetes, where the agent's Lease lives, who this replica is."""

    kubeconfig: str | None
    namespace: str
    identity: str
    storage_class: str
    lease_duration: int
    operator_namespace: str
    scrape_namespaces: tuple[str, ...]
    internal_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    api_url: str
    agent_token: str = field(repr=False)
    region: str
    queue_url: str
    driver: str
    health_port: int
    concurrency: int
    poll_wait_seconds: int
    visibility_timeout: int
    retry_base_seconds: float
    retry_max_seconds: float
    api_timeout_seconds: float
    resync_interval: float
    heartbeat_interval: float
    observe_interval: float
    metrics_interval: float
    drain_seconds: float
    log_level: str
    local: LocalSettings
    kube: KubeSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
        region = read.required("OROCHI_REGION")
        return cls(
            api_url=read.url("OROCHI_API_URL"),
            agent_token=read.required("OROCHI_AGENT_TOKEN"),
            region=region,
            queue_url=read.queue_url("OROCHI_QUEUE_URL"),
            driver=read.choice("OROCHI_DRIVER", DRIVERS),
            health_port=read.integer("OROCHI_HEALTH_PORT", 8081, minimum=0, maximum=65535),
            concurrency=read.integer("OROCHI_CONCURRENCY", 4, minimum=1, maximum=64),
            poll_wait_seconds=read.integer("OROCHI_POLL_WAIT_SECONDS", 10, minimum=0, maximum=20),
            visibility_timeout=read.integer("OROCHI_VISIBILITY_TIMEOUT_SECONDS", 120, minimum=2, maximum=43200),
            retry_base_seconds=read.seconds("OROCHI_RETRY_BASE_SECONDS", 1.0, minimum=0),
            retry_max_seconds=read.seconds("OROCHI_RETRY_MAX_SECONDS", 60.0, minimum=0),
            api_timeout_seconds=read.seconds("OROCHI_API_TIMEOUT_SECONDS", 15.0),
            resync_interval=read.seconds("OROCHI_RESYNC_INTERVAL_SECONDS", 300.0),
            heartbeat_interval=read.seconds("OROCHI_HEARTBEAT_INTERVAL_SECONDS", 30.0),
            observe_interval=read.seconds("OROCHI_OBSERVE_INTERVAL_SECONDS", 5.0),
            metrics_interval=read.seconds("OROCHI_METRICS_INTERVAL_SECONDS", 30.0),
            drain_seconds=read.seconds("OROCHI_DRAIN_SECONDS", 25.0, minimum=0),
            log_level=read.choice("OROCHI_LOG_LEVEL", LOG_LEVELS, default="INFO"),
            local=LocalSettings(
                data_dir=Path(read.text("OROCHI_LOCAL_DATA_DIR", str(_default_data_dir(env, region)))).absolute(),
                server_user=read.text("OROCHI_LOCAL_SERVER_USER", "") or None,
                storage_bytes_per_gb=read.integer("OROCHI_LOCAL_STORAGE_BYTES_PER_GB", 2**30, minimum=1),
                stop_servers_on_exit=read.flag("OROCHI_LOCAL_STOP_SERVERS_ON_EXIT", False),
            ),
            kube=KubeSettings(
                kubeconfig=read.text("KUBECONFIG", "") or None,
                namespace=read.text("OROCHI_KUBE_NAMESPACE", _service_account_namespace() or "orochi-agent"),
                identity=read.text("OROCHI_POD_NAME", socket.gethostname()),
                storage_class=read.text("OROCHI_KUBE_STORAGE_CLASS", "do-block-storage"),
                lease_duration=read.integer("OROCHI_LEASE_DURATION_SECONDS", 15, minimum=5, maximum=300),
                operator_namespace=read.text("OROCHI_CNPG_OPERATOR_NAMESPACE", "cnpg-system"),
                scrape_namespaces=read.names("OROCHI_KUBE_SCRAPE_NAMESPACES"),
                internal_cidrs=read.cidrs("OROCHI_KUBE_INTERNAL_CIDRS"),
            ),
        )


def _service_account_namespace() -> str | None:
    """The namespace of the pod's service account, when running in a pod."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _default_data_dir(env: Mapping[str, str], region: str) -> Path:
    """/var/lib/orochi-agent/<region> as root (a folder the servers' own user can traverse), else under the
    user's state dir. One folder per region: two agents on one machine never share (or prune) each other's."""
    if os.geteuid() == 0:
        return Path("/var/lib/orochi-agent") / region
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "orochi-agent" / region


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def required(self, name: str) -> str:
        value = self._env.get(name, "").strip()
        if not value:
            raise SettingsError(f"{name} is required")
        return value

    def url(self, name: str) -> str:
        value = self.required(name).rstrip("/")
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
        return value

    def queue_url(self, name: str) -> str:
        value = self.url(name)
        if not value.endswith(".fifo"):
            raise SettingsError(f"{name} must name the region's FIFO queue (.fifo), got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str | None = None) -> str:
        value = self.text(name, default) if default is not None else self.required(name)
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise SettingsError(f"{name} must be {bound}, got {value}")
        return value

    def seconds(self, name: str, default: float, *, minimum: float = 0.001) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
        if not value >= minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {raw}")
        return value

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of Kubernetes names (DNS labels)."""
        values = tuple(v.strip() for v in self._env.get(name, "").split(",") if v.strip())
        for value in values:
            if not _DNS_LABEL.match(value):
                raise SettingsError(f"{name} lists Kubernetes namespace names, got {value!r}")
        return values

    def cidrs(self, name: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in self._env.get(name, "").split(",") if v.strip())
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError:
                raise SettingsError(f"{name} lists CIDR ranges like 10.244.0.0/16, got {value!r}") from None
        return values

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw not in ("1", "true", "yes", "0", "false", "no"):
            raise SettingsError(f"{name} must be true or false, got {raw!r}")
        return raw in ("1", "true", "yes")
