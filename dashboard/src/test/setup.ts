import '@testing-library/jest-dom/vitest'
import { cleanup, configure } from '@testing-library/react'
import { afterEach } from 'vitest'

// A loaded 2-core machine: wait on conditions a little longer than the default second.
configure({ asyncUtilTimeout: 5_000 })

afterEach(() => {
  cleanup()
  sessionStorage.clear()
})
