import { Eye, EyeOff } from 'lucide-react'
import { useState } from 'react'
import { useRevealCredentials } from '@/queries/clusters'
import { Button } from '@/ui/button'
import { Card, CardHeader } from '@/ui/card'
import { CopyButton } from '@/ui/copy-button'
import { ErrorNotice } from '@/ui/error-notice'

/** Database credentials, read only when asked (each read is audited) and kept only while the page shows them. */
export function CredentialsCard({ orgId, clusterId }: { orgId: string; clusterId: string }) {
  const reveal = useRevealCredentials(orgId, clusterId)
  const [showPassword, setShowPassword] = useState(false)
  const credentials = reveal.data
  const MASK = '•'.repeat(12)
  // On screen the password stays masked, in the URI too, until asked for; Copy copies the real command.
  const shownUri = credentials && !showPassword ? credentials.uri.replace(`:${encodeURIComponent(credentials.password)}@`, `:${MASK}@`) : credentials?.uri
  return (
    <Card aria-labelledby="credentials-title">
      <CardHeader title={<span id="credentials-title">Connection</span>}
        description="Reading the credentials is recorded in the cluster's audit log."
        actions={credentials
          ? <Button variant="secondary" size="sm" onClick={() => reveal.reset()}>Hide credentials</Button>
          : <Button size="sm" onClick={() => reveal.mutate()} disabled={reveal.isPending}>{reveal.isPending ? 'Reading…' : 'Reveal credentials'}</Button>} />
      <ErrorNotice error={reveal.error} />
      {credentials && (
        <div className="space-y-3">
          <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
            <dt className="text-zinc-500">Host</dt><dd className="font-mono break-all">{credentials.host}:{credentials.port}</dd>
            <dt className="text-zinc-500">Database</dt><dd className="font-mono">{credentials.database}</dd>
            <dt className="text-zinc-500">User</dt><dd className="font-mono">{credentials.username}</dd>
            <dt className="text-zinc-500">Password</dt>
            <dd className="flex items-center gap-2 font-mono break-all">
              <span data-testid="password">{showPassword ? credentials.password : MASK}</span>
              <Button variant="ghost" size="sm" aria-label={showPassword ? 'Hide password' : 'Show password'} onClick={() => setShowPassword(!showPassword)}>
                {showPassword ? <EyeOff className="size-3.5" aria-hidden /> : <Eye className="size-3.5" aria-hidden />}
              </Button>
            </dd>
          </dl>
          <div>
            <p className="mb-1 text-xs font-medium text-zinc-600">Connect with psql</p>
            <div className="flex items-start gap-2">
              <code data-testid="psql-command" className="min-w-0 flex-1 rounded-md bg-zinc-900 px-3 py-2 text-xs break-all text-zinc-100">
                psql "{shownUri}"
              </code>
              <CopyButton value={`psql "${credentials.uri}"`} label="Copy psql command" />
            </div>
          </div>
        </div>
      )}
    </Card>
  )
}
