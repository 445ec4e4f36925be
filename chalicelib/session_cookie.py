"""Browser sessions: the refresh token in an httpOnly cookie, where page scripts cannot read it.

A client opts in with `X-Orochi-Session: cookie` on register, login and refresh (sent with `credentials:
'include'`): the answer then leaves `refresh_token` out of the body and sets it in the `orochi_refresh` cookie,
scoped to /v1/auth and living exactly as long as the session may. Refresh reads the cookie only with that header,
and only from an Origin that ALLOWED_ORIGINS lists: the custom header forces a CORS preflight, which only listed
origins pass, and the Origin check stops whatever gets past without one. Without the header no route reads the
cookie, so the cookie alone authenticates nothing. Logout clears it, whichever flow the session used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chalicelib import auth, cors, errors
from chalicelib.settings import Settings
from chalicelib.web import Reply

HEADER = "X-Orochi-Session"
NAME = "orochi_refresh"
PATH = "/v1/auth"
_ATTRIBUTES = "HttpOnly; Secure; SameSite=Strict"
_VALUE = re.compile(r"[!-~]{1,512}")  # what a refresh token in the body may be (shapes.Token)

# Answers holding tokens are never stored by a cache (RFC 6749 5.1).
_NO_STORE = {"Cache-Control": "no-store"}

# For the document: what the success answers of the session routes may set.
SETS_COOKIE = {"Set-Cookie": f"with `{HEADER}: cookie`: `{NAME}=<refresh token>; Path={PATH}; {_ATTRIBUTES}; "
                             "Max-Age=<seconds until the session's absolute expiry>`",
               "Cache-Control": "`no-store`: the answer holds tokens"}
CLEARS_COOKIE = {"Set-Cookie": f"always: `{NAME}=; Path={PATH}; Max-Age=0; {_ATTRIBUTES}` (clears a cookie session's "
                               "cookie; a browser applies it to a request sent with `credentials: 'include'`)"}
ORIGIN_NOT_ALLOWED = (f"`origin_not_allowed`: with `{HEADER}: cookie` the `Origin` header must be one the API "
                      "allows (ALLOWED_ORIGINS); nothing was rotated")


def requested(headers: Mapping[str, str]) -> bool:
    """Whether the request opts in (`headers` as `Call.headers`, names in lower case)."""
    return headers.get(HEADER.lower()) == "cookie"


def answer(headers: Mapping[str, str], tokens: auth.Tokens) -> Reply:
    """The body flow's answer; for a cookie session, that answer without `refresh_token`, which goes in the cookie.
    Neither may be cached."""
    if not requested(headers):
        return Reply(tokens.answer, headers=dict(_NO_STORE))
    cookie = f"{NAME}={tokens.refresh_token}; Path={PATH}; {_ATTRIBUTES}; Max-Age={tokens.refresh_expires_in}"
    return Reply(tokens.answer.model_copy(update={"refresh_token": None}), headers={**_NO_STORE, "Set-Cookie": cookie})


def cleared() -> dict[str, str]:
    """The header that removes the cookie."""
    return {"Set-Cookie": f"{NAME}=; Path={PATH}; Max-Age=0; {_ATTRIBUTES}"}


def presented_refresh_token(settings: Settings, headers: Mapping[str, str], body: auth.RefreshRequest | None) -> str:
    """The refresh token a refresh presents: the body's, or with the header, the cookie's.

    With the header: OriginNotAllowed unless the Origin is listed, Invalid if the body holds a token too (the cookie
    session's token never travels in a body), and the body flow's Unauthorized for a bad token when there is no
    usable cookie. Without it the body is required (chalicelib.web parses it) and the cookie is never read.
    """
    if not requested(headers):
        assert body is not None
        return body.refresh_token
    if cors.listed_origin(settings, headers.get("origin", "")) is None:
        raise errors.OriginNotAllowed(f"a request with {HEADER}: cookie must come from an allowed Origin")
    if body is not None:
        raise errors.Invalid(f"with {HEADER}: cookie the refresh token comes from the cookie, not the body",
                             details=[{"field": "refresh_token", "message": f"not accepted with {HEADER}: cookie"}])
    token = _cookie(headers.get("cookie", ""))
    if token is None or not _VALUE.fullmatch(token):
        raise errors.Unauthorized(auth.INVALID_REFRESH)
    return token


def _cookie(header: str) -> str | None:
    """The value of the first `orochi_refresh` in a Cookie header (RFC 6265 5.4: the most specific path first)."""
    for pair in header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name.strip() == NAME:
            return value.strip()
    return None
