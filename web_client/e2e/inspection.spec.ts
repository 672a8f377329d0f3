// Remote site inspection from a phone, in real Chromium against the real server: the market-regulation clerk opens
// an inspection of a food business licence case (SJ-004) and invites an inspector; the inspector's phone (390 px,
// GPS overridden) opens the link, waits, is admitted, streams its rear camera, reports its position and takes
// evidence photos — one on the clerk's request, one while its network is down (kept and uploaded in order when the
// network returns).  The evidence verifies, stops verifying when its stored photo is edited, and the report PDF
// lists the results and embeds the photos.  The clerk's side is driven through the REST API from its own page
// (set-up, not what is tested here), its call screen joins the session and admits the phone.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, test, type Page } from '@playwright/test'
import { cut, login, playing, rest, restore, shot, wire } from './helpers'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
const PYTHON = join(ROOT, '.venv', 'bin', 'python')
const GPS = { latitude: 29.8683, longitude: 121.544, accuracy: 8 }

interface Evidence {
  id: number
  item_code: string | null
  client_key: string
  client_seq: number
  sha256: string
  size: number
  lat: number | null
  lon: number | null
  accuracy: number | null
  device: string
  captured_at: string
}

/** The bytes of an authorised download, through the page. */
async function download(page: Page, path: string): Promise<Buffer> {
  const b64 = await page.evaluate(async (path) => {
    const r = await fetch(`/api/v1${path}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}` } })
    if (!r.ok) throw new Error(`GET ${path}: ${r.status}`)
    const bytes = new Uint8Array(await r.arrayBuffer())
    let s = ''
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
    return btoa(s)
  }, path)
  return Buffer.from(b64, 'base64')
}

/** The filesystem store's file holding the object whose bytes hash to ``sha256`` (a 4 KiB header, then the bytes). */
function objectFile(dir: string, sha256: string): string | null {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) {
      const found = objectFile(p, sha256)
      if (found) return found
    } else if (createHash('sha256').update(readFileSync(p).subarray(4096)).digest('hex') === sha256) return p
  }
  return null
}

