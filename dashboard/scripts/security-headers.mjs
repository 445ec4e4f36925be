// The security headers the console is served with, as JSON: read from vite.config.ts's preview server (the one
// source, security-headers.ts), for the API URL of the build (VITE_API_URL). `make package` turns them into the
// CloudFront response-headers policy (infra/dashboard_site.py), so production sends what the e2e tests ran under.
//   VITE_API_URL=https://api.example node scripts/security-headers.mjs > headers.json
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfigFromFile } from 'vite'

const dashboard = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const loaded = await loadConfigFromFile({ command: 'build', mode: 'production' }, resolve(dashboard, 'vite.config.ts'), dashboard)
const headers = loaded?.config.preview?.headers
if (!headers || !headers['Content-Security-Policy']) {
  console.error('vite.config.ts sets no Content-Security-Policy for the preview server')
  process.exit(1)
}
process.stdout.write(JSON.stringify(headers, null, 2) + '\n')
