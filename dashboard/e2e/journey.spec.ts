import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { expect, test } from '@playwright/test'
import { checkPage, email, register, watchCsp } from './support.ts'

const run = promisify(execFile)

test('an owner creates, connects to, scales and deletes a cluster; a viewer sees it but may not change it', async ({ page, browser }, testInfo) => {
  const csp = watchCsp(page)
  const clusterName = `e2e-${Date.now().toString(36)}`
  const bob = email('bob')

  await test.step('register, on a page served under the real CSP', async () => {
    const response = await page.goto('/register')
    const policy = response!.headers()['content-security-policy']!
    expect(policy).toContain("script-src 'self';")
    expect(policy).toContain("frame-ancestors 'none'")
    expect(response!.headers()['x-content-type-options']).toBe('nosniff')
    await checkPage(page, testInfo, 'register')
    await register(page, { name: 'Ada Lovelace', address: email('ada'), organization: 'Analytical Engines' })
    await page.getByRole('button', { name: 'Create account' }).click()
    await expect(page.getByRole('heading', { name: 'Clusters' })).toBeVisible()
    await expect(page.getByText('No clusters yet.')).toBeVisible()
    await checkPage(page, testInfo, 'clusters-empty')
  })

  await test.step('the session survives a reload (refresh cookie)', async () => {
    await page.reload()
    await expect(page.getByRole('heading', { name: 'Clusters' })).toBeVisible()
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))).not.toContain('eyJ')
  })

  await test.step('create a 2-instance cluster', async () => {
    await page.getByRole('link', { name: 'Create cluster' }).click()
    await page.getByLabel('Cluster name').fill(clusterName)
    await page.getByLabel('Region').selectOption('nyc1')
    await page.getByLabel('PostgreSQL version').selectOption('18')
    await page.getByLabel('Instances', { exact: true }).fill('2')
    await page.getByLabel('Storage (GB)').fill('20')
    await checkPage(page, testInfo, 'create-cluster')
    await page.getByRole('button', { name: 'Create cluster' }).click()
    await expect(page.getByRole('heading', { name: clusterName })).toBeVisible()
  })

  await test.step('watch it reach running', async () => {
    await expect(page.getByTestId('status').first()).toHaveText('running', { timeout: 180_000 })
    await expect(page.getByTestId('overview-instances')).toHaveText('2/2 ready')
    await expect(page.getByTestId('operation').first()).toContainText('succeeded')
    await checkPage(page, testInfo, 'cluster-running')
  })

  await test.step('reveal the credentials and connect with psql', async () => {
    await page.getByRole('button', { name: 'Reveal credentials' }).click()
    await expect(page.getByTestId('psql-command')).toContainText('\u2022'.repeat(12))
    await checkPage(page, testInfo, 'cluster-credentials')
    await page.getByRole('button', { name: 'Show password' }).click()
    await expect(page.getByTestId('psql-command')).not.toContainText('\u2022')
    const command = (await page.getByTestId('psql-command').textContent())!.trim()
    const uri = command.replace(/^psql "/, '').replace(/"$/, '')
    expect(uri).toMatch(/^postgres(ql)?:\/\//)
    const { stdout } = await run('psql', [uri, '-At', '-c', 'select 40 + 2'], { timeout: 30_000 })
    expect(stdout.trim()).toBe('42')
    await page.getByRole('button', { name: 'Hide credentials' }).click()
  })

  await test.step('scale to 3 instances', async () => {
    await page.getByRole('button', { name: 'Scale' }).click()
    const dialog = page.getByRole('dialog')
    await dialog.getByLabel('Instances').fill('3')
    await checkPage(page, testInfo, 'scale-dialog')
    await dialog.getByRole('button', { name: 'Apply' }).click()
    await expect(dialog).toBeHidden()
    await expect(page.getByTestId('overview-instances')).toHaveText('3/3 ready', { timeout: 180_000 })
    await expect(page.getByTestId('status').first()).toHaveText('running')
  })

  await test.step('a change made from a stale view is refused (If-Match, 412) and says so', async () => {
    const stale = await page.context().newPage()
    await stale.goto(page.url())
    await expect(stale.getByTestId('overview-instances')).toHaveText('3/3 ready')
    await stale.getByRole('button', { name: 'Scale' }).click()
    const dialog = stale.getByRole('dialog')
    await dialog.getByLabel('Instances').fill('2')
    // Meanwhile the first tab changes the settings: the dialog's version is no longer the cluster's.
    const protection = page.getByLabel('Deletion protection')
    await protection.check()
    await page.getByRole('button', { name: 'Save settings' }).click()
    await expect(page.getByTestId('operation').first()).toContainText('Settings changed')
    await dialog.getByRole('button', { name: 'Apply' }).click()
    await expect(dialog.getByRole('alert')).toContainText('This cluster changed since you loaded it')
    await expect(dialog.getByRole('button', { name: 'Load latest version' })).toBeVisible()
    await stale.close()
    await expect(page.getByTestId('overview-instances')).toHaveText('3/3 ready')
    await protection.uncheck()
    await page.getByRole('button', { name: 'Save settings' }).click()
    await expect(page.getByTestId('operation').nth(1)).toContainText('Settings changed')
    await expect(page.getByTestId('status').first()).toHaveText('running', { timeout: 120_000 })
  })

  await test.step('see the metrics charts', async () => {
    const metrics = page.getByRole('region', { name: 'Metrics' })
    await metrics.scrollIntoViewIfNeeded()
    await expect(metrics.locator('.recharts-surface').first()).toBeVisible()
    for (const window of ['24h', '7d', '1h']) {
      await metrics.getByRole('tab', { name: window }).click()
      await expect(metrics.getByRole('tab', { name: window })).toHaveAttribute('aria-selected', 'true')
    }
    await expect(metrics.getByTestId('metrics-latest')).toBeVisible({ timeout: 120_000 })
    await expect(metrics.locator('.recharts-line-dot').first()).toBeVisible()
    await checkPage(page, testInfo, 'cluster-metrics')
  })

  const invitationLink = await test.step('invite a viewer', async () => {
    await page.getByRole('link', { name: 'Members', exact: true }).click()
    await expect(page.getByTestId('my-role')).toHaveText('owner')
    await page.getByLabel('E-mail').fill(bob)
    await page.getByLabel('Role', { exact: true }).selectOption('viewer')
    await page.getByRole('button', { name: 'Invite' }).click()
    const link = (await page.getByTestId('invitation-link').textContent())!.trim()
    await checkPage(page, testInfo, 'members')
    return link
  })

  await test.step('the viewer joins in a second browser and may only look', async () => {
    const context = await browser.newContext()
    const viewer = await context.newPage()
    const viewerCsp = watchCsp(viewer)
    await viewer.goto(invitationLink)
    await checkPage(viewer, testInfo, 'invitation')
    await register(viewer, { name: 'Bob Viewer', address: bob })
    await viewer.getByRole('button', { name: 'Create account and join' }).click()
    await expect(viewer.getByRole('heading', { name: 'Clusters' })).toBeVisible()
    await expect(viewer.getByRole('link', { name: 'Create cluster' })).toHaveCount(0)
    await viewer.getByRole('link', { name: new RegExp(clusterName) }).click()
    await expect(viewer.getByRole('heading', { name: clusterName })).toBeVisible()
    await expect(viewer.getByTestId('status').first()).toHaveText('running')
    for (const name of ['Scale', 'Delete cluster', 'Reveal credentials', 'Save settings']) {
      await expect(viewer.getByRole('button', { name })).toHaveCount(0)
    }
    await checkPage(viewer, testInfo, 'viewer-cluster')
    await viewer.getByRole('link', { name: 'Members', exact: true }).click()
    await expect(viewer.getByTestId('my-role')).toHaveText('viewer')
    await expect(viewer.getByRole('heading', { name: 'Invitations' })).toHaveCount(0)
    await expect(viewer.getByRole('combobox', { name: /Role of/ })).toHaveCount(0)
    await checkPage(viewer, testInfo, 'viewer-members')
    expect(viewerCsp).toEqual([])
    await context.close()
  })

  await test.step('the owner sees the viewer and deletes the cluster by typing its name', async () => {
    await page.getByRole('link', { name: 'Clusters', exact: true }).click()
    await page.getByRole('link', { name: 'Members', exact: true }).click()
    await expect(page.getByTestId('member').filter({ hasText: 'Bob Viewer' })).toBeVisible()
    await page.getByRole('combobox', { name: 'Role of Bob Viewer' }).selectOption('member')
    await page.getByRole('link', { name: 'Clusters', exact: true }).click()
    await page.getByRole('link', { name: 'Members', exact: true }).click()
    await expect(page.getByRole('combobox', { name: 'Role of Bob Viewer' })).toHaveValue('member')
    await page.getByRole('link', { name: 'Clusters', exact: true }).click()
    await page.getByRole('link', { name: new RegExp(clusterName) }).click()
    await page.getByRole('button', { name: 'Delete cluster' }).click()
    const dialog = page.getByRole('dialog')
    const confirm = dialog.getByRole('button', { name: 'Delete this cluster' })
    await expect(confirm).toBeDisabled()
    await dialog.getByLabel(/to confirm/).fill(clusterName)
    await checkPage(page, testInfo, 'delete-dialog')
    await confirm.click()
    await expect(page.getByRole('heading', { name: 'Clusters' })).toBeVisible()
    await expect(page.getByText('No clusters yet.')).toBeVisible({ timeout: 120_000 })
  })

  expect(csp).toEqual([])
})
