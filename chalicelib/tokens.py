"""Access tokens: HS256 JWTs with pinned algorithm and required claims."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from chalicelib import errors
from chalicelib.settings import Settings

ALGORITHM = "HS256"
ACCESS = "access"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "exp", "typ"]


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
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """The verified claims; Unauthorized for any token that is not a current access token of ours."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError:
        raise errors.Unauthorized("the access token is invalid or expired") from None
    if claims["typ"] != ACCESS or not isinstance(claims["sub"], str) or not isinstance(claims["sid"], str):
        raise errors.Unauthorized("the access token is invalid or expired")
    return AccessClaims(user_id=claims["sub"], session_id=claims["sid"], issued_at=int(claims["iat"]))
