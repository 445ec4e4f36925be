"""Users, their e-mail claims, login sessions, refresh tokens and the failed-login counter.

Keys: user `USER#<id>`/`PROFILE`; e-mail claim `EMAIL#<lowercased>`/`EMAIL` (its conditional put
makes e-mails unique); session `SESSION#<sid>`/`SESSION`; refresh token `REFRESH#<sha256>`/`REFRESH`;
failed logins `LOGINFAIL#<lowercased>`/`LOGINFAIL`. Sessions, refresh tokens and counters carry a TTL.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PutError, UpdateError

from chalicelib import errors
from chalicelib.store.base import ConditionFailed, Item, Transaction, condition_failed, get, transaction
from chalicelib.store.orgs import Invitation, Member, Org, add_member_to, consume_invitation_in


class User(Item):
    id = UnicodeAttribute()
    email = UnicodeAttribute()
    name = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    created_at = NumberAttribute()

    @staticmethod
    def key(user_id: str) -> tuple[str, str]:
        return f"USER#{user_id}", "PROFILE"


class EmailClaim(Item):
    user_id = UnicodeAttribute()

    @staticmethod
    def key(email: str) -> tuple[str, str]:
        return f"EMAIL#{email.lower()}", "EMAIL"


class Session(Item):
    id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    created_at = NumberAttribute()
    last_used_at = NumberAttribute()
    expires_at = NumberAttribute()
    revoked_at = NumberAttribute(null=True)

    @staticmethod
    def key(session_id: str) -> tuple[str, str]:
        return f"SESSION#{session_id}", "SESSION"


class RefreshToken(Item):
    session_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    used_at = NumberAttribute(null=True)

    @staticmethod
    def key(digest: str) -> tuple[str, str]:
        return f"REFRESH#{digest}", "REFRESH"


class LoginFailures(Item):
    count = NumberAttribute()
    window_start = NumberAttribute()

    @staticmethod
    def key(email: str) -> tuple[str, str]:
        return f"LOGINFAIL#{email.lower()}", "LOGINFAIL"


def new_user(*, user_id: str, email: str, name: str, password_hash: str, at: int) -> User:
    return User(*User.key(user_id), id=user_id, email=email, name=name, password_hash=password_hash, created_at=at)


def create_account(
    *, user: User, member: Member, session: Session, refresh: RefreshToken,
    org: Org | None = None, invitation: Invitation | None = None,
) -> None:
    """Write the user, their e-mail claim, their first membership and login session atomically.

    Either `org` is created with `member` as its owner, or `invitation` is consumed. Raises Conflict
    when the e-mail is taken, and Conflict when the invitation is no longer valid.
    """
    try:
        with transaction() as tx:
            _add_session(tx, session, refresh)
            tx.save(EmailClaim(*EmailClaim.key(user.email), user_id=user.id), condition=EmailClaim.pk.does_not_exist(),
                    label="email")
            tx.save(user, condition=User.pk.does_not_exist())
            if org is not None:
                org.owner_count = 1
                tx.save(org, condition=Org.pk.does_not_exist())
                tx.save(member, condition=Member.pk.does_not_exist())
            elif invitation is not None:
                consume_invitation_in(tx, invitation)
                add_member_to(tx, member)
    except ConditionFailed as e:
        if "email" in e.labels:
            raise errors.Conflict("an account with this e-mail already exists") from e
        raise errors.Conflict("the invitation was already used or revoked") from e


def get_user(user_id: str) -> User | None:
    return get(User, *User.key(user_id))


def find_user_by_email(email: str) -> User | None:
    claim = get(EmailClaim, *EmailClaim.key(email))
    return None if claim is None else get_user(claim.user_id)


def update_password_hash(user: User, password_hash: str) -> None:
    user.update(actions=[User.password_hash.set(password_hash)])


def create_session(session: Session, refresh: RefreshToken, *, clear_login_attempts_of: str) -> None:
    """Store a new login session with its first refresh token, and reset the e-mail's login attempts."""
    with transaction() as tx:
        _add_session(tx, session, refresh)
        tx.delete(LoginFailures(*LoginFailures.key(clear_login_attempts_of)))


def _add_session(tx: Transaction, session: Session, refresh: RefreshToken) -> None:
    tx.save(session, condition=Session.pk.does_not_exist())
    tx.save(refresh, condition=RefreshToken.pk.does_not_exist())


def get_session(session_id: str) -> Session | None:
    return get(Session, *Session.key(session_id))


def get_refresh_token(digest: str) -> RefreshToken | None:
    return get(RefreshToken, *RefreshToken.key(digest))


def rotate_refresh_token(*, used: RefreshToken, issued: RefreshToken, at: int, idle_cutoff: int) -> None:
    """Mark `used` spent and store `issued`, only while both the token and its session are live.

    Raises Conflict when `used` was spent concurrently (a reuse), Unauthorized when the session ended.
    """
    session = Session(*Session.key(used.session_id))
    try:
        with transaction() as tx:
            tx.update(used, actions=[RefreshToken.used_at.set(at)], condition=RefreshToken.used_at.does_not_exist(),
                      label="unused")
            tx.save(issued, condition=RefreshToken.pk.does_not_exist())
            tx.update(
                session,
                actions=[Session.last_used_at.set(at)],
                condition=Session.revoked_at.does_not_exist() & (Session.expires_at > at) & (Session.last_used_at > idle_cutoff),
            )
    except ConditionFailed as e:
        if "unused" in e.labels:
            raise errors.Conflict("refresh token already used") from e
        raise errors.Unauthorized("session expired") from e


def revoke_session(session_id: str, *, at: int) -> None:
    """Revoke the session (idempotent): its refresh and access tokens stop working at once."""
    session = Session(*Session.key(session_id))
    try:
        session.update(
            actions=[Session.revoked_at.set(at)],
            condition=Session.pk.exists() & Session.revoked_at.does_not_exist(),
        )
    except UpdateError as e:
        if not condition_failed(e):
            raise


def get_login_failures(email: str) -> LoginFailures | None:
    return get(LoginFailures, *LoginFailures.key(email))


def claim_login_attempt(email: str, *, at: int, window: int, limit: int) -> int | None:
    """Count a login attempt in the e-mail's current window, atomically, before the password is checked.

    Returns None when the attempt may go ahead, or the start of the window when `limit` attempts
    were already counted in it: concurrent attempts can never check more than `limit` passwords.
    One UpdateItem in the common case (no counter, or a live one under the limit).
    """
    counter = LoginFailures(*LoginFailures.key(email))
    for _ in range(3):
        try:
            counter.update(
                actions=[
                    LoginFailures.count.set((LoginFailures.count | 0) + 1),
                    LoginFailures.window_start.set(LoginFailures.window_start | at),
                    LoginFailures.expires_ttl.set(LoginFailures.expires_ttl | (at + window)),
                ],
                condition=LoginFailures.pk.does_not_exist()
                | ((LoginFailures.window_start > at - window) & (LoginFailures.count < limit)),
            )
            return None
        except UpdateError as e:
            if not condition_failed(e):
                raise
        current = get_login_failures(email)
        if current is not None and current.window_start > at - window:
            if current.count >= limit:
                return int(current.window_start)
            continue
        fresh = LoginFailures(*LoginFailures.key(email), count=1, window_start=at, expires_ttl=at + window)
        try:
            fresh.save(condition=LoginFailures.pk.does_not_exist() | (LoginFailures.window_start <= at - window))
            return None
        except PutError as e:
            if not condition_failed(e):
                raise
    raise errors.RateLimited("too many concurrent logins; try again", retry_after=1)
