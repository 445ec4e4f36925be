import { isStale } from '@/api/errors'
import { Button } from '@/ui/button'
import { ErrorNotice } from '@/ui/error-notice'

/** An edit's error; on 412 it offers to load the latest version (the edit is kept, to be applied again). */
export function EditError({ error, shownFields, onReload }: { error: unknown; shownFields: string[]; onReload: () => Promise<void> }) {
  return (
    <ErrorNotice error={error} shownFields={shownFields}>
      {isStale(error) && (
        <Button variant="secondary" size="sm" className="mt-2" onClick={() => void onReload()}>Load latest version</Button>
      )}
    </ErrorNotice>
  )
}
