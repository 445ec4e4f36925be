"""The agent's own wire models: the job on the queue and the agent API's bodies.

They mirror the control plane's schemas (tests/test_agent_contract.py checks them against its
`/openapi.json`) but import nothing of it. Secrets are `SecretStr`, so no repr or log line shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Phase = Literal["provisioning", "ready", "degraded", "failed", "deleted"]

# The API's bounds on numbers (its shapes.MAX_INTEGER and MAX_MEASURE: what JavaScript and DynamoDB hold), restated
# here because the agent owns its wire models; tests/test_agent_contract.py checks they agree.
MAX_INTEGER = 2**53 - 1
MAX_MEASURE = 1e12


class Wire(BaseModel):
    """A body the API sends: fields the agent does not know yet are ignored, so the API can add them."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Outgoing(BaseModel):
    """A body the agent sends: exactly the fields the API accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Job(Wire):
    """A hint that a cluster changed; the desired state itself comes from the API."""

    v: int
    kind: Literal["reconcile"]
    cluster_id: str
    org_id: str
    region: str
    generation: int
    enqueued_at: int


class S3Credentials(Wire):
    endpoint: str
    bucket: str
    region: str
    prefix: str | None = None
    access_key_id: str
    secret_access_key: SecretStr


class DesiredStorageTiers(Wire):
    cold: S3Credentials | None = None
    frozen: S3Credentials | None = None


class DesiredState(Wire):
    id: str
    org_id: str
    name: str
    region: str
    generation: int
    deleting: bool
    postgres_version: str
    image: str
    size: str
    vcpu: int
    memory_gb: int
    instances: int
    storage_gb: int
    storage_tiers: DesiredStorageTiers | None = None
    ip_allowlist: list[str]
    database: str
    owner: str
    password: SecretStr


class RegionCluster(Wire):
    id: str
    org_id: str
    generation: int
    status: str


class RegionClusterPage(Wire):
    items: list[RegionCluster]
    next_cursor: str | None = None


class Endpoint(Outgoing):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


class StatusReport(Outgoing):
    observed_generation: int = Field(ge=0, le=MAX_INTEGER)
    phase: Phase
    ready_instances: int = Field(ge=0, le=64)
    primary: str | None = Field(default=None, max_length=253)
    endpoint: Endpoint | None = None
    message: str | None = Field(default=None, max_length=1000)


class ReportOut(Wire):
    applied: bool
    status: str
    generation: int
    observed_generation: int


class MetricValues(Outgoing):
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    memory_percent: float | None = Field(default=None, ge=0, le=100)
    storage_used_gb: float | None = Field(default=None, ge=0, le=MAX_MEASURE)
    storage_used_percent: float | None = Field(default=None, ge=0, le=100)
    database_size_gb: float | None = Field(default=None, ge=0, le=MAX_MEASURE)
    connections: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    max_connections: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    replication_lag_seconds: float | None = Field(default=None, ge=0, le=MAX_MEASURE)
    transactions_per_second: float | None = Field(default=None, ge=0, le=MAX_MEASURE)


class MetricsSample(Outgoing):
    cluster_id: str = Field(min_length=1, max_length=64)
    at: int = Field(ge=0, le=MAX_INTEGER)
    values: MetricValues


class MetricsBatch(Outgoing):
    samples: list[MetricsSample] = Field(min_length=1, max_length=500)


class MetricsAccepted(Wire):
    accepted: int


class Heartbeat(Outgoing):
    agent_version: str = Field(min_length=1, max_length=64)
    driver: str = Field(min_length=1, max_length=32)
    clusters: int = Field(ge=0, le=MAX_INTEGER)


class HeartbeatOut(Wire):
    region: str
    server_time: int
