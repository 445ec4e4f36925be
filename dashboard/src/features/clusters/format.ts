export function formatTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
}

export function instancesLabel(ready: number, desired: number): string {
  return `${ready}/${desired} ready`
}
