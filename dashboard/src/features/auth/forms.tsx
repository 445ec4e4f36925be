import { useMutation } from '@tanstack/react-query'
import { useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import { useSession } from '@/auth/context'
import type { LoginBody, RegisterBody } from '@/auth/session'
import { Button } from '@/ui/button'
import { ErrorNotice } from '@/ui/error-notice'
import { Field, Input } from '@/ui/field'

export function LoginForm({ onDone }: { onDone: () => void }) {
  const session = useSession()
  const [body, setBody] = useState<LoginBody>({ email: '', password: '' })
  const login = useMutation({ mutationFn: (b: LoginBody) => session.login(b), onSuccess: onDone })
  const submit = (event: FormEvent) => {
    event.preventDefault()
    login.mutate(body)
  }
  return (
    <form onSubmit={submit} className="space-y-4" noValidate>
      <Field label="E-mail" error={fieldError(login.error, 'email')}>
        {(c) => <Input {...c} type="email" autoComplete="username" required value={body.email} onChange={(e) => setBody({ ...body, email: e.target.value })} />}
      </Field>
      <Field label="Password" error={fieldError(login.error, 'password')}>
        {(c) => <Input {...c} type="password" autoComplete="current-password" required value={body.password} onChange={(e) => setBody({ ...body, password: e.target.value })} />}
      </Field>
      <ErrorNotice error={login.error} shownFields={['email', 'password']} />
      <Button type="submit" className="w-full" disabled={login.isPending}>{login.isPending ? 'Signing in…' : 'Sign in'}</Button>
    </form>
  )
}

/** A new account with its own organization, or, given an invitation's token, joining the inviting organization. */
export function RegisterForm({ invitationToken, onDone }: { invitationToken?: string; onDone: () => void }) {
  const session = useSession()
  const [form, setForm] = useState({ name: '', email: '', password: '', organization_name: '' })
  const register = useMutation({ mutationFn: (b: RegisterBody) => session.register(b), onSuccess: onDone })
  const submit = (event: FormEvent) => {
    event.preventDefault()
    const { organization_name, ...account } = form
    register.mutate(invitationToken ? { ...account, invitation_token: invitationToken } : { ...account, organization_name })
  }
  const shown = ['name', 'email', 'password', 'organization_name']
  return (
    <form onSubmit={submit} className="space-y-4" noValidate>
      <Field label="Your name" error={fieldError(register.error, 'name')}>
        {(c) => <Input {...c} autoComplete="name" required value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />}
      </Field>
      <Field label="E-mail" error={fieldError(register.error, 'email')}>
        {(c) => <Input {...c} type="email" autoComplete="email" required value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} />}
      </Field>
      <Field label="Password" hint="At least 8 characters." error={fieldError(register.error, 'password')}>
        {(c) => <Input {...c} type="password" autoComplete="new-password" required value={form.password} onChange={(e) => setForm({ ...form, password: e.target.value })} />}
      </Field>
      {!invitationToken && (
        <Field label="Organization name" error={fieldError(register.error, 'organization_name')}>
          {(c) => <Input {...c} autoComplete="organization" required value={form.organization_name} onChange={(e) => setForm({ ...form, organization_name: e.target.value })} />}
        </Field>
      )}
      <ErrorNotice error={register.error} shownFields={shown} />
      <Button type="submit" className="w-full" disabled={register.isPending}>
        {register.isPending ? 'Creating your account…' : invitationToken ? 'Create account and join' : 'Create account'}
      </Button>
    </form>
  )
}
