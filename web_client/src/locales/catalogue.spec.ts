// The two catalogues have the same keys, no empty texts, the same {placeholders}; every key the code asks for exists;
// every state, role and kind the server can send (read from the server's own source) has words in both languages.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import zh from './zh-CN'
import en from './en'

type Tree = { [k: string]: string | Tree }

function flatten(tree: Tree, prefix = ''): Map<string, string> {
  const out = new Map<string, string>()
  for (const [k, v] of Object.entries(tree)) {
    const key = prefix ? `${prefix}.${k}` : k
    if (typeof v === 'string') out.set(key, v)
    else for (const [kk, vv] of flatten(v, key)) out.set(kk, vv)
  }
  return out
}

const ZH = flatten(zh as Tree)
const EN = flatten(en as Tree)
const SRC = resolve(__dirname, '..')
const ROOT = resolve(SRC, '..', '..')

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) return name === 'locales' ? [] : sources(p)
    return /\.(ts|vue)$/.test(name) && !name.endsWith('.spec.ts') ? [p] : []
  })
}

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort()

/** The string values of a Python tuple or enum in the server's source, e.g. ``STATES = ("draft", ...)``. */
function pythonValues(file: string, pattern: RegExp): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const m = text.match(pattern)
  if (!m) throw new Error(`${pattern} not found in ${file}`)
  return [...m[1].matchAll(/"([a-z_]+)"/g)].map((x) => x[1])
}

describe('message catalogues', () => {
  it('have the same keys in zh-CN and en', () => {
    expect([...EN.keys()].sort()).toEqual([...ZH.keys()].sort())
  })

  it('have no empty or untranslated texts', () => {
    for (const [k, v] of ZH) expect(v.trim(), k).not.toBe('')
    for (const [k, v] of EN) {
      expect(v.trim(), k).not.toBe('')
      expect(/[\u4e00-\u9fff]/.test(v), `${k} in en is Chinese: ${v}`).toBe(false)
    }
    // Chinese texts are Chinese (a copied English text would be an untranslated key), except proper names.
    const exempt = new Set(['app.title'])
    for (const [k, v] of ZH) if (!exempt.has(k) && /[a-z]{3,}/i.test(v.replace(/\{\w+\}/g, ''))) expect.fail(`${k} in zh-CN reads as English: ${v}`)
  })

  it('use the same placeholders in both languages', () => {
    for (const [k, v] of ZH) expect(placeholders(EN.get(k)!), k).toEqual(placeholders(v))
  })

  it('hold every key the code uses', () => {
    const files = sources(SRC)
    expect(files.length).toBeGreaterThan(5)
    const used = new Set<string>()
    for (const f of files) {
      const text = readFileSync(f, 'utf8')
      for (const m of text.matchAll(/\bt\(\s*'([a-zA-Z0-9_.]+)'/g)) used.add(m[1])
      for (const m of text.matchAll(/label: '([a-z]+\.[a-zA-Z0-9_.]+)'/g)) used.add(m[1])
    }
    expect(used.size).toBeGreaterThan(50)
    const missing = [...used].filter((k) => !ZH.has(k))
    expect(missing).toEqual([])
  })

  it('name every state, role and kind the server sends', () => {
    const families: [string, string[]][] = [
      ['states', pythonValues('server/services/cases.py', /^STATES = \(([^)]*)\)/m)],
      ['ticketStates', pythonValues('server/api/queue.py', /^TICKET_STATES = \(([^)]*)\)/m)],
      ['roles', pythonValues('server/services/principal.py', /class Role\(StrEnum\):([\s\S]*?)\n\n/)],
      ['windowStates', ['open', 'paused', 'closed']],
      ['alertKinds', ['wait_timeout', 'status']],
      ['recordingKinds', ['participant', 'screen', 'composite']],
      ['call', ['good', 'fair', 'poor', 'unknown']],
      ['sessionKinds', ['call', 'consultation', 'inspection']],
      ['availability', ['available', 'busy', 'unavailable']],
      ['queue', ['green', 'yellow', 'red']],
    ]
    for (const [family, values] of families) {
      expect(values.length, family).toBeGreaterThan(1)
      for (const v of values) expect(ZH.has(`${family}.${v}`), `${family}.${v}`).toBe(true)
    }
  })

  it('word every reason a call can end or a participant can leave with (read from the server source)', () => {
    const read = (file: string) => readFileSync(join(ROOT, file), 'utf8')
    const signalling = read('signalling/server.py')
    const left = new Set([...signalling.matchAll(/_remove\([^)]*reason="([a-z_]+)"/g)].map((m) => m[1]))
    const ended = new Set<string>()
    for (const file of ['signalling/server.py', 'server/api/sessions.py', 'server/services/realtime.py']) {
      for (const m of read(file).matchAll(/(?:end_session|_end_local|sessions\.end)\([^)]*?"([a-z_]+)"\)/g)) ended.add(m[1])
    }
    expect(left.size, 'participant.left reasons found').toBeGreaterThan(4)
    expect(ended.size, 'session.ended reasons found').toBeGreaterThan(1)
    left.delete('replaced') // a rejoin: no notice (lib/call.ts leftKey)
    for (const r of left) expect(ZH.has(`callLeft.${r}`), `callLeft.${r}`).toBe(true)
    for (const r of ended) expect(ZH.has(`callEnd.${r}`), `callEnd.${r}`).toBe(true)
    for (const r of ['ended', 'refused', 'removed']) expect(ZH.has(`callEnd.${r}`), `callEnd.${r}`).toBe(true)
  })
})
