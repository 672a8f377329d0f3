import { defineConfig } from '@playwright/test'
import { CHROMIUM_WRAPPER, CW_URL } from './e2e/env'

// The server and Chromium both run inside a network namespace the test creates (only its loopback exists), so every
// packet of the run, WebRTC included, stays on that namespace's 127.0.0.1.  See e2e/global-setup.ts.
export default defineConfig({
  testDir: './e2e',
  timeout: 180_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: 'test-results',
  globalSetup: './e2e/global-setup.ts',
  use: {
    baseURL: CW_URL,
    viewport: { width: 1280, height: 720 },
    permissions: ['camera', 'microphone'],
    launchOptions: {
      executablePath: CHROMIUM_WRAPPER,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-component-update',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        '--auto-select-desktop-capture-source=Entire screen',
        '--autoplay-policy=no-user-gesture-required',
      ],
    },
  },
})
