import type { components } from '@/api/schema.gen'

export type Role = components['schemas']['MemberOut']['role']

/** The API's ranks and what each action needs (PERMISSIONS in chalicelib/orgs.py); the UI offers only what a role may do. */
const RANK: Record<Role, number> = { viewer: 0, member: 1, admin: 2, owner: 3 }
const NEEDS = {
  'clusters:write': 'member',
  'clusters:delete': 'admin',
  'clusters:credentials': 'admin',
  'deletion-protection:off': 'admin',
  'org:rename': 'admin',
  'invitations:manage': 'admin',
  'members:manage': 'admin',
} as const satisfies Record<string, Role>

type Action = keyof typeof NEEDS
const ROLES: Role[] = ['viewer', 'member', 'admin', 'owner']

export function can(role: Role | null | undefined, action: Action): boolean {
  return role != null && RANK[role] >= RANK[NEEDS[action]]
}

/** Roles a user may grant or invite: never above their own. */
export function grantable(role: Role): Role[] {
  return ROLES.filter((r) => RANK[r] <= RANK[role])
}

/** Whether a user may change or remove a member: they manage members and the member's rank is not above their own. */
export function canManage(role: Role, target: Role): boolean {
  return can(role, 'members:manage') && RANK[target] <= RANK[role]
}