test('site inspection from a phone: invite, waiting room, rear camera, GPS, evidence online and offline, verify, report', async ({ browser }, info) => {
  // The village point's staff member opens a food business licence case.
  const staff = await (await browser.newContext()).newPage()
  await staff.goto('/')
  await login(staff, 'staff')
  const kase = await rest<{ id: number }>(staff, 'POST', '/cases', {
    matter_code: 'SJ-004',
    applicant_name: '周小梅',
    applicant_id_number: '330203196005062029',
    applicant_phone: '13800138000',
  })

  // The district's market-regulation clerk opens the inspection, invites the inspector and joins the session.
  const clerk = await (await browser.newContext()).newPage()
  await clerk.goto('/')
  await login(clerk, 'clerk2')
  const task = await rest<{ id: number; session_id: number; checklist: { code: string }[] }>(clerk, 'POST', `/cases/${kase.id}/inspections`, {})
  expect(task.checklist.map((c) => c.code)).toContain('kitchen_area')
  const invite = await rest<{ token: string }>(clerk, 'POST', `/cases/${kase.id}/invites`, { role: 'inspector', display_name: '吴磊', session_id: task.session_id })
  await clerk.goto(`/#/call/${task.session_id}?case=${kase.id}`)
  await expect.poll(() => clerk.evaluate(() => Boolean((window as unknown as { __cw?: { state: { joined: boolean } } }).__cw?.state.joined))).toBe(true)
  expect(await clerk.evaluate(() => (window as unknown as { __cw: { state: { moderator: boolean } } }).__cw.state.moderator)).toBe(true)

  // The inspector's phone opens the link: the token leaves the address bar, the phone waits to be let in.
  const phoneCtx = await browser.newContext({
    viewport: { width: 390, height: 844 },
    hasTouch: true,
    geolocation: GPS,
    permissions: ['geolocation', 'camera', 'microphone'],
  })
  const phone = await phoneCtx.newPage()
  const phoneErrors: string[] = []
  phone.on('console', (m) => {
    if (m.type() === 'error') phoneErrors.push(m.text())
  })
  await wire(phone)
  await phone.goto(`/#/join/${task.session_id}?token=${encodeURIComponent(invite.token)}`)
  await expect(phone).toHaveURL(new RegExp(`#/inspect/${task.session_id}\\?case=${kase.id}$`))
  expect(phone.url()).not.toContain(invite.token)
  await expect(phone.locator('[data-test=inspect-waiting]')).toBeVisible()
  await shot(phone, info, '01-phone-waiting')

  // The same link a second time is refused in words.
  const again = await (await browser.newContext()).newPage()
  await again.goto(`/#/join/${task.session_id}?token=${encodeURIComponent(invite.token)}`)
  await expect(again.locator('[data-test=join-error]')).toContainText('已经使用过')
  await shot(again, info, '02-link-used')
  await again.context().close()

  // A second link, for someone the clerk does not let in: refused at the door, told so in words.
  const stranger = await rest<{ token: string }>(clerk, 'POST', `/cases/${kase.id}/invites`, { role: 'inspector', display_name: '李四', session_id: task.session_id })
  const other = await (await browser.newContext({ viewport: { width: 390, height: 844 }, permissions: ['camera', 'microphone'] })).newPage()
  await other.goto(`/#/join/${task.session_id}?token=${encodeURIComponent(stranger.token)}`)
  await expect(other.locator('[data-test=inspect-waiting]')).toBeVisible()
  type Waiters = { waiter_id: string; role: string; display_name: string }[]
  const waiters = () => clerk.evaluate(() => (window as unknown as { __cw: { state: { waiters: Waiters } } }).__cw.state.waiters)
  await expect.poll(async () => (await waiters()).map((w) => w.display_name).sort()).toEqual(['吴磊', '李四'])
  const refusedId = (await waiters()).find((w) => w.display_name === '李四')!.waiter_id
  await clerk.evaluate((id) => (window as unknown as { __cw: { refuse(id: string): Promise<void> } }).__cw.refuse(id), refusedId)
  await expect(other.locator('[data-test=inspect-ended]')).toContainText('未允许您进入')
  await shot(other, info, '02b-refused')
  await other.context().close()

  // The clerk sees the waiter and admits it (through the call screen's button where it has one).
  await expect.poll(async () => (await waiters()).length).toBe(1)
  const waiter = (await waiters())[0]
  expect(waiter.role).toBe('inspector')
  expect(waiter.display_name).toBe('吴磊')
  const admit = clerk.locator('[data-test=admit]')
  if (await admit.count()) await admit.first().click()
  else await clerk.evaluate((id) => (window as unknown as { __cw: { admit(id: string): Promise<string> } }).__cw.admit(id), waiter.waiter_id)
  await expect(phone.locator('[data-test=inspect-waiting]')).toBeHidden()
  await expect(phone.locator('[data-test=inspect-status]')).toHaveAttribute('data-state', 'connected', { timeout: 30_000 })
  await expect.poll(async () => (await waiters()).length).toBe(0)

  // Moderation: the clerk mutes the phone and lets it speak again; the phone is told each time.
  const phonePid = await phone.evaluate(() => (window as unknown as { __cw: { state: { participantId: string } } }).__cw.state.participantId)
  const mute = (on: boolean) => clerk.evaluate(([pid, on]) => (window as unknown as { __cw: { mute(p: string, m: boolean): Promise<void> } }).__cw.mute(pid, on), [phonePid, on] as const)
  await mute(true)
  await expect(phone.locator('[data-test=muted-by-host]')).toBeVisible()
  expect(await clerk.evaluate((pid) => (window as unknown as { __cw: { state: { muted: Record<string, boolean> } } }).__cw.state.muted[pid], phonePid)).toBe(true)
  await mute(false)
  await expect(phone.locator('[data-test=muted-by-host]')).toBeHidden()

  // Active speaker: both report their microphone level (the fake microphone beeps), so someone is picked.
  await expect
    .poll(() => clerk.evaluate(() => (window as unknown as { __cw: { state: { speaker: string | null } } }).__cw.state.speaker), { timeout: 20_000 })
    .not.toBeNull()

  // The phone's rear camera plays on the clerk's screen; its own preview plays too.
  await playing(phone.locator('[data-test=inspect-preview]'))
  await playing(clerk.locator('[data-test=tile-camera] video').first())
  await shot(clerk, info, '03-clerk-sees-phone')

  // Position: shown on the phone with its accuracy, reported to the server.
  await expect(phone.locator('[data-test=inspect-location]')).toHaveAttribute('data-lat', String(GPS.latitude))
  await expect(phone.locator('[data-test=inspect-accuracy]')).toContainText('8')
  await expect
    .poll(async () => (await rest<{ items: { lat: number; lon: number; accuracy: number }[] }>(clerk, 'GET', `/inspections/${task.id}/locations`)).items.length)
    .toBeGreaterThan(0)
  const track = (await rest<{ items: { lat: number; lon: number; accuracy: number }[] }>(clerk, 'GET', `/inspections/${task.id}/locations`)).items
  expect(track[track.length - 1]).toMatchObject({ lat: GPS.latitude, lon: GPS.longitude, accuracy: GPS.accuracy })
  await shot(phone, info, '04-phone-live')

  // The clerk asks for a photo of the kitchen: the phone takes it and uploads it at once.
  await rest(clerk, 'POST', `/inspections/${task.id}/snapshot-requests`, { item: 'kitchen_area' })
  await expect(phone.locator('[data-test=uploaded-item]')).toHaveCount(1, { timeout: 30_000 })
  await expect(phone.locator('[data-test=queue-count]')).toHaveAttribute('data-count', '0')
  await shot(phone, info, '05-phone-first-photo')

  // The network goes; a photo taken now waits on the phone.
  await cut(phone)
  await expect(phone.locator('[data-test=inspect-reconnecting]')).toBeVisible()
  await phone.locator('[data-test=take-photo]').click()
  await expect(phone.locator('[data-test=queue-count]')).toHaveAttribute('data-count', '1')
  await expect(phone.locator('[data-test=queue-item]')).toHaveCount(1)
  await shot(phone, info, '06-phone-offline-queued')
  expect((await rest<{ items: Evidence[] }>(clerk, 'GET', `/inspections/${task.id}/evidence`)).items).toHaveLength(1)

  // The network returns: the phone rejoins by itself (no waiting room again) and uploads the kept photo.
  await restore(phone)
  await expect(phone.locator('[data-test=queue-count]')).toHaveAttribute('data-count', '0', { timeout: 30_000 })
  await expect(phone.locator('[data-test=uploaded-item]')).toHaveCount(2)
  await expect(phone.locator('[data-test=inspect-reconnecting]')).toBeHidden({ timeout: 30_000 })
  await expect(phone.locator('[data-test=inspect-waiting]')).toBeHidden()
  await playing(clerk.locator('[data-test=tile-camera] video').first())
  await shot(phone, info, '07-phone-back-online')

  // Both photos, stamped, in the phone's order, each once.
  const evidence = (await rest<{ items: Evidence[] }>(clerk, 'GET', `/inspections/${task.id}/evidence`)).items
  expect(evidence).toHaveLength(2)
  expect(evidence[0].client_seq).toBeLessThan(evidence[1].client_seq)
  expect(new Set(evidence.map((e) => e.client_key)).size).toBe(2)
  expect(new Set(evidence.map((e) => e.sha256)).size).toBe(2)
  expect(evidence[0].item_code).toBe('kitchen_area')
  for (const e of evidence) {
    expect(e).toMatchObject({ lat: GPS.latitude, lon: GPS.longitude, accuracy: GPS.accuracy })
    expect(e.sha256).toMatch(/^[0-9a-f]{64}$/)
    expect(e.client_key).toMatch(/^[A-Za-z0-9_-]{8,64}$/)
    expect(e.device).toContain('Chrome')
    expect(e.captured_at).toMatch(/[+-]\d\d:\d\d$|Z$/)
    const photo = await download(clerk, `/inspections/${task.id}/evidence/${e.id}/content`)
    expect(photo.subarray(0, 3).toString('hex')).toBe('ffd8ff')
    expect(createHash('sha256').update(photo).digest('hex')).toBe(e.sha256)
  }

  // Each verifies; an edited photo on disk does not, and does again once restored.
  const verify = async (e: Evidence) => rest<{ valid: boolean; content_matches: boolean; signature_valid: boolean }>(clerk, 'GET', `/inspections/${task.id}/evidence/${e.id}/verify`)
  for (const e of evidence) expect((await verify(e)).valid).toBe(true)
  const data = process.env.CW_E2E_DATA
  expect(data, 'the global set-up names the server data directory').toBeTruthy()
  const file = objectFile(join(data!, 'objects'), evidence[1].sha256)
  expect(file, 'the stored photo file').toBeTruthy()
  const original = readFileSync(file!)
  const edited = Buffer.from(original)
  const at = 4096 + Math.floor((original.length - 4096) / 2)
  edited[at] = edited[at] === 0x00 ? 0x01 : 0x00
  writeFileSync(file!, edited)
  const broken = await verify(evidence[1])
  expect(broken).toMatchObject({ valid: false, content_matches: false, signature_valid: true })
  expect((await verify(evidence[0])).valid).toBe(true)
  writeFileSync(file!, original)
  expect((await verify(evidence[1])).valid).toBe(true)

  // The clerk marks the checklist with the evidence, completes the inspection; the phone is told.
  await rest(clerk, 'PUT', `/inspections/${task.id}/items/kitchen_area`, { result: 'pass', evidence_ids: [evidence[0].id] })
  await rest(clerk, 'PUT', `/inspections/${task.id}/items/disinfection`, { result: 'note', note: '消毒柜已到货待安装', evidence_ids: [evidence[1].id] })
  await rest(clerk, 'PUT', `/inspections/${task.id}/items/refrigeration`, { result: 'fail', note: '冷藏温度偏高', evidence_ids: [] })
  await rest(clerk, 'POST', `/inspections/${task.id}/complete`)
  await expect(phone.locator('[data-test=inspect-completed]')).toBeVisible()
  await expect(phone.locator('[data-test=take-photo]')).toBeDisabled()
  await shot(phone, info, '08-phone-completed')

  // The report: a PDF in the case file with the results and both photos.
  const doc = await rest<{ id: number; content_type: string }>(clerk, 'POST', `/inspections/${task.id}/report`, { lang: 'zh' })
  expect(doc.content_type).toBe('application/pdf')
  const pdf = await download(clerk, `/cases/${kase.id}/documents/${doc.id}/content`)
  const pdfPath = info.outputPath('inspection-report.pdf')
  writeFileSync(pdfPath, pdf)
  const script =
    'import json,sys,pypdf\n' +
    'r=pypdf.PdfReader(sys.argv[1])\n' +
    'print(json.dumps({"text":"\\n".join(p.extract_text() for p in r.pages),"images":sum(len(p.images) for p in r.pages)}))'
  const out = JSON.parse(execFileSync(PYTHON, ['-c', script, pdfPath], { encoding: 'utf8' })) as { text: string; images: number }
  for (const needle of ['远程踏勘报告', '食品经营许可（新办）', '厨房（加工操作间）面积与布局', '合格', '不合格', '冷藏温度偏高', '消毒柜已到货待安装', '29.868300', '121.544000']) {
    expect(out.text, needle).toContain(needle)
  }
  expect(out.images).toBeGreaterThanOrEqual(2)

  const errors = phoneErrors.filter((e) => !/ERR_INTERNET_DISCONNECTED|net::ERR|WebSocket|Failed to load resource/.test(e))
  expect(errors).toEqual([])
  await phoneCtx.close()
})
