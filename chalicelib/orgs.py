"""Organizations, roles, members and invitations."""

from __future__ import annotations

from typing import Literal

from chalicelib import crypto, errors, pages
from chalicelib.clock import now
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.shapes import Body, DisplayName, Email, ListQuery, Out, Page, Token
from chalicelib.store import account_records, org_records
from chalicelib.store.org_records import Invitation, Member, Org
from chalicelib.store.table import ConditionFailed

Role = Literal["viewer", "member", "admin", "owner"]
RANK: dict[str, int] = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}

# The minimum role for each action; the README's permission matrix is this table.
PERMISSIONS: dict[str, Role] = {
    "org:read": "viewer",
    "org:rename": "admin",
    "members:read": "viewer",
    "members:manage": "admin",
    "invitations:manage": "admin",
    "clusters:read": "viewer",
    "clusters:write": "member",
    "clusters:delete": "admin",
    "clusters:credentials": "admin",
}


class OrganizationOut(Out):
    id: str
    name: str
    role: Role | None = None
    created_at: int | None = None


class MemberOut(Out):
    user_id: str
    email: str
    name: str
    role: Role
    joined_at: int


class InvitationOut(Out):
    id: str
    email: str
    role: Role
    expires_at: int
    created_at: int
    token: str | None = None


class OrgRename(Body):
    name: DisplayName


class RoleChange(Body):
    role: Role


class InvitationCreate(Body):
    email: Email
    role: Role = "member"


class InvitationAccept(Body):
    token: Token


def authorize(principal: Principal, org_id: str, action: str) -> Member:
    """The caller's membership if their role allows `action`; NotFound for non-members (they learn nothing).

    Routes declare their action (`permission=`) and the web layer calls this before the domain does anything.
    """
    member = org_records.get_member(org_id, principal.id)
    if member is None:
        raise errors.NotFound("organization not found")
    require(member, action)
    return member


def require(member: Member, action: str) -> None:
    """Forbidden unless `member`'s role allows `action` (for rules that depend on the request's content)."""
    if RANK[member.role] < RANK[PERMISSIONS[action]]:
        raise errors.Forbidden(f"your role ({member.role}) does not allow {action}")


def organization_out(org: Org, role: str | None = None) -> OrganizationOut:
    return OrganizationOut(id=org.id, name=org.name, role=role, created_at=org.created_at)  # type: ignore[arg-type]  # stored as a plain string; pydantic checks it is a Role


def list_mine(settings: Settings, principal: Principal, query: ListQuery) -> Page[OrganizationOut]:
    memberships, cursor = pages.listing(
        settings, query.cursor, name=f"orgs:{principal.id}",
        read=lambda start: org_records.memberships_of(principal.id, limit=query.limit, start=start),
    )
    orgs = org_records.orgs_by_id([m.org_id for m in memberships])
    items = [organization_out(orgs[m.org_id], m.role) for m in memberships if m.org_id in orgs]
    return Page[OrganizationOut](items=items, next_cursor=cursor)


def get(member: Member) -> OrganizationOut:
    org = org_records.get_org(member.org_id)
    if org is None:
        raise errors.NotFound("organization not found")
    return organization_out(org, member.role)


def rename(member: Member, body: OrgRename) -> OrganizationOut:
    try:
        org = org_records.rename_org(member.org_id, body.name, at=now())
    except ConditionFailed:
        raise errors.NotFound("organization not found") from None
    return organization_out(org, member.role)


def member_out(member: Member) -> MemberOut:
    return MemberOut(user_id=member.user_id, email=member.email, name=member.name, role=member.role, joined_at=member.created_at)  # type: ignore[arg-type]  # stored as a plain string; pydantic checks it is a Role


def list_members(settings: Settings, member: Member, query: ListQuery) -> Page[MemberOut]:
    members, cursor = pages.listing(
        settings, query.cursor, name=f"members:{member.org_id}:{member.user_id}",
        read=lambda start: org_records.members_of(member.org_id, limit=query.limit, start=start),
    )
    return Page[MemberOut](items=[member_out(m) for m in members], next_cursor=cursor)


