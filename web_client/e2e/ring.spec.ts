// The incoming call reaches service-point staff wherever they are (here: the case list), with ticket number, window,
// department and countdown; a second staff tab opened after the ring started sees it too, and sees it vanish when
// the first one answers.  The clerk cannot decide the case before the applicant side has joined the call.
import { expect, test, type Browser, type Page } from '@playwright/test'
import { login, rest } from './helpers'

const PDF = '%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n' +
  '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n'

/** A valid 18-digit resident ID number (GB 11643 check digit), distinct per run. */
function idNumber(): string {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
  const body = `33020319500101${String(Date.now() % 1000).padStart(3, '0')}`
  const total = [...body].reduce((s, d, i) => s + Number(d) * weights[i], 0)
  return body + '10X98765432'[total % 11]
}

async function open(browser: Browser, user: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage()
  await page.goto('/')
  await login(page, user)
  return page
}

/** A REST call's status and body (refusals included). */
async function attempt(page: Page, method: string, path: string, body: unknown): Promise<{ status: number; body: { code?: string } }> {
  return page.evaluate(
    async ([method, path, body]) => {
      const r = await fetch(`/api/v1${path}`, {
        method,
        headers: { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      })
      return { status: r.status, body: await r.json() }
    },
    [method, path, body] as const,
  )
}

test('staff on the case list get the ring, answer it, and the clerk decides only once they joined', async ({ browser }) => {
  const staff = await open(browser, 'staff')
  const clerk = await open(browser, 'clerk_t1')

  // A submitted case with its materials and a ticket, made over REST (the materials screen has its own spec).
  const made = await rest<{ id: number; checklist: { code: string; required: boolean }[] }>(staff, 'POST', '/cases', {
    matter_code: 'MZ-001', applicant_name: '王桂兰', applicant_id_number: idNumber(), applicant_phone: '13800138000',
  })
  for (const item of made.checklist.filter((i) => i.required)) {
    await staff.evaluate(
      async ([caseId, code, pdf]) => {
        const form = new FormData()
        form.append('file', new File([pdf], `${code}.pdf`, { type: 'application/pdf' }))
        const r = await fetch(`/api/v1/cases/${caseId}/documents?item=${code}`, {
          method: 'POST', headers: { Authorization: `Bearer ${sessionStorage.getItem('cw.token')}` }, body: form,
        })
        if (r.status !== 201) throw new Error(`upload ${code}: ${r.status} ${await r.text()}`)
      },
      [made.id, item.code, PDF] as const,
    )
  }
  await rest(staff, 'POST', `/cases/${made.id}/transitions`, { to: 'submitted' })
  const ticket = await rest<{ id: number; number: string }>(staff, 'POST', `/cases/${made.id}/tickets`)
  await staff.goto('/#/cases')
  await expect(staff.locator('[data-test=ring]')).toBeHidden()

  // The clerk calls it and lands in the call.
  const signedIn = clerk.locator('[data-test=signed-in]')
  await expect(signedIn.or(clerk.locator('[data-test=sign-in-T01-MZ-1]'))).toBeVisible()
  if (!(await signedIn.isVisible())) await clerk.locator('[data-test=sign-in-T01-MZ-1]').click()
  await clerk.locator('[data-test=call-next]').click()
  await expect(clerk).toHaveURL(/#\/call\//)

  // The staff member on the case list: number, window, department, a running countdown.
  const ring = staff.locator('[data-test=ring]')
  await expect(ring.locator('[data-test=ring-number]')).toHaveText(ticket.number)
  await expect(ring.locator('[data-test=ring-window]')).toHaveText('窗口：高桥镇民政云窗口1')
  await expect(ring.locator('[data-test=ring-department]')).toHaveText('部门：高桥镇民政办')
  const seconds = async () => Number((await ring.locator('[data-test=ring-countdown]').innerText()).match(/\d+/)![0])
  const first = await seconds()
  expect(first).toBeGreaterThan(0)
  await expect.poll(seconds, { timeout: 5000 }).toBeLessThan(first)
  await expect.poll(() => staff.title(), { timeout: 5000 }).toContain(ticket.number)

  // A second staff tab opened after the ring started sees it too.
  const other = await open(browser, 'staff')
  await expect(other.locator('[data-test=ring-number]')).toHaveText(ticket.number)

  // Nobody from the point has joined: the clerk's decision buttons are disabled, with the reason, and the server refuses.
  await expect(clerk.locator('[data-test=wait-join]')).toBeVisible()
  await expect(clerk.locator('[data-test=complete]')).toBeDisabled()
  await expect(clerk.locator('[data-test=accept]')).toBeDisabled()
  const refused = await attempt(clerk, 'POST', `/cases/${made.id}/transitions`, { to: 'accepted' })
  expect([refused.status, refused.body.code]).toEqual([409, 'applicant_not_joined'])
  await expect(clerk.locator('[data-test=absent]')).toBeVisible()

  // The first tab answers and lands in the call; the ring vanishes from the second tab.
  await staff.locator('[data-test=answer]').click()
  await expect(staff).toHaveURL(new RegExp(`#/call/\\d+\\?case=${made.id}&ticket=${ticket.id}`))
  await expect(other.locator('[data-test=ring]')).toBeHidden()

  // The applicant side is in the call now: the clerk may decide.
  await expect(clerk.locator('[data-test=wait-join]')).toBeHidden()
  await expect(clerk.locator('[data-test=complete]')).toBeEnabled()
  await clerk.locator('[data-test=complete]').click()
  await expect(clerk).toHaveURL(new RegExp(`#/cases/${made.id}$`))
  const done = await rest<{ state: string; end_reason: string }>(clerk, 'GET', `/tickets/${ticket.id}`)
  expect([done.state, done.end_reason]).toEqual(['done', 'completed'])
  expect((await rest<{ state: string }>(clerk, 'GET', `/cases/${made.id}`)).state).toBe('completed')
})
