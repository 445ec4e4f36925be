import { expect, test, type Page } from '@playwright/test'
import { checkPage, email, register, watchCsp } from './support.ts'

async function fitsTheScreen(page: Page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
  expect(overflow, 'no horizontal scrolling at 375 px').toBeLessThanOrEqual(0)
}

test('every page is usable 375 px wide', async ({ page }, testInfo) => {
  const csp = watchCsp(page)
  const clusterName = `m-${Date.now().toString(36)}`
  await page.goto('/login')
  await fitsTheScreen(page)
  await checkPage(page, testInfo, 'login')
  await page.getByRole('link', { name: 'Create one' }).click()
  await register(page, { name: 'Grace Hopper', address: email('grace'), organization: 'Compilers' })
  await page.getByRole('button', { name: 'Create account' }).click()
  await expect(page.getByRole('heading', { name: 'Clusters' })).toBeVisible()
  await fitsTheScreen(page)

  await page.getByRole('link', { name: 'Create cluster' }).click()
  await page.getByLabel('Cluster name').fill(clusterName)
  await page.getByLabel('Instances', { exact: true }).fill('1')
  await page.getByLabel('Autoscale instances').check()
  await fitsTheScreen(page)
  await checkPage(page, testInfo, 'create-cluster')
  await page.getByRole('button', { name: 'Create cluster' }).click()
  await expect(page.getByRole('heading', { name: clusterName })).toBeVisible()
  await expect(page.getByTestId('status').first()).toHaveText('running', { timeout: 180_000 })
  await fitsTheScreen(page)
  await checkPage(page, testInfo, 'cluster')

  await page.getByRole('link', { name: 'Clusters', exact: true }).click()
  await expect(page.getByRole('link', { name: new RegExp(clusterName) })).toBeVisible()
  await fitsTheScreen(page)
  await checkPage(page, testInfo, 'clusters')

  await page.getByRole('link', { name: 'Members', exact: true }).click()
  await expect(page.getByTestId('my-role')).toHaveText('owner')
  await fitsTheScreen(page)
  await checkPage(page, testInfo, 'members')

  await page.getByRole('link', { name: 'Clusters', exact: true }).click()
  await page.getByRole('link', { name: new RegExp(clusterName) }).click()
  await page.getByRole('button', { name: 'Delete cluster' }).click()
  await page.getByRole('dialog').getByLabel(/to confirm/).fill(clusterName)
  await checkPage(page, testInfo, 'delete-dialog')
  await page.getByRole('dialog').getByRole('button', { name: 'Delete this cluster' }).click()
  await expect(page.getByText('No clusters yet.')).toBeVisible({ timeout: 120_000 })
  expect(csp).toEqual([])
})
