// Evidence photos taken on the inspector's phone wait here (IndexedDB, so they survive a reload or a dead network)
// until the server has them.  They go up one at a time, oldest client_seq first; each is removed only after the
// server answered 200 or 201.  A retry of the same photo under the same client_key is stored once by the server
// (docs/api.md, "Evidence upload"), so a photo whose answer was lost is simply sent again.
import { ApiError } from './api'

export interface QueuedPhoto {
  /** Idempotency key, 8–64 of [A-Za-z0-9_-], made when the photo was taken. */
  client_key: string
  /** The phone's counter: evidence lists are ordered by it. */
  client_seq: number
  task_id: number
  captured_at: string
  device: string
  lat: number | null
  lon: number | null
  accuracy: number | null
  item: string | null
  width: number
  height: number
  blob: Blob
  /** Set when the server refused the photo for good (not a network failure); it is kept, and no longer sent. */
  failed?: string
}

/** Where queued photos are kept. */
export interface PhotoStore {
  put(p: QueuedPhoto): Promise<void>
  all(): Promise<QueuedPhoto[]>
  delete(clientKey: string): Promise<void>
}

const KEY_RE = /^[A-Za-z0-9_-]{8,64}$/

export function isClientKey(s: string): boolean {
  return KEY_RE.test(s)
}

/** A fresh client_key: a random UUID without its dashes (32 hex digits). */
export function newClientKey(): string {
  const c = globalThis.crypto
  if (c && typeof c.randomUUID === 'function') return c.randomUUID().replace(/-/g, '')
  const bytes = new Uint8Array(16)
  c.getRandomValues(bytes)
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}

const SEQ = 'cw.evidence.seq'

/** The next client_seq: one more than both the persisted counter and every queued photo; the counter is saved. */
export function nextSeq(storage: Pick<Storage, 'getItem' | 'setItem'>, queued: Pick<QueuedPhoto, 'client_seq'>[] = []): number {
  const saved = Number(storage.getItem(SEQ) ?? 0)
  const high = Math.max(Number.isFinite(saved) ? saved : 0, ...queued.map((p) => p.client_seq), 0)
  const seq = high + 1
  storage.setItem(SEQ, String(seq))
  return seq
}

/** Oldest client_seq first. */
export function ordered<T extends Pick<QueuedPhoto, 'client_seq'>>(list: T[]): T[] {
  return [...list].sort((a, b) => a.client_seq - b.client_seq)
}

/** The upload path with the photo's stamps in the query (docs/api.md, "Evidence upload"). */
export function evidencePath(p: QueuedPhoto): string {
  const q = new URLSearchParams()
  q.set('client_key', p.client_key)
  q.set('client_seq', String(p.client_seq))
  q.set('captured_at', p.captured_at)
  q.set('device', p.device.slice(0, 200))
  if (p.lat !== null && p.lon !== null) {
    q.set('lat', String(p.lat))
    q.set('lon', String(p.lon))
  }
  if (p.accuracy !== null) q.set('accuracy', String(p.accuracy))
  if (p.item) q.set('item', p.item)
  return `/inspections/${p.task_id}/evidence?${q.toString()}`
}

/** An ISO time with the device's offset, e.g. 2026-12-01T09:30:00.000+08:00. */
export function isoWithOffset(d: Date): string {
  const pad = (n: number, w = 2) => String(Math.trunc(Math.abs(n))).padStart(w, '0')
  const off = -d.getTimezoneOffset()
  const sign = off >= 0 ? '+' : '-'
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    `.${pad(d.getMilliseconds(), 3)}${sign}${pad(off / 60)}:${pad(off % 60)}`
  )
}

/** A network failure, a server error or an expired login: keep the photo and try again later. */
export function retryable(e: unknown): boolean {
  if (!(e instanceof ApiError)) return true
  return e.status === 0 || e.status >= 500 || e.status === 401 || e.status === 408 || e.status === 429
}

export function memoryStore(): PhotoStore {
  const rows = new Map<string, QueuedPhoto>()
  return {
    async put(p) {
      rows.set(p.client_key, p)
    },
    async all() {
      return ordered([...rows.values()])
    },
    async delete(k) {
      rows.delete(k)
    },
  }
}

function txDone(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve()
    tx.onabort = tx.onerror = () => reject(tx.error)
  })
}

