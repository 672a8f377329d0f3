// The whole remote-assistance flow in two real Chromium browsers (fake camera and microphone), against the real
// server: a service point's staff member and a district clerk.  Run once in Chinese and once in English.
import { expect, test, type Browser, type Page } from '@playwright/test'
import { cut, field, login, playing, restore, shot, wire } from './helpers'

const PDF = Buffer.from(
  '%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n' +
    '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n',
)

async function open(browser: Browser, locale: 'zh-CN' | 'en'): Promise<Page> {
  const context = await browser.newContext()
  const page = await context.newPage()
  const errors: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
  ;(page as unknown as { consoleErrors: string[] }).consoleErrors = errors
  await wire(page)
  await page.goto('/')
  if (locale === 'en') {
    await page.locator('[data-test=language]').click()
    await page.getByRole('option', { name: 'English' }).click()
    await expect(page.getByRole('button', { name: 'Log in' })).toBeVisible()
  }
  return page
}

/** The selected ICE candidate pair of the page's peer connection: both ends on loopback. */
async function loopbackPair(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const pc = (window as unknown as { __cw: { pc: RTCPeerConnection } }).__cw.pc
    const stats = await pc.getStats()
    const all = new Map<string, Record<string, unknown>>()
    stats.forEach((s) => all.set(s.id, s as unknown as Record<string, unknown>))
    for (const s of all.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = all.get(String(s.selectedCandidatePairId))!
        return [String(all.get(String(pair.localCandidateId))!.address), String(all.get(String(pair.remoteCandidateId))!.address)]
      }
    }
    return []
  })
}

