import * as Menu from '@radix-ui/react-dropdown-menu'
import type { ComponentProps, ReactNode } from 'react'
import { cn } from './cn'

export const DropdownMenu = Menu.Root
export const DropdownMenuTrigger = Menu.Trigger

export function DropdownMenuContent({ children, align = 'end' }: { children: ReactNode; align?: 'start' | 'end' }) {
  return (
    <Menu.Portal>
      <Menu.Content align={align} sideOffset={6}
        className="z-50 min-w-52 rounded-md border border-zinc-200 bg-white p-1 shadow-md data-[state=open]:animate-in data-[state=open]:fade-in-0">
        {children}
      </Menu.Content>
    </Menu.Portal>
  )
}

export function DropdownMenuItem({ className, ...props }: ComponentProps<typeof Menu.Item>) {
  return <Menu.Item className={cn('flex cursor-pointer items-center gap-2 rounded px-2 py-1.5 text-sm outline-none data-[highlighted]:bg-zinc-100', className)} {...props} />
}

export function DropdownMenuLabel({ children }: { children: ReactNode }) {
  return <Menu.Label className="px-2 py-1.5 text-xs font-medium text-zinc-500">{children}</Menu.Label>
}

export const DropdownMenuSeparator = () => <Menu.Separator className="my-1 h-px bg-zinc-200" />
