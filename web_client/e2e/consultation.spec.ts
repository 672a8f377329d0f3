// A consultation (多人会商) through the clerk's screens in real Chromium: the clerk opens a consultation for a case,
// finds an expert in the library and invites them by one-time link; the expert opens the link, waits, is admitted,
// both see each other's video; the clerk records a note and the conclusion, then removes the expert, whose link is
// then dead.
import { expect, test, type Page } from '@playwright/test'
import { login, playing, rest, shot } from './helpers'

async function newCase(page: Page): Promise<number> {
  const c = await rest<{ id: number }>(page, 'POST', '/cases', { matter_code: 'MZ-001', applicant_name: '赵老伯', applicant_id_number: '330203195512123039', applicant_phone: '13800138000' })
  return c.id
}

test('consultation: library expert invited by link, waiting room, admitted, note and conclusion, removed', async ({ browser }, info) => {
  const staff = await (await browser.newContext()).newPage()
  await staff.goto('/')
  await login(staff, 'staff')
  const caseId = await newCase(staff)

  const clerk = await (await browser.newContext()).newPage()
  await clerk.goto('/')
  await login(clerk, 'clerk_t1')
  await clerk.goto(`/#/cases/${caseId}`)
  const panel = clerk.locator('[data-test=consultation]')
  await panel.locator('[data-loaded=true]').waitFor()
  await panel.locator('[data-test=open-consultation]').click()
  await expect(panel.locator('[data-test=open-session]')).toBeVisible()
  await panel.locator('[data-test=expert-search] input, input[data-test=expert-search]').fill('林志远')
  await panel.getByRole('button', { name: /查找|Search/ }).click()
  await expect(panel.locator('[data-test=expert]')).toHaveCount(1)
  await panel.locator('[data-test=expert]').getByRole('button').click()
  const link = await panel.locator('[data-test=invite-link] input, input[data-test=invite-link]').inputValue()
  expect(link).toMatch(/#\/join\/\d+\?token=/)
  await expect(panel.locator('[data-test=invite]')).toHaveCount(1)
  await shot(clerk, info, '01-clerk-invite')

  // The expert opens the link (no account, no login) and waits to be admitted.
  const expertCtx = await browser.newContext()
  const expert = await expertCtx.newPage()
  await expert.goto(link)
  await expect(expert.locator('[data-test=waiting-room]')).toBeVisible({ timeout: 30_000 })
  await shot(expert, info, '02-expert-waiting')

  // The clerk joins the consultation, sees the expert waiting and admits them.
  await panel.locator('[data-test=join-session]').click()
  await expect(clerk).toHaveURL(/#\/call\//)
  await expect(clerk.locator('[data-test=waiter]')).toHaveCount(1)
  await clerk.locator('[data-test=admit]').click()
  await expect(expert.locator('[data-test=waiting-room]')).toBeHidden()
  await playing(expert.locator('[data-test=tile-camera] video').first())
  await playing(clerk.locator('[data-test=tile-camera] video').first())
  await expect(clerk.locator('[data-test=participants]')).toContainText('林志远')
  await shot(clerk, info, '03-clerk-consultation')
  await shot(expert, info, '04-expert-consultation')

  // The clerk removes the expert: the expert's page says so, and the same link cannot bring them back.
  await clerk.locator('[data-test=participants] [data-test=remove]').first().click()
  await expect(expert.locator('[data-test=ended]')).toBeVisible()
  await expect(clerk.locator('[data-test=participants]')).not.toContainText('林志远')
  const again = await (await browser.newContext()).newPage()
  await again.goto(link)
  await expect(again.locator('[data-test=join-error]')).toBeVisible({ timeout: 20_000 })
  await shot(again, info, '05-link-dead')

  // Back in the case file: a note and the conclusion, both listed.
  await clerk.goto(`/#/cases/${caseId}`)
  await panel.locator('[data-loaded=true]').waitFor()
  await panel.locator('[data-test=note-text] textarea, textarea[data-test=note-text]').fill('专家意见：材料齐全，可以受理。')
  await panel.locator('[data-test=add-note]').click()
  await expect(panel.locator('[data-test=note]')).toHaveCount(1)
  await panel.locator('[data-test=note-text] textarea, textarea[data-test=note-text]').fill('会商结论：同意受理。')
  await panel.locator('[data-test=add-conclusion]').click()
  await expect(panel.locator('[data-test=note]')).toHaveCount(2)
  await shot(clerk, info, '06-clerk-notes')
})
