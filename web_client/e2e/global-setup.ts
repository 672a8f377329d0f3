// Starts a CloudWindow server (SQLite, filesystem store, demo district, 1 s recording segments) inside a fresh
// network namespace with only a loopback interface, and a wrapper that starts Chromium in the same namespace.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, openSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { join, resolve } from 'node:path'
import { CHROMIUM, CHROMIUM_WRAPPER, NETNS, PASSWORD, PORT } from './env'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
const BIN = join(ROOT, '.venv', 'bin')

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' })
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install chromium (make test does)`)
  if (!existsSync(join(ROOT, 'web_client', 'dist', 'index.html'))) throw new Error('web_client/dist missing: npm run build')
  try {
    ip('netns', 'del', NETNS)
  } catch {
    /* not there */
  }
  ip('netns', 'add', NETNS)
  ip('netns', 'exec', NETNS, 'ip', 'link', 'set', 'lo', 'up')
  writeFileSync(CHROMIUM_WRAPPER, `#!/bin/sh\nexec ip netns exec ${NETNS} ${CHROMIUM} "$@"\n`)
  chmodSync(CHROMIUM_WRAPPER, 0o755)

  const data = mkdtempSync(join(tmpdir(), 'cw-e2e-'))
  const env = {
    ...process.env,
    CLOUDWINDOW_DATA_DIR: data,
    CLOUDWINDOW_SECRET_KEY: 'e2e-secret-key-0123456789abcdef',
    CLOUDWINDOW_LOG_FORMAT: 'text',
    CLOUDWINDOW_LOG_LEVEL: 'WARNING',
    CLOUDWINDOW_MEDIA__HOST_ADDRESSES: '["127.0.0.1"]',
    CLOUDWINDOW_MEDIA__ALLOWED_CIDRS: '["127.0.0.0/8"]',
    CLOUDWINDOW_WEB_CLIENT_DIST: join(ROOT, 'web_client', 'dist'),
    CLOUDWINDOW_RECORDING__SEGMENT_SECONDS: '1',
    CLOUDWINDOW_RECORDING__JOB_INTERVAL: '0.5',
    CLOUDWINDOW_RECORDING__UPLOAD_INTERVAL: '0.5',
  }
  delete (env as Record<string, string | undefined>).CLOUDWINDOW_CONFIG
  execFileSync(join(BIN, 'cloudwindow'), ['db', 'upgrade'], { env, stdio: 'pipe' })
  execFileSync(join(BIN, 'cloudwindow'), ['demo', 'load', '--password', PASSWORD], { env, stdio: 'pipe' })
  const log = openSync(join(data, 'server.log'), 'w')
  const server = spawn('ip', ['netns', 'exec', NETNS, join(BIN, 'cloudwindow'), 'serve', '--port', String(PORT)], {
    env,
    stdio: ['ignore', log, log],
  })
  const ready = `import urllib.request,sys\ntry:\n urllib.request.urlopen('http://127.0.0.1:${PORT}/readyz', timeout=2)\nexcept Exception:\n sys.exit(1)`
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      execFileSync('ip', ['netns', 'exec', NETNS, join(BIN, 'python'), '-c', ready], { stdio: 'pipe' })
      break
    } catch {
      if (Date.now() > deadline || server.exitCode !== null) throw new Error(`server did not start; see ${join(data, 'server.log')}`)
      await new Promise((r) => setTimeout(r, 300))
    }
  }
  process.env.CW_E2E_DATA = data
  return async () => {
    server.kill('SIGTERM')
    await new Promise((r) => setTimeout(r, 1000))
    if (server.exitCode === null) server.kill('SIGKILL')
    try {
      ip('netns', 'del', NETNS)
    } catch {
      /* already gone */
    }
  }
}
