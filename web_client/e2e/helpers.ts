// Shared by the end-to-end specs.
import { expect, type Locator, type Page, type TestInfo, type WebSocketRoute } from '@playwright/test'
import { PASSWORD } from './env'

/** An Element Plus input: the data-test attribute lands on the native input. */
export const field = (name: string) => `input[data-test=${name}], [data-test=${name}] input`

export async function shot(page: Page, info: TestInfo, name: string): Promise<void> {
  await page.screenshot({ path: info.outputPath(`${name}.png`), fullPage: true })
}

export async function login(page: Page, username: string): Promise<void> {
  await page.locator(field('username')).fill(username)
  await page.locator(field('password')).fill(PASSWORD)
  await page.locator('[data-test=login]').click()
  await expect(page.locator('[data-test=who]')).toBeVisible()
}

/** A REST call with the page's own login (its tab's token). */
export async function rest<T = Record<string, unknown>>(page: Page, method: string, path: string, body: unknown = null): Promise<T> {
  return page.evaluate(
    async ([method, path, body]) => {
      const h: Record<string, string> = { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}` }
      if (body !== null) h['Content-Type'] = 'application/json'
      const r = await fetch(`/api/v1${path}`, { method, headers: h, body: body === null ? undefined : JSON.stringify(body) })
      const text = await r.text()
      if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`)
      return text ? JSON.parse(text) : null
    },
    [method, path, body] as const,
  ) as Promise<T>
}

/** A page's network: HTTP (offline emulation) and its WebSockets (closed and refused while cut). */
const links = new WeakMap<Page, { cut: boolean; sockets: WebSocketRoute[] }>()

export async function wire(page: Page): Promise<void> {
  const link = { cut: false, sockets: [] as WebSocketRoute[] }
  links.set(page, link)
  await page.routeWebSocket(/\/socket\.io\//, (ws) => {
    if (link.cut) {
      void ws.close({ code: 1006, reason: 'network down' })
      return
    }
    ws.connectToServer()
    link.sockets.push(ws)
  })
}

export async function cut(page: Page): Promise<void> {
  const link = links.get(page)!
  link.cut = true
  await page.context().setOffline(true)
  for (const ws of link.sockets.splice(0)) await ws.close({ code: 1006, reason: 'network down' })
}

export async function restore(page: Page): Promise<void> {
  links.get(page)!.cut = false
  await page.context().setOffline(false)
}

/** The video plays: its currentTime advances and a sample of its picture is not black. */
export async function playing(video: Locator): Promise<void> {
  await expect
    .poll(
      async () =>
        video.evaluate(async (el: HTMLVideoElement) => {
          const t0 = el.currentTime
          await new Promise((r) => setTimeout(r, 400))
          if (el.currentTime <= t0 || el.videoWidth === 0) return 'stalled'
          const c = document.createElement('canvas')
          c.width = 32
          c.height = 24
          const g = c.getContext('2d')!
          g.drawImage(el, 0, 0, 32, 24)
          const d = g.getImageData(0, 0, 32, 24).data
          let sum = 0
          for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2]
          return sum / (d.length / 4) / 3 > 8 ? 'playing' : 'black'
        }),
      { timeout: 30_000 },
    )
    .toBe('playing')
}
