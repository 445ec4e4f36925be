from __future__ import annotations

from typing import Any

from chalicelib import auth, session_cookie
from chalicelib.session_cookie import CLEARS_COOKIE, HEADER, ORIGIN_NOT_ALLOWED, SETS_COOKIE
from chalicelib.web import Call, Reply, Router

router = Router(__name__, tag="auth")


@router.route("POST", "/v1/auth/register", auth="none", status=201, body=auth.RegisterRequest,
              response=auth.TokenResponse, errors=(404, 409), rate_limit="address", headers=(HEADER,),
              response_headers=SETS_COOKIE)
def register(call: Call[auth.RegisterRequest]) -> Reply:
    """Create an account and its organization, or join the organization of an invitation

    With `X-Orochi-Session: cookie` the refresh token is set in the `orochi_refresh` cookie instead of the body.
    """
    return session_cookie.answer(call.headers, auth.register(call.settings, call.body))


@router.route("POST", "/v1/auth/login", auth="none", body=auth.LoginRequest, response=auth.TokenResponse,
              errors=(401, 409, 429), rate_limit="address", headers=(HEADER,), response_headers=SETS_COOKIE)
def login(call: Call[auth.LoginRequest]) -> Reply:
    """Exchange e-mail and password for tokens

    With `X-Orochi-Session: cookie` the refresh token is set in the `orochi_refresh` cookie instead of the body.
    """
    return session_cookie.answer(call.headers, auth.login(call.settings, call.body))


@router.route("POST", "/v1/auth/refresh", auth="none", body=auth.RefreshRequest, response=auth.TokenResponse,
              errors=(401, 403), headers=(HEADER,), body_optional_with=HEADER, response_headers=SETS_COOKIE,
              error_descriptions={403: ORIGIN_NOT_ALLOWED})
def refresh(call: Call[Any]) -> Reply:
    """Rotate a refresh token

    The refresh token is the body's, or with `X-Orochi-Session: cookie` the `orochi_refresh` cookie's (the body
    then empty or `{}`, and the `Origin` one the API allows); the rotated one goes back the same way. Presenting a
    spent refresh token revokes its session.
    """
    token = session_cookie.presented_refresh_token(call.settings, call.headers, call.body)
    return session_cookie.answer(call.headers, auth.refresh(call.settings, token))


@router.route("POST", "/v1/auth/logout", status=204, response_headers=CLEARS_COOKIE)
def logout(call: Call[Any]) -> Reply:
    """End the current session: its refresh and access tokens stop working"""
    auth.logout(call.user)
    return Reply(None, headers=session_cookie.cleared())


@router.route("GET", "/v1/auth/me", response=auth.UserOut)
def me(call: Call[Any]) -> auth.UserOut:
    """The signed-in user"""
    return auth.me(call.user)
