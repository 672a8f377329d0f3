// Materials in the call (issue 17): during a call between a service point and the town clerk, the point uploads a
// missing material and takes a 高拍仪 snapshot (camera picker, full resolution); the clerk sees each within 1 s,
// pushed, without a reload; the clerk returns one for correction with a reason; the point sees the reason and
// uploads again; the clerk previews a PDF inline (pdf.js on a canvas: no download, no new window).
import { expect, test, type Browser, type Page } from '@playwright/test'
import config from '../playwright.config'
import { login, playing, rest, shot } from './helpers'

// Two fake cameras (a webcam and a "document camera"), so the snapshot's camera picker has a choice.
const base = config.use!.launchOptions!
test.use({
  launchOptions: {
    ...base,
    args: base.args!.map((a) => (a === '--use-fake-device-for-media-stream' ? '--use-fake-device-for-media-stream=device-count=2' : a)),
  },
})

// A page with a blue square and the words 身份证 in a font the file does not embed (STSong-Light, UniGB-UCS2-H):
// pdf.js draws them only with the self-hosted CMap (docs: the web client serves pdf.js's data files itself).
const CONTENT = '0 0 1 rg 20 20 160 100 re f\nBT /F1 36 Tf 0 0 0 rg 40 145 Td <8EAB4EFD8BC1> Tj ET\n'
const PDF = Buffer.from(
  '%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n' +
    '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>endobj\n' +
    `4 0 obj<</Length ${CONTENT.length}>>stream\n${CONTENT}endstream endobj\n` +
    '5 0 obj<</Type/Font/Subtype/Type0/BaseFont/STSong-Light/Encoding/UniGB-UCS2-H/DescendantFonts[6 0 R]>>endobj\n' +
    '6 0 obj<</Type/Font/Subtype/CIDFontType0/BaseFont/STSong-Light/CIDSystemInfo<</Registry(Adobe)/Ordering(GB1)/Supplement 4>>' +
    '/FontDescriptor 7 0 R>>endobj\n' +
    '7 0 obj<</Type/FontDescriptor/FontName/STSong-Light/Flags 6/FontBBox[0 -200 1000 900]/ItalicAngle 0/Ascent 880/Descent -120' +
    '/CapHeight 700/StemV 80>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n',
)
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64')
const REASON = '银行卡照片反光，卡号看不清，请重新拍摄'

async function open(browser: Browser): Promise<Page> {
  const page = await (await browser.newContext()).newPage()
  await page.goto('/')
  return page
}

/** On the clerk's page: the wall-clock time each material first appears in the call's materials panel. */
async function watchMaterials(clerk: Page): Promise<void> {
  await clerk.evaluate(() => {
    const seen: Record<string, number> = {}
    ;(window as unknown as { __docSeen: Record<string, number> }).__docSeen = seen
    const scan = () => {
      for (const el of document.querySelectorAll('[data-test=materials-panel] [data-doc]')) {
        const id = el.getAttribute('data-doc')!
        if (!(id in seen)) seen[id] = Date.now()
      }
    }
    scan()
    new MutationObserver(scan).observe(document.body, { subtree: true, childList: true })
  })
}

/**
 * The point uploads; returns the new document's id and how long after the point's browser received the upload's
 * response the clerk's page showed it (both wall clocks of this machine, measured in the browsers, so the test
 * runner's own latency on a loaded machine does not count).
 */
async function pushedWithin(staff: Page, clerk: Page, caseId: number, act: () => Promise<void>): Promise<{ id: number; ms: number }> {
  const response = staff.waitForResponse((r) => r.request().method() === 'POST' && r.url().includes(`/api/v1/cases/${caseId}/documents`), { timeout: 15_000 })
  await act()
  const resp = await response
  expect(resp.status()).toBe(201)
  await resp.finished()
  const timing = resp.request().timing()
  expect(timing.responseEnd).toBeGreaterThan(0)
  const answered = timing.startTime + timing.responseEnd
  const id = Number((await resp.json()).id)
  await clerk.locator(`[data-test=materials-panel] [data-doc="${id}"]`).waitFor({ timeout: 5000 })
  const shown = await clerk.evaluate((id) => (window as unknown as { __docSeen: Record<string, number> }).__docSeen[String(id)], id)
  const ms = Math.round(shown - answered)
  test.info().annotations.push({ type: 'push', description: `document ${id} shown to the clerk ${ms} ms after the upload's response` })
  return { id, ms }
}

