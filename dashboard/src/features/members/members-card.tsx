import { useNavigate } from '@tanstack/react-router'
import { useSessionState } from '@/auth/context'
import { canManage, grantable, type Role } from '@/auth/permissions'
import { useChangeRole, useMembers, useRemoveMember, type Member } from '@/queries/orgs'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { ErrorNotice } from '@/ui/error-notice'
import { Select } from '@/ui/field'

export function MembersCard({ orgId, role }: { orgId: string; role: Role }) {
  const members = useMembers(orgId)
  const changeRole = useChangeRole(orgId)
  const remove = useRemoveMember(orgId)
  const state = useSessionState()
  const navigate = useNavigate()
  const me = state.status === 'signed-in' ? state.user.id : null
  const leave = () => remove.mutate(me!, { onSuccess: () => void navigate({ to: '/' }) })
  return (
    <Card>
      <CardHeader title="Members" actions={<Button variant="secondary" size="sm" onClick={leave} disabled={remove.isPending}>Leave organization</Button>} />
      <ErrorNotice error={members.error ?? changeRole.error ?? remove.error} />
      <ul className="divide-y divide-zinc-100" aria-label="Members">
        {members.data?.map((member) => (
          <MemberRow key={member.user_id} member={member} self={member.user_id === me} role={role}
            onRole={(next) => changeRole.mutate({ userId: member.user_id, role: next })}
            onRemove={() => remove.mutate(member.user_id)} busy={changeRole.isPending || remove.isPending} />
        ))}
      </ul>
    </Card>
  )
}

function MemberRow({ member, self, role, onRole, onRemove, busy }: {
  member: Member; self: boolean; role: Role; onRole: (role: Role) => void; onRemove: () => void; busy: boolean
}) {
  const manageable = !self && canManage(role, member.role)
  return (
    <li className="flex flex-wrap items-center gap-3 py-3" data-testid="member">
      <div className="min-w-0 flex-1">
        <p className="truncate text-sm font-medium">{member.name}{self && <span className="text-zinc-500"> (you)</span>}</p>
        <p className="truncate text-xs text-zinc-500">{member.email}</p>
      </div>
      {manageable ? (
        <>
          <Select aria-label={`Role of ${member.name}`} className="w-32" value={member.role} disabled={busy}
            onChange={(e) => onRole(e.target.value as Role)}>
            {grantable(role).map((r) => <option key={r} value={r}>{r}</option>)}
          </Select>
          <Button variant="ghost" size="sm" onClick={onRemove} disabled={busy} aria-label={`Remove ${member.name}`}>Remove</Button>
        </>
      ) : (
        <span className="rounded-full bg-zinc-100 px-2 py-0.5 text-xs font-medium text-zinc-700">{member.role}</span>
      )}
    </li>
  )
}
