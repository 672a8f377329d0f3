// ICE on a real network (issue 17): Chromium in one network namespace, the CloudWindow server (and coturn) in another,
// joined by a veth pair (10.77.0.0/24, 2001:db8:77::/64); the browser also offers 2001:db8:77::2 and 127.0.0.1 as
// candidates (--allow-loopback-in-peer-connection, mDNS off).  See e2e/netns.ts.
//  (a) default-style policy (private IPv4 only): the 127.0.0.1 and 2001:db8 candidates are dropped, the call
//      connects on the veth addresses;
//  (b) iceTransportPolicy 'relay': the call connects through coturn with the server's REST credentials;
//  (c) a policy no candidate satisfies: the call screen says why, in Chinese, and the client does not rejoin;
//  (d) IPv6 end to end: a server gathering on 2001:db8:77::1 and allowing only 2001:db8:77::/64 connects on IPv6.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, expect, test, type Browser, type Page } from '@playwright/test'
import { login, rest } from './helpers'
import { BROWSER_IP, BROWSER_IP6, SERVER_IP, SERVER_IP6, Topology, type Started } from './netns'
import { PORT } from './env'

const PRIVATE_V4 = JSON.stringify(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'])
const TURN_SECRET = 'e2e-turn-secret-0123456789'
const TURN_PORT = 3478

const topo = new Topology()
let browser: Browser
let open: Started // default-style policy, coturn configured
let closed: Started // a policy none of the browser's candidates is in
let v6: Started // media on IPv6 only
const onExit = () => topo.destroySync()

test.beforeAll(async () => {
  test.setTimeout(180_000)
  process.once('exit', onExit)
  topo.create()
  await topo.coturn(TURN_PORT, TURN_SECRET)
  open = await topo.server(PORT + 1, {
    CLOUDWINDOW_MEDIA__ALLOWED_CIDRS: PRIVATE_V4,
    CLOUDWINDOW_SIGNALLING__ICE_SERVERS: JSON.stringify([{ urls: [`turn:${SERVER_IP}:${TURN_PORT}?transport=udp`], auth_secret: TURN_SECRET }]),
  })
  closed = await topo.server(PORT + 2, { CLOUDWINDOW_MEDIA__ALLOWED_CIDRS: JSON.stringify(['192.168.0.0/16']) })
  v6 = await topo.server(PORT + 3, {
    CLOUDWINDOW_MEDIA__HOST_ADDRESSES: JSON.stringify([SERVER_IP6]),
    CLOUDWINDOW_MEDIA__ALLOWED_CIDRS: JSON.stringify(['2001:db8:77::/64']),
  })
  browser = await chromium.launch({
    executablePath: topo.wrapper,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      `--unsafely-treat-insecure-origin-as-secure=${open.url},${closed.url},${v6.url}`,
    ],
  })
})

test.afterAll(async () => {
  await browser?.close()
  await topo.destroy()
  process.off('exit', onExit)
})

/** Log in as the service point's staff, open a case and a call session by REST, and open the call screen. */
async function call(server: Started, relay = false): Promise<Page> {
  const context = await browser.newContext({ baseURL: server.url, viewport: { width: 1280, height: 720 } })
  if (relay) await context.addInitScript(() => localStorage.setItem('cloudwindow.iceTransportPolicy', 'relay'))
  const page = await context.newPage()
  await page.goto('/')
  await login(page, 'staff')
  const kase = await rest<{ id: number }>(page, 'POST', '/cases', {
    matter_code: 'MZ-001',
    applicant_name: '张秀英',
    applicant_id_number: '11010519491231002X',
    applicant_phone: '13800138000',
  })
  const session = await rest<{ id: number }>(page, 'POST', `/cases/${kase.id}/sessions`, { kind: 'call' })
  await page.goto(`/#/call/${session.id}?case=${kase.id}`)
  return page
}

interface Pair {
  state: string
  local: { address: string; type: string }
  remote: { address: string; type: string }
  offered: string[]
}

