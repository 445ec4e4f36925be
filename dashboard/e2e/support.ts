import { AxeBuilder } from '@axe-core/playwright'
import { expect, type Page, type TestInfo } from '@playwright/test'

export const PASSWORD = 'correct horse battery staple'

/** A fresh e-mail address (the API refuses special-use domains such as .test, and local parts past 32 characters). */
export function email(who: string): string {
  return `${who}.${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}@example.com`
}

/** An axe check with no serious or critical violation, then a screenshot under test-results/screenshots/. */
export async function checkPage(page: Page, testInfo: TestInfo, name: string): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).analyze()
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  expect(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), `axe on ${name}`).toEqual([])
  await page.screenshot({ path: `test-results/screenshots/${testInfo.project.name}-${name}.png`, fullPage: true, animations: 'disabled' })
}

/** Console messages that report a Content-Security-Policy violation: the app must cause none. */
export function watchCsp(page: Page): string[] {
  const violations: string[] = []
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(message.text())
  })
  return violations
}

export async function register(page: Page, { name, address, organization }: { name: string; address: string; organization?: string }) {
  await page.getByLabel('Your name').fill(name)
  await page.getByLabel('E-mail').fill(address)
  await page.getByLabel('Password').fill(PASSWORD)
  if (organization) await page.getByLabel('Organization name').fill(organization)
}
