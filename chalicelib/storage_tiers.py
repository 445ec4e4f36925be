"""Storage tiers: the customer's own S3-compatible buckets a cluster moves cold and frozen data to.

The secret access keys are sealed at rest (AES-GCM, bound to the cluster and tier); users read them
masked, the region's agent in the clear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, StringConstraints

from chalicelib import crypto
from chalicelib.settings import Settings
from chalicelib.shapes import Body, Documented, Out

TIERS = ("cold", "frozen")
MASK = "********"


VISIBLE_ASCII = r"^[!-~]+$"


def _visible_ascii(value: object) -> object:
    """VISIBLE_ASCII for a secret, before SecretStr hides it (pydantic cannot apply a pattern to a SecretStr)."""
    if isinstance(value, str) and not re.fullmatch(VISIBLE_ASCII, value):
        raise ValueError("must be visible ASCII characters")
    return value


class S3Target(Body):
    """A customer's own S3-compatible bucket."""

    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$", max_length=512)]
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!_.*'()/-]{0,256}$")] | None = None
    access_key_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=VISIBLE_ASCII)]
    secret_access_key: Annotated[SecretStr, Field(min_length=1, max_length=256), BeforeValidator(_visible_ascii),
                                 Documented({"pattern": VISIBLE_ASCII})]


class StorageTiers(Body):
    cold: S3Target | None = None
    frozen: S3Target | None = None


class S3TargetOut(Out):
    """A bucket as the API shows it: the secret key masked to users, in the clear to the region's agent."""

    endpoint: str
    bucket: str
    region: str
    prefix: str | None = None
    access_key_id: str
    secret_access_key: str


class StorageTiersOut(Out):
    cold: S3TargetOut | None = None
    frozen: S3TargetOut | None = None


def _context(cluster_id: str, tier: str) -> str:
    return f"cluster:{cluster_id}:{tier}:secret_access_key"


def seal(settings: Settings, cluster_id: str, tiers: StorageTiers | None) -> dict[str, Any] | None:
    """The stored form of `tiers`: each secret key encrypted for its cluster and tier."""
    if tiers is None:
        return None
    cipher = crypto.cipher(settings)
    sealed = {}
    for tier in TIERS:
        target: S3Target | None = getattr(tiers, tier)
        if target is not None:
            fields = target.model_dump(exclude={"secret_access_key"}, exclude_none=True)
            fields["secret_access_key"] = cipher.encrypt(target.secret_access_key.get_secret_value(),
                                                         context=_context(cluster_id, tier))
            sealed[tier] = fields
    return sealed or None


def masked(stored: dict[str, Any] | None) -> StorageTiersOut | None:
    """The stored tiers as users see them: secret keys masked."""
    return _view(stored, lambda tier, sealed: MASK)


def revealed(settings: Settings, cluster_id: str, stored: dict[str, Any] | None) -> StorageTiersOut | None:
    """The stored tiers with their secret keys decrypted, for the cluster's agent."""
    cipher = crypto.cipher(settings)
    return _view(stored, lambda tier, sealed: cipher.decrypt(sealed, context=_context(cluster_id, tier)))


def _view(stored: dict[str, Any] | None, secret: Callable[[str, str], str]) -> StorageTiersOut | None:
    if not stored:
        return None
    return StorageTiersOut(**{
        tier: S3TargetOut(**{**target, "secret_access_key": secret(tier, target["secret_access_key"])})
        for tier, target in stored.items()
    })
