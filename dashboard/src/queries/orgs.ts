import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { data } from '@/api/client'
import type { components } from '@/api/schema.gen'
import { useApi } from '@/auth/context'
import { allPages } from './pages'

export type Organization = components['schemas']['OrganizationOut']
export type Member = components['schemas']['MemberOut']
export type Invitation = components['schemas']['InvitationOut']
type Role = Member['role']

const LIMIT = 100

const orgKeys = {
  all: ['orgs'] as const,
  members: (orgId: string) => ['orgs', orgId, 'members'] as const,
  invitations: (orgId: string) => ['orgs', orgId, 'invitations'] as const,
}

export function useOrganizations() {
  const api = useApi()
  return useQuery({
    queryKey: orgKeys.all,
    queryFn: () => allPages((cursor) => data(api.GET('/v1/orgs', { params: { query: { limit: LIMIT, cursor } } }))),
  })
}

export function useOrganization(orgId: string): Organization | undefined {
  return useOrganizations().data?.find((org) => org.id === orgId)
}

export function useMembers(orgId: string) {
  const api = useApi()
  return useQuery({
    queryKey: orgKeys.members(orgId),
    queryFn: () => allPages((cursor) => data(api.GET('/v1/orgs/{org_id}/members', {
      params: { path: { org_id: orgId }, query: { limit: LIMIT, cursor } },
    }))),
  })
}

export function useInvitations(orgId: string) {
  const api = useApi()
  return useQuery({
    queryKey: orgKeys.invitations(orgId),
    queryFn: () => allPages((cursor) => data(api.GET('/v1/orgs/{org_id}/invitations', {
      params: { path: { org_id: orgId }, query: { limit: LIMIT, cursor } },
    }))),
  })
}

export function useRenameOrganization(orgId: string) {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (name: string) => data(api.PATCH('/v1/orgs/{org_id}', { params: { path: { org_id: orgId } }, body: { name } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.all, exact: true }),
  })
}

export function useInvite(orgId: string) {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (body: { email: string; role: Role }) =>
      data(api.POST('/v1/orgs/{org_id}/invitations', { params: { path: { org_id: orgId } }, body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.invitations(orgId) }),
  })
}

export function useRevokeInvitation(orgId: string) {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (invitationId: string) => data(api.DELETE('/v1/orgs/{org_id}/invitations/{invitation_id}', {
      params: { path: { org_id: orgId, invitation_id: invitationId } },
    })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.invitations(orgId) }),
  })
}

export function useChangeRole(orgId: string) {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: ({ userId, role }: { userId: string; role: Role }) => data(api.PATCH('/v1/orgs/{org_id}/members/{user_id}', {
      params: { path: { org_id: orgId, user_id: userId } }, body: { role },
    })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.members(orgId) }),
  })
}

/** Remove a member, or leave when it is the caller. */
export function useRemoveMember(orgId: string) {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (userId: string) => data(api.DELETE('/v1/orgs/{org_id}/members/{user_id}', {
      params: { path: { org_id: orgId, user_id: userId } },
    })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.all }),
  })
}

export function useAcceptInvitation() {
  const api = useApi()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (token: string) => data(api.POST('/v1/invitations/accept', { body: { token } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: orgKeys.all }),
  })
}
