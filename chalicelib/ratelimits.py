"""Request rate limits per caller: a user, an agent token, or the address that logs in or registers.

Each caller has a fixed one-minute window. A request is counted before any other work on it (right after
authentication, before the body is parsed or a password hashed) by one conditional UpdateItem on the
window's counter: that write is the limit's whole cost, and refused requests do nothing else. Every
answer of a limited route says where the caller stands (`RateLimit-Limit`, `-Remaining`, `-Reset`: the
seconds until the window resets); a refused one is 429 `rate_limited` with `Retry-After`.

Why a counter in the table rather than API Gateway usage plans: usage plans count per API key, and our
callers are users (whatever session or device they call from) and agent tokens, which API Gateway does
not know; AWS also says usage-plan limits are targets that clients can exceed, not a way to block access.
The write costs one write request unit per request, refused ones included (on demand, $0.625 a million
in us-east-1, under a fifth of REST API Gateway's own $3.50 a million), and the items expire by TTL.

Users, agents and addresses have separate limits: an agent legitimately makes several calls per cluster it
reconciles, and login and registration are limited per address because they have no principal yet and each
one hashes a password. A fixed window lets a caller spend up to twice its limit across a window's end; the
windows of different callers end at different seconds so that refused clients do not all retry at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from chalicelib import errors
from chalicelib.clock import now
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.store import rate_counters

WINDOW = 60
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@dataclass(frozen=True)
class Quota:
    """Where a caller stands in its window, this request counted (or refused)."""

    limit: int
    remaining: int
    reset: int
    refused: bool

    @property
    def headers(self) -> dict[str, str]:
        return dict(zip(HEADERS, (str(self.limit), str(self.remaining), str(self.reset)), strict=True))

    def enforce(self) -> None:
        """Raise RateLimited when this request was refused."""
        if self.refused:
            raise errors.RateLimited(
                f"the limit of {self.limit} requests a minute is reached; retry in {self.reset} s", retry_after=self.reset
            )


def take(settings: Settings, *, principal: Principal | None, address: str) -> Quota:
    """Count one request of `principal`, or of `address` when there is no principal (login, registration)."""
    caller, limit = _caller(settings, principal, address)
    at = now()
    start = _window_start(caller, at)
    end = start + WINDOW
    count = rate_counters.take(caller, window_start=start, limit=limit, expires_at=end + WINDOW)
    if count is None:
        return Quota(limit=limit, remaining=0, reset=end - at, refused=True)
    return Quota(limit=limit, remaining=limit - count, reset=end - at, refused=False)


def _caller(settings: Settings, principal: Principal | None, address: str) -> tuple[str, int]:
    if principal is None:
        return f"ip:{_network(address)}", settings.rate_limit_auth_per_minute
    if principal.kind == "agent":
        return f"agent:{principal.id}", settings.rate_limit_agent_per_minute
    return f"user:{principal.id}", settings.rate_limit_user_per_minute


def _network(address: str) -> str:
    """An IPv4 address itself; an IPv6 address by its /64, the prefix one subscriber gets and rotates addresses in."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def _window_start(caller: str, at: int) -> int:
    """The start of the window holding `at`; each caller's windows are shifted by a stable offset of its own."""
    offset = int.from_bytes(hashlib.sha256(caller.encode()).digest()[:4], "big") % WINDOW
    return at - (at - offset) % WINDOW
