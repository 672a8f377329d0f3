// The queue screens around the call, in real Chromium against the real server: a village point's staff member logs
// in with the keyboard alone, takes two tickets (one from a phone-width screen) and watches the line move; the clerk
// sees the line, calls, recalls, skips and transfers; the supervisor's dashboard shows the department and its window.
import { expect, test, type Page } from '@playwright/test'
import { PASSWORD } from './env'
import { login, rest, shot } from './helpers'

/** Open a case and take a ticket through the REST API with the page's own token (set-up, not what is tested). */
async function caseWithTicket(page: Page, applicant: string, idNumber: string): Promise<{ caseId: number; number: string }> {
  const c = await rest<{ id: number }>(page, 'POST', '/cases', { matter_code: 'MZ-001', applicant_name: applicant, applicant_id_number: idNumber, applicant_phone: '13800138000' })
  const t = await rest<{ number: string }>(page, 'POST', `/cases/${c.id}/tickets`)
  return { caseId: c.id, number: t.number }
}

/** Nothing sticks out sideways: the page fits its viewport's width. */
async function fitsWidth(page: Page): Promise<void> {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth])
  expect(scroll).toBeLessThanOrEqual(inner)
}

test('keyboard login, phone-width case screen, live line, recall, skip, transfer, dashboard', async ({ browser }, info) => {
  // Staff on a phone-width screen, logging in with the keyboard only.
  const staffCtx = await browser.newContext({ viewport: { width: 390, height: 844 } })
  const staff = await staffCtx.newPage()
  await staff.goto('/')
  await staff.locator('input[name=username]').focus()
  await staff.keyboard.type('staff2')
  await staff.keyboard.press('Tab')
  await staff.keyboard.type(PASSWORD)
  await staff.keyboard.press('Enter')
  await expect(staff.locator('[data-test=who]')).toBeVisible()
  await expect(staff.locator('[data-test=cases]')).toBeVisible()
  await fitsWidth(staff)
  await shot(staff, info, '01-staff-phone-cases')

  const first = await caseWithTicket(staff, '王阿婆', '330203195203041013')
  const second = await caseWithTicket(staff, '李大伯', '330203196005062029')
  await staff.goto(`/#/cases/${second.caseId}`)
  await expect(staff.locator('[data-test=ticket]')).toContainText(second.number)
  await expect(staff.locator('[data-test=position]')).toBeVisible()
  await fitsWidth(staff)
  await shot(staff, info, '02-staff-phone-ticket')
  const before = await staff.locator('[data-test=position]').innerText()

  // The clerk sees both tickets in the line.
  const clerk = await (await browser.newContext()).newPage()
  await clerk.goto('/')
  await login(clerk, 'clerk_t1')
  await clerk.locator('[data-loaded=true]').waitFor()
  if (!(await clerk.locator('[data-test=signed-in]').isVisible())) await clerk.locator('[data-test=sign-in-T01-MZ-1]').click()
  await expect(clerk.locator('[data-test=signed-in]')).toBeVisible()
  await expect(clerk.locator('[data-test=line]')).toContainText(first.number)
  await expect(clerk.locator('[data-test=line]')).toContainText(second.number)
  await shot(clerk, info, '03-clerk-line')

  // Call the first ticket; leave the call screen for the window, recall, then skip it (nobody answers).
  await clerk.locator('[data-test=call-next]').click()
  await expect(clerk).toHaveURL(/#\/call\//)
  await clerk.locator('[data-test=nav-window]').click()
  await expect(clerk.locator('[data-test=current]')).toContainText(first.number)
  // The second ticket moved up by one on the staff screen, without a reload.
  await expect(staff.locator('[data-test=position]')).not.toHaveText(before)
  await clerk.locator('[data-test=recall]').click()
  await clerk.locator('[data-test=skip]').click()
  await expect(clerk.locator('[data-test=current]')).toHaveCount(0)

  // Call the second, then transfer it to the district's civil-affairs bureau.
  await clerk.locator('[data-test=call-next]').click()
  await expect(clerk).toHaveURL(/#\/call\//)
  await clerk.locator('[data-test=nav-window]').click()
  await expect(clerk.locator('[data-test=current]')).toContainText(second.number)
  await clerk.locator('[data-test=transfer]').click()
  await clerk.locator('[data-test=transfer-department]').click()
  await clerk.getByRole('option', { name: /海曙区云办中心 · 区民政局|Haishu District Cloud Service Centre · District Civil Affairs Bureau/ }).click()
  await clerk.locator('[data-test=transfer-confirm]').click()
  await expect(clerk.locator('[data-test=current]')).toHaveCount(0)
  await expect(clerk.locator('[data-test=line]').or(clerk.locator('.el-empty'))).toBeVisible()
  await shot(clerk, info, '04-clerk-after-transfer')

  // The district supervisor's dashboard: the district civil-affairs department now has the transferred ticket.
  const sup = await (await browser.newContext()).newPage()
  await sup.goto('/')
  await login(sup, 'supervisor')
  await sup.locator('[data-loaded=true]').waitFor()
  const dept = sup.locator('[data-test^=dept-]', { hasText: '区民政局' })
  await expect(dept).toBeVisible()
  await expect(dept.locator('[data-test=dept-colour]')).toBeVisible()
  await expect(dept).toContainText(/排队 [1-9]/)
  await expect(sup.locator('[data-test=win-D01-MZ-1]')).toBeVisible()
  await shot(sup, info, '05-supervisor-dashboard')

  // Phone width for the dashboard too.
  await sup.setViewportSize({ width: 390, height: 844 })
  await fitsWidth(sup)
})