def _target(actor: Member, user_id: str) -> Member:
    target = org_records.get_member(actor.org_id, user_id)
    if target is None:
        raise errors.NotFound("member not found")
    if RANK[target.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot manage an {target.role}")
    return target


def change_role(actor: Member, user_id: str, body: RoleChange) -> MemberOut:
    target = _target(actor, user_id)
    if RANK[body.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot grant the {body.role} role")
    if target.role != body.role:
        try:
            org_records.change_role(member=target, role=body.role)
        except ConditionFailed:
            raise _membership_changed() from None
        target.role = body.role
    return member_out(target)


def remove_member(actor: Member, user_id: str) -> None:
    """Owners and admins remove members up to their own rank; anyone may leave. The last owner stays."""
    if user_id == actor.user_id:
        target = actor
    else:
        require(actor, "members:manage")
        target = _target(actor, user_id)
    try:
        org_records.remove_member(target)
    except ConditionFailed:
        raise _membership_changed() from None


def _membership_changed() -> errors.Conflict:
    return errors.Conflict("the membership changed meanwhile, or this would leave the organization without an owner")


def invitation_out(invitation: Invitation, token: str | None = None) -> InvitationOut:
    return InvitationOut(
        id=invitation.id, email=invitation.email, role=invitation.role,  # type: ignore[arg-type]  # stored as a plain string; pydantic checks it is a Role
        expires_at=invitation.expires_at, created_at=invitation.created_at, token=token,
    )


def invite(settings: Settings, actor: Member, body: InvitationCreate) -> InvitationOut:
    """Create an invitation; its token is returned here only and stored hashed."""
    org_id = actor.org_id
    if RANK[body.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot invite an {body.role}")
    invitation_id, secret, at = crypto.new_id("inv"), crypto.new_secret(), now()
    invitation = org_records.new_invitation(
        invitation_id=invitation_id, org_id=org_id, email=body.email, role=body.role,
        token_hash=crypto.token_hash(secret), invited_by=actor.user_id, at=at, expires_at=at + settings.invitation_ttl,
    )
    try:
        org_records.put_invitation(invitation)
    except ConditionFailed:
        raise errors.Conflict("invitation already exists") from None
    return invitation_out(invitation, token=f"{org_id}.{invitation_id}.{secret}")


def list_invitations(settings: Settings, member: Member, query: ListQuery) -> Page[InvitationOut]:
    invitations, cursor = pages.listing(
        settings, query.cursor, name=f"invitations:{member.org_id}:{member.user_id}",
        read=lambda start: org_records.invitations_of(member.org_id, limit=query.limit, start=start),
    )
    return Page[InvitationOut](items=[invitation_out(i) for i in invitations], next_cursor=cursor)


def revoke_invitation(member: Member, invitation_id: str) -> None:
    try:
        org_records.delete_invitation(member.org_id, invitation_id)
    except ConditionFailed:
        raise errors.NotFound("invitation not found") from None


def redeemable_invitation(token: str, *, email: str) -> Invitation:
    """The live invitation `token` names, addressed to `email`; NotFound otherwise (one message for all)."""
    org_id, _, rest = token.partition(".")
    invitation_id, _, secret = rest.partition(".")
    invitation = org_records.get_invitation(org_id, invitation_id) if org_id and invitation_id and secret else None
    if (
        invitation is None
        or not crypto.same(invitation.token_hash, crypto.token_hash(secret))
        or invitation.email.lower() != email.lower()
    ):
        raise errors.NotFound("invitation not found, expired, or addressed to another e-mail")
    return invitation


def accept(principal: Principal, body: InvitationAccept) -> OrganizationOut:
    user = account_records.get_user(principal.id)
    if user is None:
        raise errors.Unauthorized("the account no longer exists")
    invitation = redeemable_invitation(body.token, email=user.email)
    member = org_records.new_member(
        org_id=invitation.org_id, user_id=user.id, email=user.email, name=user.name, role=invitation.role, at=now()
    )
    try:
        org_records.accept_invitation(invitation, member)
    except ConditionFailed:
        raise errors.Conflict("the invitation was already used or revoked, or you are already a member") from None
    org = org_records.get_org(invitation.org_id)
    if org is None:
        raise errors.NotFound("organization not found")
    return organization_out(org, invitation.role)
