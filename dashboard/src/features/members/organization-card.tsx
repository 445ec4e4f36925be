import { useState, type FormEvent } from 'react'
import { fieldError } from '@/api/errors'
import { useRenameOrganization, type Organization } from '@/queries/orgs'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { ErrorNotice } from '@/ui/error-notice'
import { Field, Input } from '@/ui/field'

export function OrganizationCard({ org }: { org: Organization }) {
  const [name, setName] = useState(org.name)
  const rename = useRenameOrganization(org.id)
  const submit = (event: FormEvent) => {
    event.preventDefault()
    rename.mutate(name)
  }
  return (
    <Card>
      <CardHeader title="Organization" />
      <form onSubmit={submit} className="flex flex-wrap items-end gap-3" noValidate>
        <Field label="Organization name" className="min-w-56 flex-1" error={fieldError(rename.error, 'name')}>
          {(c) => <Input {...c} value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Button type="submit" disabled={rename.isPending || name.trim() === org.name}>Rename</Button>
      </form>
      <div className="mt-3"><ErrorNotice error={rename.error} shownFields={['name']} /></div>
    </Card>
  )
}
