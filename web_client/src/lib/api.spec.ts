// The REST client against a fake fetch: the server's error code reaches the caller, and an expired access token is
// refreshed once (rotating both tokens) and the request repeated.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { api, ApiError, setTokens, token } from './api'

class MemoryStorage {
  private m = new Map<string, string>()
  getItem(k: string): string | null {
    return this.m.get(k) ?? null
  }
  setItem(k: string, v: string): void {
    this.m.set(k, v)
  }
  removeItem(k: string): void {
    this.m.delete(k)
  }
}

/** The ApiError a call is refused with (a call that succeeds fails the test). */
const refused = (p: Promise<unknown>): Promise<ApiError> =>
  p.then(
    () => {
      throw new Error('expected a refusal')
    },
    (e: ApiError) => e,
  )

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })

describe('api', () => {
  beforeEach(() => {
    vi.stubGlobal('sessionStorage', new MemoryStorage())
  })
  afterEach(() => vi.unstubAllGlobals())

  it('sends the bearer token and returns the body', async () => {
    setTokens('A1', 'R1')
    const fetch = vi.fn(async () => json(200, { ok: 1 }))
    vi.stubGlobal('fetch', fetch)
    expect(await api('GET', '/me')).toEqual({ ok: 1 })
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit]
    expect(url).toBe('/api/v1/me')
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer A1')
  })

  it("raises the server's code, message and details", async () => {
    vi.stubGlobal('fetch', async () => json(409, { code: 'checklist_incomplete', message: 'missing', details: { items: ['id_card'] } }))
    const err = await refused(api('POST', '/cases/1/transitions', { to: 'submitted' }))
    expect(err).toBeInstanceOf(ApiError)
    expect(err.status).toBe(409)
    expect(err.code).toBe('checklist_incomplete')
    expect(err.details).toEqual({ items: ['id_card'] })
  })

  it('gives a stable code when the body is not JSON', async () => {
    vi.stubGlobal('fetch', async () => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }))
    const err = await refused(api('GET', '/me'))
    expect(err.code).toBe('http_error')
    expect(err.status).toBe(502)
  })

  it('refreshes an expired token once and repeats the request', async () => {
    setTokens('old', 'R1')
    const calls: string[] = []
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      calls.push(`${url} ${(init.headers as Record<string, string>)?.Authorization ?? ''}`)
      if (url === '/api/v1/auth/refresh') return json(200, { access_token: 'new', refresh_token: 'R2' })
      if ((init.headers as Record<string, string>).Authorization === 'Bearer old') return json(401, { code: 'token_expired', message: 'expired' })
      return json(200, { fine: true })
    })
    expect(await api('GET', '/cases')).toEqual({ fine: true })
    expect(calls).toEqual(['/api/v1/cases Bearer old', '/api/v1/auth/refresh ', '/api/v1/cases Bearer new'])
    expect(token()).toBe('new')
  })

  it('does not loop when the refreshed token is refused too', async () => {
    setTokens('old', 'R1')
    let n = 0
    vi.stubGlobal('fetch', async (url: string) => {
      n++
      if (url === '/api/v1/auth/refresh') return json(200, { access_token: 'new', refresh_token: 'R2' })
      return json(401, { code: 'token_expired', message: 'expired' })
    })
    const err = await refused(api('GET', '/cases'))
    expect(err.code).toBe('token_expired')
    expect(n).toBe(3)
  })

  it('does not refresh on other 401s', async () => {
    setTokens('bad', 'R1')
    const fetch = vi.fn(async () => json(401, { code: 'token_invalid', message: 'bad' }))
    vi.stubGlobal('fetch', fetch)
    const err = await refused(api('GET', '/me'))
    expect(err.code).toBe('token_invalid')
    expect(fetch).toHaveBeenCalledTimes(1)
  })

  it('refreshes once for several requests refused together (a second use of the old token would end the session)', async () => {
    setTokens('A1', 'R1')
    let refreshes = 0
    const fetch = vi.fn(async (url: string, init?: RequestInit) => {
      if (url.endsWith('/auth/refresh')) {
        refreshes += 1
        expect(JSON.parse(String(init?.body)).refresh_token).toBe('R1')
        await new Promise((r) => setTimeout(r, 10))
        return json(200, { access_token: 'A2', refresh_token: 'R2' })
      }
      const auth = (init?.headers as Record<string, string>).Authorization
      return auth === 'Bearer A2' ? json(200, { ok: url }) : json(401, { code: 'token_expired', message: 'expired' })
    })
    vi.stubGlobal('fetch', fetch)
    const got = await Promise.all([api('GET', '/a'), api('GET', '/b'), api('GET', '/c')])
    expect(got).toEqual([{ ok: '/api/v1/a' }, { ok: '/api/v1/b' }, { ok: '/api/v1/c' }])
    expect(refreshes).toBe(1)
    expect(token()).toBe('A2')
  })
})