test('materials during the call: upload, snapshot, push, return for correction, re-upload, inline PDF', async ({ browser }, info) => {
  const staff = await open(browser)
  const clerk = await open(browser)
  await login(staff, 'staff')
  await login(clerk, 'clerk_t1')

  // A submitted case for the disability subsidies (its required papers uploaded beforehand, the optional bank card
  // not) takes a ticket at the town's civil-affairs window; the call moves the case to in_session.
  const kase = await rest<{ id: number; number: string; applicant_id_masked: string }>(staff, 'POST', '/cases', {
    matter_code: 'MZ-002', applicant_name: '王桂兰', applicant_id_number: '330203194901019011', applicant_phone: '13800138000',
  })
  for (const item of ['application_form', 'id_card', 'disability_certificate', 'household_register']) {
    await staff.evaluate(
      async ([caseId, item, bytes]) => {
        const form = new FormData()
        form.append('file', new Blob([new Uint8Array(bytes)], { type: 'image/png' }), `${item}.png`)
        const r = await fetch(`/api/v1/cases/${caseId}/documents?item=${item}`, {
          method: 'POST', headers: { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}` }, body: form,
        })
        if (r.status !== 201) throw new Error(await r.text())
      },
      [kase.id, item, [...PNG]] as const,
    )
  }
  await rest(staff, 'POST', `/cases/${kase.id}/transitions`, { to: 'submitted' })
  const ticket = await rest<{ number: string }>(staff, 'POST', `/cases/${kase.id}/tickets`)
  await staff.goto(`/#/cases/${kase.id}`)

  await clerk.goto('/#/window')
  const signedIn = clerk.locator('[data-test=signed-in]')
  await expect(signedIn.or(clerk.locator('[data-test=sign-in-T01-MZ-1]'))).toBeVisible()
  if (!(await signedIn.isVisible())) await clerk.locator('[data-test=sign-in-T01-MZ-1]').click()
  await clerk.locator('[data-test=call-next]').click()
  await expect(clerk).toHaveURL(/#\/call\//)
  await staff.locator('[data-test=answer]').click()
  await expect(staff).toHaveURL(/#\/call\//)
  await playing(clerk.locator('[data-test=tile-camera] video').first())

  // The clerk's call screen: applicant with the ID masked, case number, matter, ticket number, the live checklist.
  const panel = clerk.locator('[data-test=materials-panel]')
  await expect(panel.locator('[data-test=applicant]')).toContainText(`王桂兰（${kase.applicant_id_masked}）`)
  expect(kase.applicant_id_masked).toContain('*')
  await expect(panel.locator('[data-test=applicant]')).not.toContainText('330203194901019011')
  await expect(panel.locator('[data-test=case-number]')).toHaveText(kase.number)
  await expect(panel.locator('[data-test=matter]')).toContainText('MZ-002')
  await expect(panel.locator('[data-test=ticket-number]')).toHaveText(ticket.number)
  await expect(panel.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'missing')
  const mine = staff.locator('[data-test=materials-panel]')
  await expect(mine.locator('[data-test=call-materials]')).toHaveAttribute('data-state', 'in_session')

  await watchMaterials(clerk)
  // The point uploads a better scan of the application form (a PDF) during the call: the clerk has it within 1 s.
  const pdf = await pushedWithin(staff, clerk, kase.id, () =>
    mine.locator('[data-test=item-application_form] input[type=file]').setInputFiles({ name: 'form.pdf', mimeType: 'application/pdf', buffer: PDF }),
  )
  expect(pdf.ms).toBeLessThan(1000)
  await expect(panel.locator(`[data-test=item-application_form] [data-doc="${pdf.id}"]`)).toBeVisible()

  // The missing bank card, photographed with the 高拍仪: two cameras to choose from, the second one chosen, opened at more than 720p.
  await mine.locator('[data-test=snap-bank_card]').click()
  await playing(staff.locator('.snap'))
  await staff.locator('[data-test=snap-camera]').click()
  const cameras = staff.locator('.el-select-dropdown__item:visible')
  await expect(cameras).toHaveCount(2)
  await cameras.nth(1).click()
  await playing(staff.locator('.snap'))
  const [w, h] = (await staff.locator('[data-test=snap-resolution]').innerText()).match(/(\d+)×(\d+)/)!.slice(1).map(Number)
  expect(w * h).toBeGreaterThan(1280 * 720)
  const size = await staff.locator('.snap').evaluate((v: HTMLVideoElement) => [v.videoWidth, v.videoHeight])
  expect(size).toEqual([w, h])
  await shot(staff, info, '01-staff-snapshot')
  const snap = await pushedWithin(staff, clerk, kase.id, () => staff.locator('[data-test=capture]').click())
  expect(snap.ms).toBeLessThan(1000)
  await expect(panel.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'pending')
  await expect(mine.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'pending')
  // The stored photo is the camera's full frame.
  const stored = await clerk.evaluate(async ([caseId, id]) => {
    const r = await fetch(`/api/v1/cases/${caseId}/documents/${id}/content`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}` } })
    const bmp = await createImageBitmap(await r.blob())
    return [bmp.width, bmp.height]
  }, [kase.id, snap.id] as const)
  expect(stored).toEqual([w, h])
  await shot(clerk, info, '02-clerk-materials')

  // The clerk returns the snapshot for correction, with a reason; the point sees the reason on the item.
  await panel.locator('[data-test=item-bank_card] [data-test=return-doc]').click()
  await clerk.locator('textarea[data-test=return-reason], [data-test=return-reason] textarea').fill(REASON)
  await clerk.locator('[data-test=return-confirm]').click()
  await expect(panel.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'returned')
  await expect(mine.locator('[data-test=reason-bank_card]')).toContainText(REASON)
  await expect(mine.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'returned')
  await shot(staff, info, '03-staff-returned')

  // The point uploads it again: the clerk sees the new one at once, pending, the returned one kept and marked.
  const again = await pushedWithin(staff, clerk, kase.id, () =>
    mine.locator('[data-test=item-bank_card] input[type=file]').setInputFiles({ name: 'bank-card.png', mimeType: 'image/png', buffer: PNG }),
  )
  expect(again.ms).toBeLessThan(1000)
  await expect(panel.locator('[data-test=item-bank_card]')).toHaveAttribute('data-status', 'pending')
  await expect(mine.locator('[data-test=reason-bank_card]')).toHaveCount(0)
  await expect(panel.locator(`[data-doc="${snap.id}"] [data-test=review-state]`)).toHaveText('需补正')
  // The clerk accepts the application form.
  await panel.locator(`[data-doc="${pdf.id}"] [data-test=accept-doc]`).click()
  await expect(panel.locator('[data-test=item-application_form]')).toHaveAttribute('data-status', 'accepted')
  await expect(mine.locator('[data-test=item-application_form]')).toHaveAttribute('data-status', 'accepted')

  // The clerk previews the PDF inline: pdf.js draws it on a canvas in the page; nothing downloads, no window opens.
  let downloads = 0
  let popups = 0
  clerk.on('download', () => downloads++)
  clerk.on('popup', () => popups++)
  clerk.context().on('page', () => popups++)
  await panel.locator(`[data-doc="${pdf.id}"] [data-test=preview]`).click()
  const canvas = panel.locator(`[data-doc="${pdf.id}"] [data-test=preview-pdf] canvas`)
  await expect(canvas).toHaveCount(1)
  // The square (blue, the lower half) and the words (dark pixels in the upper part) are drawn.
  const drawn = () =>
    canvas.evaluate((c: HTMLCanvasElement) => {
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
      let blue = 0
      let dark = 0
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 2] > 200 && d[i] < 60 && d[i + 1] < 60) blue++
        else if (i / 4 < (c.width * c.height) / 2 && d[i] < 100 && d[i + 1] < 100 && d[i + 2] < 100) dark++
      }
      return { blue: blue / (d.length / 4), dark }
    })
  await expect.poll(async () => (await drawn()).blue).toBeGreaterThan(0.3)
  await expect.poll(async () => (await drawn()).dark).toBeGreaterThan(50)
  expect(downloads).toBe(0)
  expect(popups).toBe(0)
  await shot(clerk, info, '04-clerk-pdf-preview')

  // The audit has every step.
  const audit = await rest<{ entries: { action: string }[] }>(clerk, 'GET', `/cases/${kase.id}/audit`)
  const actions = audit.entries.map((e) => e.action)
  expect(actions.filter((a) => a === 'document.uploaded')).toHaveLength(7)
  expect(actions).toContain('document.returned')
  expect(actions).toContain('document.accepted')
})
