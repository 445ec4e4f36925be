"""Organizations, memberships and invitations.

Keys: org `ORG#<org>`/`ORG`; member `ORG#<org>`/`MEMBER#<user>` (gsi1 `USER#<user>`/`ORG#<org>`);
invitation `ORG#<org>`/`INVITE#<id>` with a TTL. `Org.owner_count` makes "the last owner stays"
a write condition rather than a read.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from pynamodb.attributes import NumberAttribute, UnicodeAttribute

from chalicelib import errors
from chalicelib.store.base import Item, Transaction, conditional, decode_cursor, encode_cursor, get, transaction
from chalicelib.clock import now

OWNER = "owner"


class Org(Item):
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    owner_count = NumberAttribute(default=0)
    cluster_count = NumberAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()

    @staticmethod
    def key(org_id: str) -> tuple[str, str]:
        return f"ORG#{org_id}", "ORG"


class Member(Item):
    org_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    email = UnicodeAttribute()
    name = UnicodeAttribute()
    role = UnicodeAttribute()
    created_at = NumberAttribute()

    @staticmethod
    def key(org_id: str, user_id: str) -> tuple[str, str]:
        return f"ORG#{org_id}", f"MEMBER#{user_id}"


class Invitation(Item):
    id = UnicodeAttribute()
    org_id = UnicodeAttribute()
    email = UnicodeAttribute()
    role = UnicodeAttribute()
    token_hash = UnicodeAttribute()
    invited_by = UnicodeAttribute()
    created_at = NumberAttribute()
    expires_at = NumberAttribute()

    @staticmethod
    def key(org_id: str, invitation_id: str) -> tuple[str, str]:
        return f"ORG#{org_id}", f"INVITE#{invitation_id}"


def new_org(*, org_id: str, name: str, at: int) -> Org:
    pk, sk = Org.key(org_id)
    return Org(pk, sk, id=org_id, name=name, owner_count=0, created_at=at, updated_at=at)


def new_member(*, org_id: str, user_id: str, email: str, name: str, role: str, at: int) -> Member:
    pk, sk = Member.key(org_id, user_id)
    return Member(
        pk, sk, org_id=org_id, user_id=user_id, email=email, name=name, role=role, created_at=at,
        gsi1pk=f"USER#{user_id}", gsi1sk=f"ORG#{org_id}",
    )


def add_member_to(tx: Transaction, member: Member) -> None:
    """Add `member` (who must not be one already) within `tx`, keeping the org's owner count."""
    tx.save(member, condition=Member.pk.does_not_exist())
    org_pk, org_sk = Org.key(member.org_id)
    if member.role == OWNER:
        tx.update(Org(org_pk, org_sk), actions=[Org.owner_count.add(1)], condition=Org.pk.exists())
    else:
        tx.check(Org, org_pk, org_sk, condition=Org.pk.exists())


def get_org(org_id: str) -> Org | None:
    return get(Org, *Org.key(org_id))


def get_member(org_id: str, user_id: str) -> Member | None:
    return get(Member, *Member.key(org_id, user_id))


def orgs_by_id(org_ids: list[str]) -> dict[str, Org]:
    keys = [Org.key(org_id) for org_id in dict.fromkeys(org_ids)]
    return {org.id: org for org in Org.batch_get(keys, consistent_read=True)}


def memberships_of(user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Member], str | None]:
    pk = f"USER#{user_id}"
    page = Member.query(pk, index_name="gsi1", limit=limit, last_evaluated_key=decode_cursor(cursor, pk=pk))
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def members_of(org_id: str, *, limit: int, cursor: str | None) -> tuple[list[Member], str | None]:
    pk = f"ORG#{org_id}"
    page = Member.query(
        pk, Member.sk.startswith("MEMBER#"), limit=limit, consistent_read=True,
        last_evaluated_key=decode_cursor(cursor, pk=pk),
    )
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def rename_org(org_id: str, name: str) -> Org:
    org = Org(*Org.key(org_id))
    with conditional(errors.NotFound("organization not found")):
        org.update(actions=[Org.name.set(name), Org.updated_at.set(now())], condition=Org.pk.exists())
    return org


def change_role(*, member: Member, role: str) -> None:
    """Set `member`'s role, failing with Conflict if it changed meanwhile or the last owner would go."""
    demoting_owner = member.role == OWNER and role != OWNER
    promoting_owner = member.role != OWNER and role == OWNER
    with _owner_guard(), transaction() as tx:
        tx.update(member, actions=[Member.role.set(role)], condition=Member.role == member.role)
        if demoting_owner or promoting_owner:
            _adjust_owner_count(tx, member.org_id, -1 if demoting_owner else 1)


def remove_member(member: Member) -> None:
    with _owner_guard(), transaction() as tx:
        tx.delete(member, condition=Member.role == member.role)
        if member.role == OWNER:
            _adjust_owner_count(tx, member.org_id, -1)


def _adjust_owner_count(tx: Transaction, org_id: str, delta: int) -> None:
    condition = Org.owner_count > 1 if delta < 0 else Org.pk.exists()
    tx.update(Org(*Org.key(org_id)), actions=[Org.owner_count.add(delta)], condition=condition)


def _owner_guard() -> AbstractContextManager[None]:
    return conditional(errors.Conflict("the membership changed meanwhile, or this would leave the organization without an owner"))


def put_invitation(invitation: Invitation) -> None:
    with conditional(errors.Conflict("invitation already exists")):
        invitation.save(condition=Invitation.pk.does_not_exist())


def get_invitation(org_id: str, invitation_id: str) -> Invitation | None:
    invitation = get(Invitation, *Invitation.key(org_id, invitation_id))
    if invitation is None or invitation.expires_at <= now():
        return None
    return invitation


def invitations_of(org_id: str, *, limit: int, cursor: str | None) -> tuple[list[Invitation], str | None]:
    pk = f"ORG#{org_id}"
    page = Invitation.query(
        pk, Invitation.sk.startswith("INVITE#"), Invitation.expires_at > now(), limit=limit,
        consistent_read=True, last_evaluated_key=decode_cursor(cursor, pk=pk),
    )
    items = list(page)
    return items, encode_cursor(page.last_evaluated_key)


def delete_invitation(org_id: str, invitation_id: str) -> None:
    invitation = Invitation(*Invitation.key(org_id, invitation_id))
    with conditional(errors.NotFound("invitation not found")):
        invitation.delete(condition=Invitation.pk.exists())


def consume_invitation_in(tx: Transaction, invitation: Invitation) -> None:
    """Delete `invitation` within `tx`, only if it still exists unexpired (invitations are single use)."""
    tx.delete(invitation, condition=Invitation.pk.exists() & (Invitation.expires_at > now()))


def accept_invitation(invitation: Invitation, member: Member) -> None:
    with conditional(errors.Conflict("the invitation was already used or revoked, or you are already a member")):
        with transaction() as tx:
            consume_invitation_in(tx, invitation)
            add_member_to(tx, member)
