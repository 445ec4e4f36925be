/** Every item of a cursor-paginated list (`{items, next_cursor}`), page after page. */
export async function allPages<T>(page: (cursor: string | undefined) => Promise<{ items: T[]; next_cursor?: string | null }>): Promise<T[]> {
  const items: T[] = []
  let cursor: string | undefined
  do {
    const answer = await page(cursor)
    items.push(...answer.items)
    cursor = answer.next_cursor ?? undefined
  } while (cursor)
  return items
}
