from __future__ import annotations

from typing import Any

from chalicelib import orgs
from chalicelib.shapes import ListQuery, Page
from chalicelib.web import Call, Reply, Router

router = Router(__name__, tag="organizations")


@router.route("GET", "/v1/orgs", query=ListQuery, response=Page[orgs.OrganizationOut])
def list_orgs(call: Call[Any]) -> Page[orgs.OrganizationOut]:
    """The organizations the caller belongs to, with their role"""
    return orgs.list_mine(call.settings, call.user, call.query)


@router.route("GET", "/v1/orgs/{org_id}", permission="org:read", response=orgs.OrganizationOut, errors=(404,))
def get_org(call: Call[Any]) -> orgs.OrganizationOut:
    """One organization"""
    return orgs.get(call.member)


@router.route("PATCH", "/v1/orgs/{org_id}", permission="org:rename", body=orgs.OrgRename,
              response=orgs.OrganizationOut, errors=(403, 404))
def rename_org(call: Call[orgs.OrgRename]) -> orgs.OrganizationOut:
    """Rename an organization (owner, admin)"""
    return orgs.rename(call.member, call.body)


@router.route("GET", "/v1/orgs/{org_id}/members", permission="members:read", query=ListQuery,
              response=Page[orgs.MemberOut], errors=(404,))
def list_members(call: Call[Any]) -> Page[orgs.MemberOut]:
    """Members of an organization"""
    return orgs.list_members(call.settings, call.member, call.query)


@router.route("PATCH", "/v1/orgs/{org_id}/members/{user_id}", permission="members:manage", body=orgs.RoleChange,
              response=orgs.MemberOut, errors=(403, 404, 409))
def change_role(call: Call[orgs.RoleChange]) -> orgs.MemberOut:
    """Change a member's role (owner, admin; never above your own; the last owner stays)"""
    return orgs.change_role(call.member, call.params["user_id"], call.body)


@router.route("DELETE", "/v1/orgs/{org_id}/members/{user_id}", permission="org:read", status=204,
              errors=(403, 404, 409))
def remove_member(call: Call[Any]) -> Reply:
    """Remove a member (owner, admin), or leave (anyone; the last owner stays)"""
    orgs.remove_member(call.member, call.params["user_id"])
    return Reply(None)


@router.route("POST", "/v1/orgs/{org_id}/invitations", permission="invitations:manage", status=201,
              body=orgs.InvitationCreate, response=orgs.InvitationOut, errors=(403, 404))
def invite(call: Call[orgs.InvitationCreate]) -> orgs.InvitationOut:
    """Invite someone by e-mail (owner, admin); the token is in this response only"""
    return orgs.invite(call.settings, call.member, call.body)


@router.route("GET", "/v1/orgs/{org_id}/invitations", permission="invitations:manage", query=ListQuery,
              response=Page[orgs.InvitationOut], errors=(403, 404))
def list_invitations(call: Call[Any]) -> Page[orgs.InvitationOut]:
    """Pending invitations (owner, admin)"""
    return orgs.list_invitations(call.settings, call.member, call.query)


@router.route("DELETE", "/v1/orgs/{org_id}/invitations/{invitation_id}", permission="invitations:manage", status=204,
              errors=(403, 404))
def revoke_invitation(call: Call[Any]) -> Reply:
    """Revoke a pending invitation (owner, admin)"""
    orgs.revoke_invitation(call.member, call.params["invitation_id"])
    return Reply(None)


@router.route("POST", "/v1/invitations/accept", body=orgs.InvitationAccept, response=orgs.OrganizationOut,
              errors=(404, 409))
def accept_invitation(call: Call[orgs.InvitationAccept]) -> orgs.OrganizationOut:
    """Join the organization of an invitation addressed to your e-mail"""
    return orgs.accept(call.user, call.body)
