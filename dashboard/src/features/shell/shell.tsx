import { Link, useNavigate, useParams } from '@tanstack/react-router'
import { ChevronsUpDown, LogOut } from 'lucide-react'
import type { ReactNode } from 'react'
import { useSession } from '@/auth/context'
import { forgetDrafts } from '@/auth/drafts'
import type { User } from '@/auth/session'
import { useOrganizations } from '@/queries/orgs'
import { Button } from '@/ui/button'
import { DropdownMenu, DropdownMenuContent, DropdownMenuItem, DropdownMenuLabel, DropdownMenuSeparator, DropdownMenuTrigger } from '@/ui/menu'
import { Logo } from './logo'

export function Shell({ user, children }: { user: User; children: ReactNode }) {
  const { orgId } = useParams({ strict: false })
  return (
    <div className="min-h-screen">
      <header className="border-b border-zinc-200 bg-white">
        <div className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-3">
          <Link to="/" aria-label="Orochi DB home"><Logo /></Link>
          <OrgSwitcher orgId={orgId} />
          <div className="ml-auto"><UserMenu user={user} /></div>
        </div>
        {orgId && (
          <nav aria-label="Organization" className="mx-auto flex max-w-6xl gap-1 px-4">
            <NavLink to="/orgs/$orgId/clusters" orgId={orgId}>Clusters</NavLink>
            <NavLink to="/orgs/$orgId/members" orgId={orgId}>Members</NavLink>
          </nav>
        )}
      </header>
      <main className="mx-auto max-w-6xl px-4 py-6">{children}</main>
    </div>
  )
}

function NavLink({ to, orgId, children }: { to: '/orgs/$orgId/clusters' | '/orgs/$orgId/members'; orgId: string; children: ReactNode }) {
  return (
    <Link to={to} params={{ orgId }}
      className="border-b-2 border-transparent px-3 py-2 text-sm font-medium text-zinc-600 hover:text-zinc-900"
      activeProps={{ className: 'border-brand-600! text-zinc-900!', 'aria-current': 'page' }}>
      {children}
    </Link>
  )
}

function OrgSwitcher({ orgId }: { orgId?: string }) {
  const orgs = useOrganizations()
  const navigate = useNavigate()
  const current = orgs.data?.find((o) => o.id === orgId)
  if (!orgs.data?.length) return null
  return (
    <DropdownMenu>
      <DropdownMenuTrigger asChild>
        <Button variant="ghost" className="max-w-56" aria-label={`Organization: ${current?.name ?? 'choose'}`}>
          <span className="truncate">{current?.name ?? 'Choose organization'}</span>
          <ChevronsUpDown className="size-4 text-zinc-500" aria-hidden />
        </Button>
      </DropdownMenuTrigger>
      <DropdownMenuContent align="start">
        <DropdownMenuLabel>Organizations</DropdownMenuLabel>
        {orgs.data.map((org) => (
          <DropdownMenuItem key={org.id} onSelect={() => void navigate({ to: '/orgs/$orgId/clusters', params: { orgId: org.id } })}>
            <span className="truncate">{org.name}</span>
            <span className="ml-auto text-xs text-zinc-500">{org.role}</span>
          </DropdownMenuItem>
        ))}
      </DropdownMenuContent>
    </DropdownMenu>
  )
}

function UserMenu({ user }: { user: User }) {
  const session = useSession()
  return (
    <DropdownMenu>
      <DropdownMenuTrigger asChild>
        <Button variant="ghost" aria-label={`Account: ${user.name}`}>
          <span className="grid size-7 place-items-center rounded-full bg-zinc-200 text-xs font-semibold" aria-hidden>
            {user.name.slice(0, 1).toUpperCase()}
          </span>
          <span className="hidden sm:inline">{user.name}</span>
        </Button>
      </DropdownMenuTrigger>
      <DropdownMenuContent>
        <DropdownMenuLabel>{user.email}</DropdownMenuLabel>
        <DropdownMenuSeparator />
        <DropdownMenuItem onSelect={() => {
          forgetDrafts()
          void session.logout()
        }}><LogOut className="size-4" aria-hidden />Sign out</DropdownMenuItem>
      </DropdownMenuContent>
    </DropdownMenu>
  )
}