for (const locale of ['zh-CN', 'en'] as const) {
  test(`case, materials, ticket, call, screen share, chat, network drop, completion, recording (${locale})`, async ({ browser }, info) => {
    const staff = await open(browser, locale)
    const clerk = await open(browser, locale)
    await login(staff, 'staff')
    await shot(staff, info, '01-staff-cases')

    // Staff: a new case for the old-age allowance.
    await staff.locator('[data-test=new-case]').click()
    await staff.locator('[data-test=matter]').click()
    await staff.locator('.el-select-dropdown__item', { hasText: 'MZ-001' }).click()
    await staff.locator(field('applicant')).fill(locale === 'en' ? 'Zhang Xiuying' : '张秀英')
    await staff.locator(field('id-number')).fill(locale === 'en' ? '33020319490101902X' : '330203194901019011')
    await staff.locator(field('phone')).fill('13800138000')
    await staff.locator('[data-test=create-case]').click()
    await expect(staff.locator('[data-test=case-state]')).toBeVisible()
    const caseId = Number(new URL(staff.url()).hash.split('/').pop())

    // A PDF by drag-and-drop upload, and a camera snapshot.
    await staff.locator('[data-test=item-id_card] input[type=file]').setInputFiles({ name: 'id.pdf', mimeType: 'application/pdf', buffer: PDF })
    await expect(staff.locator('[data-test=document]')).toHaveCount(1)
    await staff.locator('[data-test=snap-household_register]').click()
    await playing(staff.locator('.snap'))
    await staff.locator('[data-test=capture]').click()
    await expect(staff.locator('[data-test=document]')).toHaveCount(2)
    await shot(staff, info, '02-staff-materials')
    // A file of the wrong type is refused in words.
    await staff.locator('[data-test=item-social_security_card] input[type=file]').setInputFiles({ name: 'a.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') })
    await expect(staff.locator('[data-test=upload-error]')).toBeVisible()
    await staff.locator('[data-test=item-social_security_card] input[type=file]').setInputFiles({ name: 'sscard.pdf', mimeType: 'application/pdf', buffer: PDF })
    await staff.locator('[data-test=item-community_certificate] input[type=file]').setInputFiles({ name: 'cert.pdf', mimeType: 'application/pdf', buffer: PDF })
    await expect(staff.locator('[data-test=document]')).toHaveCount(4)
    await staff.locator('[data-test=submit]').click()
    await expect(staff.locator('[data-test=case-state]')).toHaveText(locale === 'en' ? 'Submitted' : '已提交')

    await staff.locator('[data-test=take-ticket]').click()
    await expect(staff.locator('[data-test=ticket]')).toBeVisible()
    await shot(staff, info, '03-staff-ticket')

    // Clerk: sign in to the town's civil-affairs window and call the next ticket.
    await login(clerk, 'clerk_t1')
    const signedIn = clerk.locator('[data-test=signed-in]')
    await expect(signedIn.or(clerk.locator('[data-test=sign-in-T01-MZ-1]'))).toBeVisible()
    if (!(await signedIn.isVisible())) await clerk.locator('[data-test=sign-in-T01-MZ-1]').click()
    await expect(signedIn).toBeVisible()
    await shot(clerk, info, '04-clerk-window')
    await clerk.locator('[data-test=call-next]').click()
    await expect(clerk).toHaveURL(/#\/call\//)

    // Staff: the ring, answered.
    await expect(staff.locator('[data-test=answer]')).toBeVisible()
    await shot(staff, info, '05-staff-ring')
    await staff.locator('[data-test=answer]').click()
    await expect(staff).toHaveURL(/#\/call\//)

    // Each sees the other's camera playing; both peer connections run on loopback.
    await playing(staff.locator('[data-test=tile-camera] video').first())
    await playing(clerk.locator('[data-test=tile-camera] video').first())
    expect(await loopbackPair(staff)).toEqual(['127.0.0.1', '127.0.0.1'])
    expect(await loopbackPair(clerk)).toEqual(['127.0.0.1', '127.0.0.1'])
    await expect(staff.locator('[data-test=recording]')).toBeVisible()
    await shot(staff, info, '06-staff-call')
    await shot(clerk, info, '07-clerk-call')

    // The clerk shares a screen: a second tile on the staff side.
    await clerk.locator('[data-test=share]').click()
    await expect(staff.locator('[data-test=tile-screen]')).toHaveCount(1)
    await playing(staff.locator('[data-test=tile-screen] video'))
    await shot(staff, info, '08-staff-screen-share')

    // Chat both ways.
    await clerk.locator(field('chat-input')).fill('请出示身份证原件')
    await clerk.locator('[data-test=chat-send]').click()
    await expect(staff.locator('[data-test=chat-lines]')).toContainText('请出示身份证原件')
    await staff.locator(field('chat-input')).fill('好的，马上')
    await staff.locator('[data-test=chat-send]').click()
    await expect(clerk.locator('[data-test=chat-lines]')).toContainText('好的，马上')

    // The staff side's network drops and comes back: it rejoins by itself, video resumes, no ghost.
    await cut(staff)
    await expect(staff.locator('[data-test=reconnecting]')).toBeVisible()
    await shot(staff, info, '09-staff-offline')
    await restore(staff)
    await expect(staff.locator('[data-test=reconnecting]')).toBeHidden({ timeout: 30_000 })
    await playing(clerk.locator('[data-test=tile-camera] video').first())
    await playing(staff.locator('[data-test=tile-camera] video').first())
    await expect(clerk.locator('[data-test=tile-camera]')).toHaveCount(1)
    await expect(staff.locator('[data-test=tile-camera]')).toHaveCount(1)
    await shot(staff, info, '10-staff-recovered')

    // The clerk completes the case; the recording appears in the case file and plays.
    // Accept the case in the call (the materials are beside the video), then complete it.
    await clerk.locator('[data-test=accept]').click()
    await expect(clerk.locator('[data-test=accept]')).toHaveCount(0)
    await clerk.locator('[data-test=complete]').click()
    await expect(clerk).toHaveURL(new RegExp(`#/cases/${caseId}$`))
    await expect(clerk.locator('[data-test=case-state]')).toHaveText(locale === 'en' ? 'Completed' : '已办结')
    await expect
      .poll(
        async () => {
          await clerk.reload()
          await clerk.locator('.case[data-loaded=true]').waitFor()
          return clerk.locator('[data-test=recording]').count()
        },
        { timeout: 90_000, intervals: [2000] },
      )
      .toBeGreaterThanOrEqual(3)
    await clerk.locator('[data-test=recording]').first().getByRole('button').click()
    await expect
      .poll(async () => clerk.locator('[data-test=player]').evaluate((v: HTMLVideoElement) => v.currentTime), { timeout: 20_000 })
      .toBeGreaterThan(0.5)
    await shot(clerk, info, '11-clerk-case-file')

    for (const page of [staff, clerk]) {
      const errors = (page as unknown as { consoleErrors: string[] }).consoleErrors.filter((e) => !/ERR_INTERNET_DISCONNECTED|net::ERR|WebSocket/.test(e))
      expect(errors).toEqual([])
    }
  })
}
