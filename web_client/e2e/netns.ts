// A two-namespace network for the ICE tests (e2e/network.spec.ts): a "server" namespace and a "browser" namespace of
// this run only, joined by a veth pair with a private IPv4 and a documentation-prefix global IPv6 (2001:db8::/32) on
// each end; both keep their loopback.  Nothing else exists in them, so no packet can leave.
// Servers (CloudWindow, coturn) are started in the server namespace and Chromium in the browser namespace; teardown
// kills what was started, every process left in the two namespaces, and the namespaces (the veth goes with them).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CHROMIUM, PASSWORD } from './env'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
const BIN = join(ROOT, '.venv', 'bin')

export const SERVER_IP = '10.77.0.1'
export const BROWSER_IP = '10.77.0.2'
export const BROWSER_IP6 = '2001:db8:77::2'
export const SERVER_IP6 = '2001:db8:77::1'

function ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: 'pipe' }).toString()
}

export interface Started {
  url: string
  data: string
  proc: ChildProcess
}

export class Topology {
  readonly id = randomBytes(3).toString('hex')
  readonly serverNs = `cw-ice-s-${this.id}`
  readonly browserNs = `cw-ice-b-${this.id}`
  readonly wrapper = join(tmpdir(), `cw-ice-chromium-${this.id}.sh`)
  private procs: ChildProcess[] = []
  private up = false

  /** Make the namespaces, the veth pair and the addresses, and the Chromium wrapper for the browser namespace. */
  create(): void {
    const s = this.serverNs
    const b = this.browserNs
    const vs = `cwi${this.id}s`
    const vb = `cwi${this.id}b`
    ip('netns', 'add', s)
    this.up = true
    ip('netns', 'add', b)
    for (const ns of [s, b]) ip('-n', ns, 'link', 'set', 'lo', 'up')
    // Created inside the server namespace, so the pair never touches the host's interfaces.
    ip('-n', s, 'link', 'add', vs, 'type', 'veth', 'peer', 'name', vb)
    ip('-n', s, 'link', 'set', vb, 'netns', b)
    ip('-n', s, 'addr', 'add', `${SERVER_IP}/24`, 'dev', vs)
    ip('-n', b, 'addr', 'add', `${BROWSER_IP}/24`, 'dev', vb)
    ip('-n', b, '-6', 'addr', 'add', `${BROWSER_IP6}/64`, 'dev', vb, 'nodad')
    ip('-n', s, '-6', 'addr', 'add', `${SERVER_IP6}/64`, 'dev', vs, 'nodad')
    ip('-n', s, 'link', 'set', vs, 'up')
    ip('-n', b, 'link', 'set', vb, 'up')
    writeFileSync(this.wrapper, `#!/bin/sh\nexec ip netns exec ${b} ${CHROMIUM} "$@"\n`)
    chmodSync(this.wrapper, 0o755)
  }

  /** A CloudWindow server (SQLite, demo district) on ``SERVER_IP:port`` in the server namespace. */
  async server(port: number, env: Record<string, string>): Promise<Started> {
    const data = mkdtempSync(join(tmpdir(), 'cw-ice-'))
    const full: Record<string, string | undefined> = {
      ...process.env,
      CLOUDWINDOW_DATA_DIR: data,
      CLOUDWINDOW_SECRET_KEY: 'e2e-secret-key-0123456789abcdef',
      CLOUDWINDOW_LOG_FORMAT: 'text',
      CLOUDWINDOW_LOG_LEVEL: 'INFO',
      CLOUDWINDOW_MEDIA__HOST_ADDRESSES: JSON.stringify([SERVER_IP]),
      CLOUDWINDOW_WEB_CLIENT_DIST: join(ROOT, 'web_client', 'dist'),
      ...env,
    }
    delete full.CLOUDWINDOW_CONFIG
    execFileSync(join(BIN, 'cloudwindow'), ['db', 'upgrade'], { env: full, stdio: 'pipe' })
    execFileSync(join(BIN, 'cloudwindow'), ['demo', 'load', '--password', PASSWORD], { env: full, stdio: 'pipe' })
    const log = openSync(join(data, 'server.log'), 'w')
    const proc = spawn('ip', ['netns', 'exec', this.serverNs, join(BIN, 'cloudwindow'), 'serve', '--host', SERVER_IP, '--port', String(port)], {
      env: full,
      stdio: ['ignore', log, log],
    })
    this.procs.push(proc)
    const url = `http://${SERVER_IP}:${port}`
    const probe = `import urllib.request,sys\ntry:\n urllib.request.urlopen('${url}/readyz', timeout=2)\nexcept Exception:\n sys.exit(1)`
    const deadline = Date.now() + 60_000
    for (;;) {
      try {
        execFileSync('ip', ['netns', 'exec', this.serverNs, join(BIN, 'python'), '-c', probe], { stdio: 'pipe' })
        return { url, data, proc }
      } catch {
        if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`server did not start: ${readFileSync(join(data, 'server.log'), 'utf8').slice(-2000)}`)
        await new Promise((r) => setTimeout(r, 300))
      }
    }
  }

  /** coturn in the server namespace with REST (shared-secret) credentials, relaying on ``SERVER_IP``. */
  async coturn(port: number, secret: string): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'cw-ice-turn-'))
    const proc = spawn(
      'ip',
      [
        'netns', 'exec', this.serverNs, 'turnserver',
        `--listening-ip=${SERVER_IP}`, `--relay-ip=${SERVER_IP}`, `--listening-port=${port}`,
        '--min-port=49160', '--max-port=49200',
        '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=cloudwindow',
        '--no-tls', '--no-dtls', '--no-cli', '--no-stun-backward-compatibility',
        `--log-file=${join(dir, 'turn.log')}`, '--simple-log', `--pidfile=${join(dir, 'turn.pid')}`, `--userdb=${join(dir, 'turndb')}`,
      ],
      { stdio: 'ignore' },
    )
    this.procs.push(proc)
    const deadline = Date.now() + 10_000
    while (!ip('netns', 'exec', this.serverNs, 'ss', '-lun').includes(`${SERVER_IP}:${port}`)) {
      if (Date.now() > deadline || proc.exitCode !== null) throw new Error('coturn did not start')
      await new Promise((r) => setTimeout(r, 200))
    }
  }

  /** Kill what was started here and whatever else runs in the two namespaces, then delete them. Idempotent. */
  async destroy(): Promise<void> {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGTERM')
    const deadline = Date.now() + 5000
    while (this.procs.some((p) => p.exitCode === null && p.signalCode === null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    this.destroySync()
  }

  destroySync(): void {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    this.procs = []
    rmSync(this.wrapper, { force: true })
    if (!this.up) return
    for (const ns of [this.serverNs, this.browserNs]) {
      let pids: string[] = []
      try {
        pids = ip('netns', 'pids', ns).split(/\s+/).filter(Boolean)
      } catch {
        /* no such namespace */
      }
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL')
        } catch {
          /* gone */
        }
      }
      try {
        ip('netns', 'del', ns)
      } catch {
        /* already gone */
      }
    }
    this.up = false
  }
}
