"""The one interface every driver implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from orochi_agent.models import DesiredState, Endpoint, MetricValues

ObservedPhase = Literal["provisioning", "ready", "degraded", "failed"]


class DriverError(Exception):
    """Applying or observing failed. `transient` errors are retried; the others are the cluster's own.

    The message is shown to the cluster's users: it never carries a secret.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class Refused(DriverError):
    """The desired state cannot be served by this driver (an unknown version, say); retrying cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class Observation:
    """What the driver really sees of one cluster, at the generation it last applied."""

    generation: int
    phase: ObservedPhase
    ready_instances: int
    primary: str | None = None
    endpoint: Endpoint | None = None
    message: str | None = None


class Driver(Protocol):
    name: str

    def versions(self) -> tuple[str, ...]:
        """The PostgreSQL major versions this driver can serve, e.g. ("15", "18")."""
        ...

    def apply(self, desired: DesiredState) -> None:
        """Make the cluster match `desired` (never deleting): idempotent, and a no-op when it already does.

        Raises Refused when `desired` cannot be served, DriverError otherwise. Records `desired.generation`
        as applied only on success.
        """
        ...

    def delete(self, cluster_id: str) -> bool:
        """Remove everything the driver holds of the cluster. True once nothing remains (idempotent)."""
        ...

    def observe(self, cluster_id: str) -> Observation | None:
        """The cluster as it really is; None when the driver holds nothing of it."""
        ...

    def clusters(self) -> dict[str, int]:
        """Every cluster the driver holds something of, with the generation it last applied (0 if none yet)."""
        ...

    def metrics(self, cluster_id: str) -> MetricValues | None:
        """A sample of the cluster's real metrics; None when it has no server to ask."""
        ...

    def ping(self) -> None:
        """Raise DriverError when the driver cannot work (readiness)."""
        ...

    def close(self) -> None:
        """Release what the driver holds open, on the agent's exit."""
        ...
