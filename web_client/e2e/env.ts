import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const NETNS = process.env.CW_E2E_NETNS ?? 'cw-e2e'
export const PORT = Number(process.env.CW_E2E_PORT ?? 18765)
export const CW_URL = `http://127.0.0.1:${PORT}`
export const CHROMIUM = process.env.CW_CHROMIUM ?? '/usr/bin/chromium'
export const CHROMIUM_WRAPPER = join(tmpdir(), `cw-e2e-chromium-${NETNS}.sh`)
export const PASSWORD = 'e2e-password-1'
