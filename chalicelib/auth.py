"""Accounts and login sessions: register, login, refresh rotation, logout, bearer authentication."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict, Field, model_validator

from chalicelib import crypto, errors, orgs, retrying, tokens
from chalicelib.clock import now
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.shapes import Body, DisplayName, Email, Out, Password, Token
from chalicelib.store import account_records, org_records, prefetch
from chalicelib.store.account_records import RefreshToken, Session, User
from chalicelib.store.table import ConditionFailed

INVALID_LOGIN = "invalid e-mail or password"
INVALID_REFRESH = "the refresh token is invalid"


class RegisterRequest(Body):
    # The OpenAPI document states the validator's rule too, so clients and fuzzers know a bare register is invalid.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["organization_name"], "properties": {"organization_name": {"type": "string"}}},
        {"required": ["invitation_token"], "properties": {"invitation_token": {"type": "string"}}},
    ]})

    email: Email
    password: Password
    name: DisplayName
    organization_name: DisplayName | None = None
    invitation_token: Token | None = None

    @model_validator(mode="after")
    def _organization_or_invitation(self) -> RegisterRequest:
        if self.organization_name is None and self.invitation_token is None:
            raise ValueError("organization_name is required unless an invitation_token is given")
        return self


class LoginRequest(Body):
    email: Email
    password: Password


class RefreshRequest(Body):
    refresh_token: Token


class UserOut(Out):
    id: str
    email: str
    name: str
    created_at: int | None = None


class TokenResponse(Out):
    access_token: str
    refresh_token: str | None = Field(default=None, description=(
        "absent for cookie sessions (`X-Orochi-Session: cookie`): the refresh token is then in the httpOnly "
        "`orochi_refresh` cookie"))
    token_type: str = "Bearer"
    expires_in: int
    user: UserOut
    organization: orgs.OrganizationOut | None = None


@dataclass(frozen=True)
class Tokens:
    """A session's new tokens: the body flow's answer (the refresh token in it), and the refresh token with the
    seconds until the session's absolute expiry, which no refresh token of it outlives."""

    answer: TokenResponse
    refresh_token: str
    refresh_expires_in: int


def _policy(settings: Settings) -> crypto.PasswordPolicy:
    return crypto.PasswordPolicy(
        memory_kib=settings.password_memory_kib, iterations=settings.password_iterations, lanes=settings.password_lanes
    )


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, name=user.name, created_at=user.created_at)


def register(settings: Settings, body: RegisterRequest) -> Tokens:
    """Create the user with their own organization, or with the membership their invitation offers."""
    at = now()
    invitation = orgs.redeemable_invitation(body.invitation_token, email=body.email) if body.invitation_token else None
    user = account_records.new_user(
        user_id=crypto.new_id("usr"), email=body.email, name=body.name,
        password_hash=_policy(settings).hash(body.password), at=at,
    )
    if invitation is not None:
        org = org_records.get_org(invitation.org_id)
        role = invitation.role
    else:
        org = org_records.new_org(org_id=crypto.new_id("org"), name=body.organization_name or "", at=at)
        role = org_records.OWNER
    if org is None:
        raise errors.NotFound("organization not found")
    member = org_records.new_member(org_id=org.id, user_id=user.id, email=user.email, name=user.name, role=role, at=at)
    opened = _open_session(settings, user, at=at)
    try:
        account_records.create_account(user=user, member=member, session=opened.session, refresh=opened.refresh,
                                       org=None if invitation else org, invitation=invitation)
    except ConditionFailed as e:
        if "email" in e.labels:
            raise errors.Conflict("an account with this e-mail already exists") from e
        raise errors.Conflict("the invitation was already used or revoked") from e
    return opened.tokens(settings, user, organization=orgs.organization_out(org, role))


def login(settings: Settings, body: LoginRequest) -> Tokens:
    """One answer for an unknown e-mail and a wrong password; too many failures lock the account a while."""
    at = now()
    window = settings.login_failure_window
    locked_since = retrying.until_won(
        lambda: account_records.count_login_attempt(body.email, at=at, window=window, limit=settings.login_max_failures),
        what="the login attempts of this e-mail",
    )
    if locked_since is not None:
        raise errors.RateLimited("too many failed logins; try again later", retry_after=locked_since + window - at)
    policy = _policy(settings)
    user = account_records.find_user_by_email(body.email)
    if user is None:
        policy.hash(body.password)  # spend the same time as a real check
        verified = False
    else:
        verified = policy.verify(body.password, user.password_hash)
    if user is None or not verified:
        raise errors.Unauthorized(INVALID_LOGIN)  # the attempt was counted before the check
    if policy.needs_rehash(user.password_hash):
        account_records.update_password_hash(user, policy.hash(body.password))
    opened = _open_session(settings, user, at=now())
    account_records.create_session(opened.session, opened.refresh, clear_login_attempts_of=body.email)
    return opened.tokens(settings, user)