function result<R>(req: IDBRequest<R>): Promise<R> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
}

/** The queue kept in the browser's IndexedDB (database ``cw-evidence``, store ``photos`` keyed by client_key). */
export function idbStore(name = 'cw-evidence'): PhotoStore {
  let db: Promise<IDBDatabase> | null = null
  const open = (): Promise<IDBDatabase> => {
    db ??= new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1)
      req.onupgradeneeded = () => {
        const s = req.result.createObjectStore('photos', { keyPath: 'client_key' })
        s.createIndex('client_seq', 'client_seq')
      }
      req.onsuccess = () => resolve(req.result)
      req.onerror = () => {
        db = null
        reject(req.error)
      }
    })
    return db
  }
  return {
    async put(p) {
      const tx = (await open()).transaction('photos', 'readwrite')
      tx.objectStore('photos').put(p)
      await txDone(tx)
    },
    async all() {
      const tx = (await open()).transaction('photos', 'readonly')
      return ordered((await result(tx.objectStore('photos').getAll())) as QueuedPhoto[])
    },
    async delete(k) {
      const tx = (await open()).transaction('photos', 'readwrite')
      tx.objectStore('photos').delete(k)
      await txDone(tx)
    },
  }
}

export type Send<T> = (p: QueuedPhoto, onProgress: (pct: number) => void) => Promise<T>

export interface QueueEvents<T> {
  /** The photo is on the server (200 or 201) and gone from the queue. */
  uploaded?: (p: QueuedPhoto, result: T) => void
  /** The server refused it for good (e.g. 409 evidence_key_conflict): kept, marked, skipped. */
  refused?: (p: QueuedPhoto, e: ApiError) => void
  /** Sending failed for now (network, server error): it stays first in line. */
  deferred?: (p: QueuedPhoto, e: unknown) => void
  /** The queue changed (added, uploaded, refused) or upload progress moved. */
  changed?: () => void
}

/** The phone's queue: add photos, flush them one at a time in client_seq order. */
export class EvidenceQueue<T = unknown> {
  /** The photo going up now and its progress (0–100). */
  current: { client_key: string; progress: number } | null = null
  private running: Promise<boolean> | null = null
  private again = false

  constructor(
    private store: PhotoStore,
    private send: Send<T>,
    private events: QueueEvents<T> = {},
  ) {}

  async add(p: QueuedPhoto): Promise<void> {
    if (!isClientKey(p.client_key)) throw new Error(`bad client_key ${p.client_key}`)
    await this.store.put(p)
    this.events.changed?.()
  }

  /** Photos still to upload (not refused), oldest first. */
  async pending(): Promise<QueuedPhoto[]> {
    return (await this.store.all()).filter((p) => !p.failed)
  }

  /** Photos the server refused for good. */
  async refusedPhotos(): Promise<QueuedPhoto[]> {
    return (await this.store.all()).filter((p) => p.failed)
  }

  /**
   * Upload what is queued, one photo at a time, oldest first.  Resolves true when the queue is empty, false when a
   * photo had to wait (network).  A flush asked for while one runs makes that one go round again, never a second
   * sender beside it (so a photo is never in flight twice).
   */
  flush(): Promise<boolean> {
    if (this.running) {
      this.again = true
      return this.running
    }
    this.running = this.run().finally(() => {
      this.running = null
    })
    return this.running
  }

  private async run(): Promise<boolean> {
    for (;;) {
      this.again = false
      const next = (await this.pending())[0]
      if (!next) return true
      this.current = { client_key: next.client_key, progress: 0 }
      this.events.changed?.()
      try {
        const result = await this.send(next, (pct) => {
          if (this.current?.client_key === next.client_key) this.current.progress = pct
          this.events.changed?.()
        })
        await this.store.delete(next.client_key)
        this.current = null
        this.events.uploaded?.(next, result)
        this.events.changed?.()
      } catch (e) {
        this.current = null
        if (retryable(e)) {
          this.events.deferred?.(next, e)
          this.events.changed?.()
          if (this.again) continue
          return false
        }
        const err = e as ApiError
        await this.store.put({ ...next, failed: err.code })
        this.events.refused?.(next, err)
        this.events.changed?.()
      }
    }
  }
}
