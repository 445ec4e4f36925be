import { useCallback, useState } from 'react'

/**
 * A form's non-secret fields, kept in sessionStorage once the user edits them: a session that expires mid-form sends
 * the user to the login page and back, and the form comes back as it was. Until edited, the form shows `initial()`
 * (and follows it as it changes); `clear` (after a submit, or to discard) returns to it. Never put passwords or secret
 * keys in a draft.
 */
const PREFIX = 'orochi.draft.'

/** Signing out forgets every draft: the next user of this tab must not find them. */
export function forgetDrafts(): void {
  for (const key of Object.keys(sessionStorage)) {
    if (key.startsWith(PREFIX)) sessionStorage.removeItem(key)
  }
}

export function useDraft<T extends object>(key: string, initial: () => T): [T, (update: Partial<T>) => void, () => void] {
  const storageKey = `${PREFIX}${key}`
  const [draft, setDraft] = useState<Partial<T> | null>(() => read<T>(storageKey))

  const update = useCallback((patch: Partial<T>) => setDraft((current) => {
    const next = { ...initial(), ...current, ...patch }
    sessionStorage.setItem(storageKey, JSON.stringify(next))
    return next
  }), [storageKey, initial])
  const clear = useCallback(() => {
    sessionStorage.removeItem(storageKey)
    setDraft(null)
  }, [storageKey])
  return [{ ...initial(), ...draft }, update, clear]
}

function read<T>(storageKey: string): Partial<T> | null {
  try {
    const stored = sessionStorage.getItem(storageKey)
    return stored ? (JSON.parse(stored) as Partial<T>) : null
  } catch {
    return null
  }
}
