"""Organizations, roles, members and invitations."""

from __future__ import annotations

from typing import Literal

from chalicelib import crypto, errors
from chalicelib.principal import Principal
from chalicelib.settings import Settings
from chalicelib.shapes import Body, DisplayName, Email, ListQuery, Out, Page, Token
from chalicelib.store import accounts as account_store
from chalicelib.store import orgs as store
from chalicelib.store.base import now

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


def authorize(principal: Principal, org_id: str, action: str) -> store.Member:
    """The caller's membership if their role allows `action`; NotFound for non-members."""
    member = store.get_member(org_id, principal.id)
    if member is None:
        raise errors.NotFound("organization not found")
    if RANK[member.role] < RANK[PERMISSIONS[action]]:
        raise errors.Forbidden(f"your role ({member.role}) does not allow {action}")
    return member


def organization_out(org: store.Org, role: str | None = None) -> OrganizationOut:
    return OrganizationOut(id=org.id, name=org.name, role=role, created_at=org.created_at)  # type: ignore[arg-type]


def list_mine(principal: Principal, query: ListQuery) -> Page[OrganizationOut]:
    memberships, cursor = store.memberships_of(principal.id, limit=query.limit, cursor=query.cursor)
    orgs = store.orgs_by_id([m.org_id for m in memberships])
    items = [organization_out(orgs[m.org_id], m.role) for m in memberships if m.org_id in orgs]
    return Page[OrganizationOut](items=items, next_cursor=cursor)


def get(principal: Principal, org_id: str) -> OrganizationOut:
    member = authorize(principal, org_id, "org:read")
    org = store.get_org(org_id)
    if org is None:
        raise errors.NotFound("organization not found")
    return organization_out(org, member.role)


def rename(principal: Principal, org_id: str, body: OrgRename) -> OrganizationOut:
    member = authorize(principal, org_id, "org:rename")
    return organization_out(store.rename_org(org_id, body.name), member.role)


def member_out(member: store.Member) -> MemberOut:
    return MemberOut(user_id=member.user_id, email=member.email, name=member.name, role=member.role, joined_at=member.created_at)  # type: ignore[arg-type]


def list_members(principal: Principal, org_id: str, query: ListQuery) -> Page[MemberOut]:
    authorize(principal, org_id, "members:read")
    members, cursor = store.members_of(org_id, limit=query.limit, cursor=query.cursor)
    return Page[MemberOut](items=[member_out(m) for m in members], next_cursor=cursor)


def _target(actor: store.Member, org_id: str, user_id: str) -> store.Member:
    target = store.get_member(org_id, user_id)
    if target is None:
        raise errors.NotFound("member not found")
    if RANK[target.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot manage an {target.role}")
    return target


def change_role(principal: Principal, org_id: str, user_id: str, body: RoleChange) -> MemberOut:
    actor = authorize(principal, org_id, "members:manage")
    target = _target(actor, org_id, user_id)
    if RANK[body.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot grant the {body.role} role")
    if target.role != body.role:
        store.change_role(member=target, role=body.role)
        target.role = body.role
    return member_out(target)


def remove_member(principal: Principal, org_id: str, user_id: str) -> None:
    """Owners and admins remove members up to their own rank; anyone may leave. The last owner stays."""
    if user_id == principal.id:
        target = authorize(principal, org_id, "org:read")
    else:
        target = _target(authorize(principal, org_id, "members:manage"), org_id, user_id)
    store.remove_member(target)


def invitation_out(invitation: store.Invitation, token: str | None = None) -> InvitationOut:
    return InvitationOut(
        id=invitation.id, email=invitation.email, role=invitation.role,  # type: ignore[arg-type]
        expires_at=invitation.expires_at, created_at=invitation.created_at, token=token,
    )


def invite(settings: Settings, principal: Principal, org_id: str, body: InvitationCreate) -> InvitationOut:
    """Create an invitation; its token is returned here only and stored hashed."""
    actor = authorize(principal, org_id, "invitations:manage")
    if RANK[body.role] > RANK[actor.role]:
        raise errors.Forbidden(f"an {actor.role} cannot invite an {body.role}")
    invitation_id, secret, at = crypto.new_id("inv"), crypto.new_secret(), now()
    invitation = store.Invitation(
        *store.Invitation.key(org_id, invitation_id), id=invitation_id, org_id=org_id, email=body.email,
        role=body.role, token_hash=crypto.token_hash(secret), invited_by=principal.id,
        created_at=at, expires_at=at + settings.invitation_ttl, expires_ttl=at + settings.invitation_ttl,
    )
    store.put_invitation(invitation)
    return invitation_out(invitation, token=f"{org_id}.{invitation_id}.{secret}")


def list_invitations(principal: Principal, org_id: str, query: ListQuery) -> Page[InvitationOut]:
    authorize(principal, org_id, "invitations:manage")
    invitations, cursor = store.invitations_of(org_id, limit=query.limit, cursor=query.cursor)
    return Page[InvitationOut](items=[invitation_out(i) for i in invitations], next_cursor=cursor)


def revoke_invitation(principal: Principal, org_id: str, invitation_id: str) -> None:
    authorize(principal, org_id, "invitations:manage")
    store.delete_invitation(org_id, invitation_id)


def redeemable_invitation(token: str, *, email: str) -> store.Invitation:
    """The live invitation `token` names, addressed to `email`; NotFound otherwise (one message for all)."""
    org_id, _, rest = token.partition(".")
    invitation_id, _, secret = rest.partition(".")
    invitation = store.get_invitation(org_id, invitation_id) if org_id and invitation_id and secret else None
    if (
        invitation is None
        or not crypto.same(invitation.token_hash, crypto.token_hash(secret))
        or invitation.email.lower() != email.lower()
    ):
        raise errors.NotFound("invitation not found, expired, or addressed to another e-mail")
    return invitation


def accept(principal: Principal, body: InvitationAccept) -> OrganizationOut:
    user = account_store.get_user(principal.id)
    if user is None:
        raise errors.Unauthorized("the account no longer exists")
    invitation = redeemable_invitation(body.token, email=user.email)
    member = store.new_member(
        org_id=invitation.org_id, user_id=user.id, email=user.email, name=user.name, role=invitation.role, at=now()
    )
    store.accept_invitation(invitation, member)
    org = store.get_org(invitation.org_id)
    if org is None:
        raise errors.NotFound("organization not found")
    return organization_out(org, invitation.role)
