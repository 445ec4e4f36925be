"""Access tokens: HS256 JWTs with pinned algorithm and required claims.

PyJWT is imported on first use: it imports `cryptography` (for algorithms we never accept), which a
cold start serving anything else should not pay for.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib import clock, errors
from chalicelib.settings import Settings

ALGORITHM = "HS256"
ACCESS = "access"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "exp", "typ"]
CLOCK_SKEW = 30


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str
    issued_at: int


def issue_access_token(settings: Settings, *, user_id: str, session_id: str, at: int) -> str:
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "sid": session_id,
        "iat": at,
        "exp": at + settings.access_token_ttl,
        "typ": ACCESS,
    }
    import jwt

    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """The verified claims; Unauthorized for any token that is not a current access token of ours.

    Time is checked here against the control plane's clock rather than by PyJWT: a token must have been
    issued (give or take CLOCK_SKEW), must not have expired, and must not live longer than the
    configured lifetime, whatever its signature says.
    """
    import jwt

    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise errors.Unauthorized("the access token is invalid or expired") from None
    if not _current(claims, settings, at=clock.now()):
        raise errors.Unauthorized("the access token is invalid or expired")
    return AccessClaims(user_id=claims["sub"], session_id=claims["sid"], issued_at=int(claims["iat"]))


def _current(claims: dict[str, object], settings: Settings, *, at: int) -> bool:
    issued, expires = claims["iat"], claims["exp"]
    return (
        claims["typ"] == ACCESS and isinstance(claims["sub"], str) and isinstance(claims["sid"], str)
        and isinstance(issued, int) and isinstance(expires, int)
        and issued <= at + CLOCK_SKEW and at < expires and expires - issued <= settings.access_token_ttl
    )
