"""Organizations, memberships and invitations.

`Org.owner_count` makes "the last owner stays" a write condition rather than a read; invitations carry
a TTL. See `keys` for where each lives.
"""

from __future__ import annotations

from pynamodb.attributes import UnicodeAttribute

from chalicelib.clock import now
from chalicelib.store import keys
from chalicelib.store.table import IntegerAttribute, OptionalIntegerAttribute, Item, Page, StartKey, Transaction, condition, get, page, transaction

OWNER = "owner"


class Org(Item):
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    owner_count = IntegerAttribute(default=0)
    cluster_count = OptionalIntegerAttribute()
    created_at = IntegerAttribute()
    updated_at = IntegerAttribute()


class Member(Item):
    org_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    email = UnicodeAttribute()
    name = UnicodeAttribute()
    role = UnicodeAttribute()
    created_at = IntegerAttribute()


class Invitation(Item):
    id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    email = UnicodeAttribute()
    role = UnicodeAttribute()
    token_hash = UnicodeAttribute()
    invited_by = UnicodeAttribute()
    created_at = IntegerAttribute()
    expires_at = IntegerAttribute()


def new_org(*, org_id: str, name: str, at: int) -> Org:
    return Org(*keys.org(org_id), id=org_id, name=name, owner_count=0, created_at=at, updated_at=at)


def new_member(*, org_id: str, user_id: str, email: str, name: str, role: str, at: int) -> Member:
    gsi1pk, gsi1sk = keys.member_by_user(org_id, user_id)
    return Member(*keys.member(org_id, user_id), org_id=org_id, user_id=user_id, email=email, name=name, role=role,
                  created_at=at, gsi1pk=gsi1pk, gsi1sk=gsi1sk)


def new_invitation(*, invitation_id: str, org_id: str, email: str, role: str, token_hash: str, invited_by: str,
                   at: int, expires_at: int) -> Invitation:
    return Invitation(*keys.invitation(org_id, invitation_id), id=invitation_id, org_id=org_id, email=email, role=role,
                      token_hash=token_hash, invited_by=invited_by, created_at=at, expires_at=expires_at,
                      expires_ttl=expires_at)


def create_org_in(tx: Transaction, org: Org, *, owner: Member) -> None:
    """Create `org` within `tx` with `owner` as its first member and owner."""
    org.owner_count = 1
    tx.save(org, condition=Org.pk.does_not_exist())
    tx.save(owner, condition=Member.pk.does_not_exist())


def add_member_in(tx: Transaction, member: Member, *, label: str = "") -> None:
    """Add `member` (who must not be one already) within `tx`, keeping the org's owner count."""
    tx.save(member, condition=Member.pk.does_not_exist(), label=label)
    if member.role == OWNER:
        tx.update(Org(*keys.org(member.org_id)), actions=[Org.owner_count.add(1)], condition=Org.pk.exists(), label=label)
    else:
        tx.check(Org, keys.org(member.org_id), condition=Org.pk.exists(), label=label)


def get_org(org_id: str) -> Org | None:
    return get(Org, keys.org(org_id))


def get_member(org_id: str, user_id: str) -> Member | None:
    return get(Member, keys.member(org_id, user_id))


def orgs_by_id(org_ids: list[str]) -> dict[str, Org]:
    return {org.id: org for org in Org.batch_get([keys.org(i) for i in dict.fromkeys(org_ids)], consistent_read=True)}


def memberships_of(user_id: str, *, limit: int, start: StartKey | None) -> Page[Member]:
    return page(lambda key: Member.query(keys.memberships_of(user_id), index_name="gsi1", limit=limit,
                                         last_evaluated_key=key), start)


def members_of(org_id: str, *, limit: int, start: StartKey | None) -> Page[Member]:
    return page(lambda key: Member.query(keys.org_partition(org_id), Member.sk.startswith(keys.MEMBER_PREFIX), limit=limit,
                                         consistent_read=True, last_evaluated_key=key), start)


def rename_org(org_id: str, name: str, *, at: int) -> Org:
    """Raises ConditionFailed when the organization does not exist."""
    org = Org(*keys.org(org_id))
    with condition():
        org.update(actions=[Org.name.set(name), Org.updated_at.set(at)], condition=Org.pk.exists())
    return org


def change_role(*, member: Member, role: str) -> None:
    """Set `member`'s role. ConditionFailed if it changed meanwhile or no owner would be left."""
    demoting_owner = member.role == OWNER and role != OWNER
    promoting_owner = member.role != OWNER and role == OWNER
    with transaction() as tx:
        tx.update(member, actions=[Member.role.set(role)], condition=Member.role == member.role)
        if demoting_owner or promoting_owner:
            _adjust_owner_count(tx, member.org_id, -1 if demoting_owner else 1)


def remove_member(member: Member) -> None:
    """ConditionFailed if the membership changed meanwhile or no owner would be left."""
    with transaction() as tx:
        tx.delete(member, condition=Member.role == member.role)
        if member.role == OWNER:
            _adjust_owner_count(tx, member.org_id, -1)


def _adjust_owner_count(tx: Transaction, org_id: str, delta: int) -> None:
    guard = Org.owner_count > 1 if delta < 0 else Org.pk.exists()
    tx.update(Org(*keys.org(org_id)), actions=[Org.owner_count.add(delta)], condition=guard)


def put_invitation(invitation: Invitation) -> None:
    """ConditionFailed if an invitation with its id exists."""
    with condition():
        invitation.save(condition=Invitation.pk.does_not_exist())


def get_invitation(org_id: str, invitation_id: str) -> Invitation | None:
    """The invitation, unless it is absent or expired."""
    invitation = get(Invitation, keys.invitation(org_id, invitation_id))
    if invitation is None or invitation.expires_at <= now():
        return None
    return invitation


def invitations_of(org_id: str, *, limit: int, start: StartKey | None) -> Page[Invitation]:
    """Unexpired invitations (the filter runs after `limit`, so a page may be short)."""
    return page(lambda key: Invitation.query(
        keys.org_partition(org_id), Invitation.sk.startswith(keys.INVITATION_PREFIX), Invitation.expires_at > now(),
        limit=limit, consistent_read=True, last_evaluated_key=key,
    ), start)


def delete_invitation(org_id: str, invitation_id: str) -> None:
    """ConditionFailed if there is no such invitation."""
    with condition():
        Invitation(*keys.invitation(org_id, invitation_id)).delete(condition=Invitation.pk.exists())


def consume_invitation_in(tx: Transaction, invitation: Invitation, *, label: str = "") -> None:
    """Delete `invitation` within `tx`, only if it still exists unexpired (invitations are single use)."""
    tx.delete(invitation, condition=Invitation.pk.exists() & (Invitation.expires_at > now()), label=label)


def accept_invitation(invitation: Invitation, member: Member) -> None:
    """ConditionFailed if the invitation was spent or revoked, or `member` is one already."""
    with transaction() as tx:
        consume_invitation_in(tx, invitation)
        add_member_in(tx, member)
