// Shared by the end-to-end specs.
import { expect, type Page, type TestInfo } from '@playwright/test'
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

