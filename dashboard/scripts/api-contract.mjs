// The API contract: openapi.json comes from the control plane's Python code (devstack/openapi_document.py), and
// src/api/schema.gen.ts from openapi.json (openapi-typescript).
//   node scripts/api-contract.mjs gen     regenerate schema.gen.ts from the checked-in openapi.json
//   node scripts/api-contract.mjs pull    regenerate openapi.json from the Python code, then schema.gen.ts
//   node scripts/api-contract.mjs check   regenerate both into a temporary folder; fail on any difference
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const dashboard = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const repo = resolve(dashboard, '..')
const python = process.env.OROCHI_PYTHON || join(repo, '.venv', 'bin', 'python')
const documentFile = join(dashboard, 'openapi.json')
const schemaFile = join(dashboard, 'src', 'api', 'schema.gen.ts')

function openapiDocument() {
  return execFileSync(python, ['-m', 'devstack.openapi_document'], {
    cwd: repo, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, PYTHONPATH: repo },
  })
}

function generateTypes(input, output) {
  execFileSync(process.execPath, [join(dashboard, 'node_modules', 'openapi-typescript', 'bin', 'cli.js'), input, '-o', output, '--default-non-nullable', 'false'],
    { cwd: dashboard, stdio: ['ignore', 'ignore', 'inherit'] })
}

const command = process.argv[2]
if (command === 'gen') {
  generateTypes(documentFile, schemaFile)
} else if (command === 'pull') {
  writeFileSync(documentFile, openapiDocument())
  generateTypes(documentFile, schemaFile)
} else if (command === 'check') {
  const dir = mkdtempSync(join(tmpdir(), 'orochi-api-'))
  try {
    const fresh = { document: join(dir, 'openapi.json'), schema: join(dir, 'schema.gen.ts') }
    writeFileSync(fresh.document, openapiDocument())
    generateTypes(fresh.document, fresh.schema)
    const stale = [[documentFile, fresh.document], [schemaFile, fresh.schema]]
      .filter(([kept, made]) => readFileSync(kept, 'utf8') !== readFileSync(made, 'utf8'))
      .map(([kept]) => kept)
    if (stale.length) {
      console.error(`The API changed: ${stale.join(', ')} differ from what the control plane generates.\n` +
        'Run `npm run pull:api` and review the changes.')
      process.exit(1)
    }
    console.log('openapi.json and schema.gen.ts match the control plane')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
} else {
  console.error('usage: api-contract.mjs gen|pull|check')
  process.exit(2)
}
