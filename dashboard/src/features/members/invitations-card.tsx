import { useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import { grantable, type Role } from '@/auth/permissions'
import { formatTime } from '@/features/clusters/format'
import { useInvitations, useInvite, useRevokeInvitation } from '@/queries/orgs'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { CopyButton } from '@/ui/copy-button'
import { ErrorNotice } from '@/ui/error-notice'
import { Field, Input, Select } from '@/ui/field'

/** The console's page that takes the invitation's token from its path (routes/invite.$token.tsx). */
function invitationLink(token: string): string {
  return `${window.location.origin}/invite/${encodeURIComponent(token)}`
}

/** Invite by e-mail: the link carries the invitation's token, shown once (the API keeps only its hash). */
export function InvitationsCard({ orgId, role }: { orgId: string; role: Role }) {
  const invitations = useInvitations(orgId)
  const invite = useInvite(orgId)
  const revoke = useRevokeInvitation(orgId)
  const [form, setForm] = useState<{ email: string; role: Role }>({ email: '', role: 'member' })
  const submit = (event: FormEvent) => {
    event.preventDefault()
    invite.mutate(form, { onSuccess: () => setForm({ ...form, email: '' }) })
  }
  const token = invite.data?.token
  return (
    <Card>
      <CardHeader title="Invitations" description="Send the link to the person you invite; it works once, for their e-mail address." />
      <form onSubmit={submit} className="flex flex-wrap items-end gap-3" noValidate>
        <Field label="E-mail" className="min-w-56 flex-1" error={fieldError(invite.error, 'email')}>
          {(c) => <Input {...c} type="email" autoComplete="off" value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} />}
        </Field>
        <Field label="Role" error={fieldError(invite.error, 'role')}>
          {(c) => (
            <Select {...c} className="w-32" value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value as Role })}>
              {grantable(role).map((r) => <option key={r} value={r}>{r}</option>)}
            </Select>
          )}
        </Field>
        <Button type="submit" disabled={invite.isPending}>{invite.isPending ? 'Inviting…' : 'Invite'}</Button>
      </form>
      <div className="mt-3 space-y-3">
        <ErrorNotice error={invite.error} shownFields={['email', 'role']} />
        {token && invite.data && (
          <div role="status" className="rounded-md border border-emerald-200 bg-emerald-50 p-3 text-sm">
            <p className="mb-2">Invitation for <strong>{invite.data.email}</strong> created. Copy the link now: it is not shown again.</p>
            <div className="flex items-start gap-2">
              <code data-testid="invitation-link" className="min-w-0 flex-1 rounded bg-white px-2 py-1 text-xs break-all">{invitationLink(token)}</code>
              <CopyButton value={invitationLink(token)} label="Copy invitation link" />
            </div>
          </div>
        )}
        <ErrorNotice error={invitations.error ?? revoke.error} />
        {invitations.data && invitations.data.length > 0 && (
          <ul className="divide-y divide-zinc-100" aria-label="Pending invitations">
            {invitations.data.map((inv) => (
              <li key={inv.id} className="flex flex-wrap items-center gap-3 py-2 text-sm">
                <span className="min-w-0 flex-1 truncate">{inv.email}</span>
                <span className="text-xs text-zinc-500">{inv.role} · expires {formatTime(inv.expires_at)}</span>
                <Button variant="ghost" size="sm" onClick={() => revoke.mutate(inv.id)} disabled={revoke.isPending} aria-label={`Revoke the invitation of ${inv.email}`}>Revoke</Button>
              </li>
            ))}
          </ul>
        )}
      </div>
    </Card>
  )
}
