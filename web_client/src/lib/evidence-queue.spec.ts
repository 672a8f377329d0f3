import { describe, expect, it } from 'vitest'
import { ApiError } from './api'
import { EvidenceQueue, evidencePath, isClientKey, isoWithOffset, memoryStore, newClientKey, nextSeq, ordered, retryable, type QueuedPhoto } from './evidence-queue'

function photo(seq: number, extra: Partial<QueuedPhoto> = {}): QueuedPhoto {
  return {
    client_key: `photo-${String(seq).padStart(4, '0')}`,
    client_seq: seq,
    task_id: 3,
    captured_at: '2026-12-01T09:30:00.000+08:00',
    device: 'Test phone',
    lat: 29.8683,
    lon: 121.544,
    accuracy: 8.5,
    item: null,
    width: 1920,
    height: 1080,
    blob: new Blob([`p${seq}`]),
    ...extra,
  }
}

function storage(): Pick<Storage, 'getItem' | 'setItem'> & { data: Map<string, string> } {
  const data = new Map<string, string>()
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) }
}

const offline = () => new ApiError(0, 'network_error', 'network error')

describe('client keys and counters', () => {
  it('makes keys the server accepts', () => {
    const k = newClientKey()
    expect(isClientKey(k)).toBe(true)
    expect(k).not.toBe(newClientKey())
    expect(isClientKey('short')).toBe(false)
    expect(isClientKey('has space in it')).toBe(false)
    expect(isClientKey('a'.repeat(65))).toBe(false)
  })

  it('counts up from the saved counter and past anything queued', () => {
    const s = storage()
    expect(nextSeq(s)).toBe(1)
    expect(nextSeq(s)).toBe(2)
    expect(nextSeq(s, [{ client_seq: 9 }])).toBe(10)
    expect(s.data.get('cw.evidence.seq')).toBe('10')
    s.data.set('cw.evidence.seq', 'garbage')
    expect(nextSeq(s, [{ client_seq: 4 }])).toBe(5)
  })

  it('orders by client_seq', () => {
    expect(ordered([photo(3), photo(1), photo(2)]).map((p) => p.client_seq)).toEqual([1, 2, 3])
  })
})

describe('evidencePath', () => {
  it('puts every stamp in the query, the offset sign encoded', () => {
    const path = evidencePath(photo(7, { item: 'kitchen_area' }))
    const [base, query] = path.split('?')
    expect(base).toBe('/inspections/3/evidence')
    const q = new URLSearchParams(query)
    expect(q.get('client_key')).toBe('photo-0007')
    expect(q.get('client_seq')).toBe('7')
    expect(q.get('captured_at')).toBe('2026-12-01T09:30:00.000+08:00')
    expect(query).toContain('%2B08%3A00')
    expect(q.get('lat')).toBe('29.8683')
    expect(q.get('lon')).toBe('121.544')
    expect(q.get('accuracy')).toBe('8.5')
    expect(q.get('item')).toBe('kitchen_area')
    expect(q.get('device')).toBe('Test phone')
  })

  it('leaves out a position it does not have', () => {
    const q = new URLSearchParams(evidencePath(photo(1, { lat: null, lon: null, accuracy: null })).split('?')[1])
    expect(q.has('lat') || q.has('lon') || q.has('accuracy') || q.has('item')).toBe(false)
  })
})

describe('isoWithOffset', () => {
  it('writes a local time with its offset that parses back to the same instant', () => {
    const d = new Date(Date.UTC(2026, 11, 1, 1, 30, 0, 250))
    const s = isoWithOffset(d)
    expect(s).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$/)
    expect(new Date(s).getTime()).toBe(d.getTime())
  })
})

describe('retryable', () => {
  it('retries network failures, server errors and expired logins, not refusals', () => {
    expect(retryable(offline())).toBe(true)
    expect(retryable(new ApiError(503, 'unavailable', ''))).toBe(true)
    expect(retryable(new ApiError(401, 'token_expired', ''))).toBe(true)
    expect(retryable(new TypeError('Failed to fetch'))).toBe(true)
    expect(retryable(new ApiError(409, 'evidence_key_conflict', ''))).toBe(false)
    expect(retryable(new ApiError(415, 'unsupported_type', ''))).toBe(false)
  })
})

describe('EvidenceQueue', () => {
  it('uploads oldest first, one at a time, removing each only after the server has it', async () => {
    const store = memoryStore()
    const sent: number[] = []
    let inFlight = 0
    const q = new EvidenceQueue(store, async (p, progress) => {
      inFlight++
      expect(inFlight).toBe(1)
      expect((await store.all()).map((x) => x.client_key)).toContain(p.client_key)
      progress(50)
      await new Promise((r) => setTimeout(r, 5))
      sent.push(p.client_seq)
      inFlight--
      return { id: p.client_seq }
    })
    for (const s of [3, 1, 2]) await q.add(photo(s))
    const [a, b] = await Promise.all([q.flush(), q.flush()])
    expect(a && b).toBe(true)
    expect(sent).toEqual([1, 2, 3])
    expect(await q.pending()).toEqual([])
  })

  it('keeps a photo through a network failure and sends it, in order, when asked again', async () => {
    const store = memoryStore()
    let online = false
    const sent: string[] = []
    const deferred: string[] = []
    const q = new EvidenceQueue(
      store,
      async (p) => {
        if (!online) throw offline()
        sent.push(p.client_key)
        return null
      },
      { deferred: (p) => deferred.push(p.client_key) },
    )
    await q.add(photo(1))
    await q.add(photo(2))
    expect(await q.flush()).toBe(false)
    expect(deferred).toEqual(['photo-0001'])
    expect((await q.pending()).map((p) => p.client_seq)).toEqual([1, 2])
    online = true
    expect(await q.flush()).toBe(true)
    expect(sent).toEqual(['photo-0001', 'photo-0002'])
  })

  it('sends a photo again under the same key when its answer was lost', async () => {
    const store = memoryStore()
    const keys: string[] = []
    let lose = true
    const q = new EvidenceQueue(store, async (p) => {
      keys.push(p.client_key)
      if (lose) {
        lose = false
        throw offline() // the server stored it, the answer never came
      }
      return null
    })
    await q.add(photo(5))
    await q.flush()
    await q.flush()
    expect(keys).toEqual(['photo-0005', 'photo-0005'])
    expect(await q.pending()).toEqual([])
  })

  it('sets aside a photo the server refuses for good and goes on with the next', async () => {
    const store = memoryStore()
    const refused: string[] = []
    const sent: number[] = []
    const q = new EvidenceQueue(
      store,
      async (p) => {
        if (p.client_seq === 1) throw new ApiError(409, 'evidence_key_conflict', 'conflict', { evidence_id: 4 })
        sent.push(p.client_seq)
        return null
      },
      { refused: (_p, e) => refused.push(e.code) },
    )
    await q.add(photo(1))
    await q.add(photo(2))
    expect(await q.flush()).toBe(true)
    expect(refused).toEqual(['evidence_key_conflict'])
    expect(sent).toEqual([2])
    const kept = await q.refusedPhotos()
    expect(kept.map((p) => [p.client_seq, p.failed])).toEqual([[1, 'evidence_key_conflict']])
    expect(await q.pending()).toEqual([])
  })

  it('refuses a malformed key before storing it', async () => {
    const q = new EvidenceQueue(memoryStore(), async () => null)
    await expect(q.add(photo(1, { client_key: 'bad key' }))).rejects.toThrow()
    expect(await q.pending()).toEqual([])
  })
})
