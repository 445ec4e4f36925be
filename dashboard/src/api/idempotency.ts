import { useState } from 'react'

/**
 * One Idempotency-Key per submit: the same body sent again (a retry, a double click) carries the same key, so the API
 * answers it once; a different body, or a submit after a success, gets a new key.
 */
export class IdempotencyKeys {
  private current: { body: string; key: string } | null = null

  keyFor(body: unknown): string {
    const serialized = JSON.stringify(body)
    if (this.current?.body !== serialized) this.current = { body: serialized, key: crypto.randomUUID() }
    return this.current.key
  }

  /** The submit succeeded: the next one is a new request. */
  settle(): void {
    this.current = null
  }
}

export function useIdempotencyKeys(): IdempotencyKeys {
  return useState(() => new IdempotencyKeys())[0]
}