@dataclass(frozen=True)
class _OpenedSession:
    """A new login session and its first refresh token, not yet stored."""

    session: Session
    refresh: RefreshToken
    refresh_token: str
    at: int

    def tokens(self, settings: Settings, user: User, *, organization: orgs.OrganizationOut | None = None) -> Tokens:
        return _tokens(settings, user, self.session, self.refresh_token, self.at, organization)


def _open_session(settings: Settings, user: User, *, at: int) -> _OpenedSession:
    session_id, expires_at = crypto.new_id("ses"), at + settings.refresh_absolute_ttl
    session = account_records.new_session(session_id=session_id, user_id=user.id, at=at, expires_at=expires_at)
    refresh_token, refresh = _new_refresh_token(session_id=session_id, user_id=user.id, expires_at=expires_at)
    return _OpenedSession(session=session, refresh=refresh, refresh_token=refresh_token, at=at)


def _new_refresh_token(*, session_id: str, user_id: str, expires_at: int) -> tuple[str, RefreshToken]:
    token = crypto.new_secret()
    record = account_records.new_refresh_token(digest=crypto.token_hash(token), session_id=session_id, user_id=user_id,
                                               expires_at=expires_at)
    return token, record


def _tokens(
    settings: Settings, user: User, session: Session, refresh_token: str, at: int,
    organization: orgs.OrganizationOut | None = None,
) -> Tokens:
    answer = TokenResponse(
        access_token=tokens.issue_access_token(settings, user_id=user.id, session_id=session.id, at=at),
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl,
        user=user_out(user),
        organization=organization,
    )
    return Tokens(answer=answer, refresh_token=refresh_token, refresh_expires_in=session.expires_at - at)


def refresh(settings: Settings, refresh_token: str) -> Tokens:
    """Rotate the refresh token. Presenting a spent one revokes its whole session."""
    at = now()
    used = account_records.get_refresh_token(crypto.token_hash(refresh_token))
    if used is None:
        raise errors.Unauthorized(INVALID_REFRESH)
    if used.used_at is not None:
        account_records.revoke_session(used.session_id, at=at)
        raise errors.Unauthorized("the refresh token was already used; the session has been revoked")
    session = account_records.get_session(used.session_id)
    if session is None:
        raise errors.Unauthorized("the session has ended")
    token, issued = _new_refresh_token(session_id=session.id, user_id=used.user_id, expires_at=session.expires_at)
    try:
        account_records.rotate_refresh_token(used=used, issued=issued, at=at, idle_cutoff=at - settings.refresh_idle_ttl)
    except ConditionFailed as e:
        if "unused" not in e.labels:
            raise errors.Unauthorized("session expired") from e
        account_records.revoke_session(used.session_id, at=at)
        raise errors.Unauthorized("the refresh token was already used; the session has been revoked") from None
    user = account_records.get_user(used.user_id)
    if user is None:
        raise errors.Unauthorized("the account no longer exists")
    return _tokens(settings, user, session, token, at)


def logout(principal: Principal) -> None:
    account_records.revoke_session(principal.session_id, at=now())


def me(principal: Principal) -> UserOut:
    user = account_records.get_user(principal.id)
    if user is None:
        raise errors.Unauthorized("the account no longer exists")
    return user_out(user)


def authenticate(settings: Settings, bearer: str, params: dict[str, str]) -> Principal:
    """The user behind an access token whose session is still live; Unauthorized otherwise.

    The session is read together with what the path names: the caller's membership of `org_id` (every
    organization route authorizes against it) and the cluster `cluster_id`.
    """
    claims = tokens.decode_access_token(settings, bearer)
    prefetch.request_items(session_id=claims.session_id, cluster_id=params.get("cluster_id"),
                           member=(params["org_id"], claims.user_id) if "org_id" in params else None)
    session = account_records.get_session(claims.session_id)
    if (
        session is None
        or session.user_id != claims.user_id
        or session.revoked_at is not None
        or session.expires_at <= now()
    ):
        raise errors.Unauthorized("the session has ended")
    return Principal(kind="user", id=claims.user_id, session_id=claims.session_id)
