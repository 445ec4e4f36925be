from __future__ import annotations

from typing import Any

from chalicelib import auth
from chalicelib.web import Call, Reply, Router

router = Router(__name__, tag="auth")


@router.route("POST", "/v1/auth/register", auth="none", status=201, body=auth.RegisterRequest,
              response=auth.TokenResponse, errors=(404, 409), rate_limit="address")
def register(call: Call[auth.RegisterRequest]) -> auth.TokenResponse:
    """Create an account and its organization, or join the organization of an invitation"""
    return auth.register(call.settings, call.body)


@router.route("POST", "/v1/auth/login", auth="none", body=auth.LoginRequest, response=auth.TokenResponse,
              errors=(401, 409, 429), rate_limit="address")
def login(call: Call[auth.LoginRequest]) -> auth.TokenResponse:
    """Exchange e-mail and password for tokens"""
    return auth.login(call.settings, call.body)


@router.route("POST", "/v1/auth/refresh", auth="none", body=auth.RefreshRequest, response=auth.TokenResponse,
              errors=(401,))
def refresh(call: Call[auth.RefreshRequest]) -> auth.TokenResponse:
    """Rotate a refresh token"""
    return auth.refresh(call.settings, call.body)


@router.route("POST", "/v1/auth/logout", status=204)
def logout(call: Call[Any]) -> Reply:
    """End the current session: its refresh and access tokens stop working"""
    auth.logout(call.user)
    return Reply(None)


@router.route("GET", "/v1/auth/me", response=auth.UserOut)
def me(call: Call[Any]) -> auth.UserOut:
    """The signed-in user"""
    return auth.me(call.user)
