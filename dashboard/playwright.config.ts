import { defineConfig, devices } from '@playwright/test'

/**
 * End to end against a running local stack (the API on :8000, the built console on :5173): whoever runs the tests
 * starts them (`make run`), so no webServer here. Debian's Chromium, never a downloaded browser.
 */
export default defineConfig({
  testDir: 'e2e',
  outputDir: 'test-results/output',
  timeout: 240_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: process.env.DASHBOARD_URL ?? 'http://localhost:5173',
    actionTimeout: 20_000,
    navigationTimeout: 30_000,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    },
  },
  projects: [
    { name: 'desktop', testMatch: 'journey.spec.ts', use: { ...devices['Desktop Chrome'], channel: undefined } },
    { name: 'mobile', testMatch: 'mobile.spec.ts', use: { viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true } },
  ],
})
