"""Users, their e-mail claims, login sessions, refresh tokens and the failed-login counter.

Sessions, refresh tokens and counters carry a TTL. See `keys` for where each lives.
"""

from __future__ import annotations

from pynamodb.attributes import UnicodeAttribute

from chalicelib.store import keys
from chalicelib.store.org_records import Invitation, Member, Org, add_member_in, consume_invitation_in, create_org_in
from chalicelib.store.table import IntegerAttribute, OptionalIntegerAttribute, ConditionFailed, Item, LostRace, Transaction, condition, get, transaction, written


class User(Item):
    id = UnicodeAttribute()
    email = UnicodeAttribute()
    name = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    created_at = IntegerAttribute()


class EmailClaim(Item):
    user_id = UnicodeAttribute()


class Session(Item):
    id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    created_at = IntegerAttribute()
    last_used_at = IntegerAttribute()
    expires_at = IntegerAttribute()
    revoked_at = OptionalIntegerAttribute()


class RefreshToken(Item):
    session_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    used_at = OptionalIntegerAttribute()


class LoginFailures(Item):
    attempts = IntegerAttribute(attr_name="count")
    window_start = IntegerAttribute()


def new_user(*, user_id: str, email: str, name: str, password_hash: str, at: int) -> User:
    return User(*keys.user(user_id), id=user_id, email=email, name=name, password_hash=password_hash, created_at=at)


def new_session(*, session_id: str, user_id: str, at: int, expires_at: int) -> Session:
    return Session(*keys.session(session_id), id=session_id, user_id=user_id, created_at=at, last_used_at=at,
                   expires_at=expires_at, expires_ttl=expires_at)


def new_refresh_token(*, digest: str, session_id: str, user_id: str, expires_at: int) -> RefreshToken:
    return RefreshToken(*keys.refresh_token(digest), session_id=session_id, user_id=user_id, expires_ttl=expires_at)


def create_account(
    *, user: User, member: Member, session: Session, refresh: RefreshToken,
    org: Org | None = None, invitation: Invitation | None = None,
) -> None:
    """Write the user, their e-mail claim, their first membership and login session atomically.

    Either `org` is created with `member` as its owner, or `invitation` is consumed. Raises
    ConditionFailed labelled `email` when the e-mail is taken, `invitation` when the invitation is spent.
    """
    with transaction() as tx:
        _add_session(tx, session, refresh)
        tx.save(EmailClaim(*keys.email_claim(user.email), user_id=user.id), condition=EmailClaim.pk.does_not_exist(),
                label="email")
        tx.save(user, condition=User.pk.does_not_exist())
        if org is not None:
            create_org_in(tx, org, owner=member)
        elif invitation is not None:
            consume_invitation_in(tx, invitation, label="invitation")
            add_member_in(tx, member, label="invitation")


def get_user(user_id: str) -> User | None:
    return get(User, keys.user(user_id))


def find_user_by_email(email: str) -> User | None:
    claim = get(EmailClaim, keys.email_claim(email))
    return None if claim is None else get_user(claim.user_id)


def update_password_hash(user: User, password_hash: str) -> None:
    user.update(actions=[User.password_hash.set(password_hash)])


def create_session(session: Session, refresh: RefreshToken, *, clear_login_attempts_of: str) -> None:
    """Store a new login session with its first refresh token, and reset the e-mail's login attempts."""
    with transaction() as tx:
        _add_session(tx, session, refresh)
        tx.delete(LoginFailures(*keys.login_failures(clear_login_attempts_of)))


def _add_session(tx: Transaction, session: Session, refresh: RefreshToken) -> None:
    tx.save(session, condition=Session.pk.does_not_exist())
    tx.save(refresh, condition=RefreshToken.pk.does_not_exist())


def get_session(session_id: str) -> Session | None:
    return get(Session, keys.session(session_id))


def get_refresh_token(digest: str) -> RefreshToken | None:
    return get(RefreshToken, keys.refresh_token(digest))


def rotate_refresh_token(*, used: RefreshToken, issued: RefreshToken, at: int, idle_cutoff: int) -> None:
    """Mark `used` spent and store `issued`, only while both the token and its session are live.

    Raises ConditionFailed labelled `unused` when `used` was spent concurrently, `session` when it ended.
    """
    session = Session(*keys.session(used.session_id))
    with transaction() as tx:
        tx.update(used, actions=[RefreshToken.used_at.set(at)], condition=RefreshToken.used_at.does_not_exist(),
                  label="unused")
        tx.save(issued, condition=RefreshToken.pk.does_not_exist())
        tx.update(
            session,
            actions=[Session.last_used_at.set(at)],
            condition=Session.revoked_at.does_not_exist() & (Session.expires_at > at) & (Session.last_used_at > idle_cutoff),
            label="session",
        )


def revoke_session(session_id: str, *, at: int) -> None:
    """Revoke the session (idempotent): its refresh and access tokens stop working at once."""
    written(lambda: Session(*keys.session(session_id)).update(
        actions=[Session.revoked_at.set(at)], condition=Session.pk.exists() & Session.revoked_at.does_not_exist(),
    ))


def count_login_attempt(email: str, *, at: int, window: int, limit: int) -> int | None:
    """Count a login attempt in the e-mail's current window, atomically, before the password is checked.

    Returns None when the attempt may go ahead, or the start of the window when `limit` attempts
    were already counted in it: concurrent attempts can never check more than `limit` passwords.
    One UpdateItem in the common case (no counter, or a live one under the limit). Raises LostRace when
    the counter changed between its reads and writes (retry).
    """
    key = keys.login_failures(email)
    counted = written(lambda: LoginFailures(*key).update(
        actions=[
            LoginFailures.attempts.set((LoginFailures.attempts | 0) + 1),
            LoginFailures.window_start.set(LoginFailures.window_start | at),
            LoginFailures.expires_ttl.set(LoginFailures.expires_ttl | (at + window)),
        ],
        condition=LoginFailures.pk.does_not_exist() | ((LoginFailures.window_start > at - window) & (LoginFailures.attempts < limit)),
    ))
    if counted:
        return None
    current = get(LoginFailures, key)
    if current is not None and current.window_start > at - window:
        if current.attempts >= limit:
            return int(current.window_start)
        raise LostRace()
    fresh = LoginFailures(*key, attempts=1, window_start=at, expires_ttl=at + window)
    try:
        with condition():
            fresh.save(condition=LoginFailures.pk.does_not_exist() | (LoginFailures.window_start <= at - window))
    except ConditionFailed:
        raise LostRace() from None
    return None