/** The page's peer connection: its state, the selected candidate pair, and every local candidate address offered. */
async function selected(page: Page): Promise<Pair | null> {
  return page.evaluate(async () => {
    const pc = (window as unknown as { __cw?: { pc: RTCPeerConnection | null } }).__cw?.pc
    if (!pc) return null
    const all = new Map<string, Record<string, unknown>>()
    ;(await pc.getStats()).forEach((s) => all.set(s.id, s as unknown as Record<string, unknown>))
    const offered = (pc.localDescription?.sdp ?? '').split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')).map((l) => l.split(' ')[4])
    for (const s of all.values()) {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) continue
      const pair = all.get(String(s.selectedCandidatePairId))!
      const end = (id: unknown) => {
        const c = all.get(String(id))!
        return { address: String(c.address), type: String(c.candidateType) }
      }
      return { state: pc.connectionState, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId), offered }
    }
    return { state: pc.connectionState, local: { address: '', type: '' }, remote: { address: '', type: '' }, offered }
  })
}

async function connected(page: Page): Promise<Pair> {
  await expect.poll(async () => (await selected(page))?.state, { timeout: 30_000 }).toBe('connected')
  return (await selected(page))!
}

async function dropped(page: Page): Promise<number> {
  const text = await page.evaluate(async () => (await fetch('/metrics')).text())
  const line = text.split('\n').find((l) => l.startsWith('cloudwindow_ice_candidates_dropped_total{reason="address"}'))
  return line ? Number(line.split(' ')[1]) : 0
}

test('(a) a call connects on the allowed network while the browser also offers loopback and global IPv6', async () => {
  const page = await call(open)
  const pair = await connected(page)
  // The browser offered addresses outside the policy; the server dropped them instead of refusing the answer.
  expect(pair.offered).toEqual(expect.arrayContaining([BROWSER_IP, BROWSER_IP6, '127.0.0.1']))
  expect(pair.local).toEqual({ address: BROWSER_IP, type: 'host' })
  expect(pair.remote).toEqual({ address: SERVER_IP, type: 'host' })
  expect(await dropped(page)).toBeGreaterThanOrEqual(2)
  // Logged once for the peer connection, however many candidates were dropped.
  const log = readFileSync(join(open.data, 'server.log'), 'utf8')
  expect(log.split('outside the media policy are dropped').length - 1).toBe(1)
  await expect(page.locator('[data-test=media-error]')).toHaveCount(0)
  await page.context().close()
})

test('(b) iceTransportPolicy relay connects through coturn with REST credentials', async () => {
  const page = await call(open, true)
  const pair = await connected(page)
  expect(pair.offered.length).toBeGreaterThan(0)
  expect(pair.offered.every((a) => a === SERVER_IP)).toBe(true) // relay candidates only: coturn's relay address
  expect(pair.local).toEqual({ address: SERVER_IP, type: 'relay' })
  expect(pair.remote).toEqual({ address: SERVER_IP, type: 'host' })
  await page.context().close()
})

test('(c) with no allowed candidate the call screen says why in Chinese and does not rejoin', async () => {
  const page = await call(closed)
  const error = page.locator('[data-test=media-error]')
  await expect(error).toContainText('本机的网络地址都不在服务器允许的网络范围内', { timeout: 30_000 })
  await expect(page.locator('[data-test=reconnecting]')).toHaveCount(0)
  const state = () => page.evaluate(() => {
    const cw = (window as unknown as { __cw: { pc: RTCPeerConnection | null; state: { mediaError: string; reconnecting: boolean } } }).__cw
    return { pc: cw.pc === null, mediaError: cw.state.mediaError, reconnecting: cw.state.reconnecting }
  })
  expect(await state()).toEqual({ pc: true, mediaError: 'no_allowed_candidate', reconnecting: false })
  await page.waitForTimeout(1500) // a rejoin would make a new peer connection within this
  expect(await state()).toEqual({ pc: true, mediaError: 'no_allowed_candidate', reconnecting: false })
  await page.context().close()
})

test('(d) IPv6 end to end: the SFU gathers on an IPv6 address and the call connects over IPv6', async () => {
  const page = await call(v6)
  const pair = await connected(page)
  expect(pair.offered).toEqual(expect.arrayContaining([BROWSER_IP, BROWSER_IP6]))
  expect(pair.local).toEqual({ address: BROWSER_IP6, type: 'host' })
  expect(pair.remote).toEqual({ address: SERVER_IP6, type: 'host' })
  await page.context().close()
})
