// The event gateway pages against a real server: a type registered, evolved and published to
// through the API shows its versions, diff and rejects, and a pasted candidate is judged as the
// API judges it.

import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { baseUrl, expect, test } from './fixtures';

const screenshotDir = fileURLToPath(new URL('../test-results/screenshots/', import.meta.url));
mkdirSync(screenshotDir, { recursive: true });

const NAME = 'order.refund-e2e';

const schema = (extra: Record<string, unknown> = {}) => ({
  type: 'object',
  properties: { order_id: { type: 'string' }, amount: { type: 'number', minimum: 0 }, ...extra },
  required: ['order_id', 'amount'],
  additionalProperties: false,
});

test('an event type shows its versions, the diff, its rejects and a judged candidate', async ({ page, request }) => {
  const definition = (body: object) => ({
    owning_application: 'refunds',
    category: 'business',
    partition_key_fields: ['/order_id'],
    partitions: 2,
    schema: body,
  });
  const created = await request.put(`${baseUrl()}/v1/event-types/${NAME}`, { data: definition(schema()) });
  expect([200, 201]).toContain(created.status());
  const evolved = await request.put(`${baseUrl()}/v1/event-types/${NAME}`, {
    data: definition(schema({ reason: { type: 'string' } })),
  });
  expect(evolved.status()).toBe(200);
  const published = await request.post(`${baseUrl()}/v1/event-types/${NAME}/events`, {
    data: [
      { metadata: { eid: '00000000-0000-4000-8000-000000000001', occurred_at: '2026-12-01T10:00:00Z' }, order_id: 'o1', amount: 5 },
      { metadata: { eid: '00000000-0000-4000-8000-000000000002', occurred_at: '2026-12-01T10:00:00Z' }, order_id: 'o2', amount: -5 },
    ],
  });
  expect(published.status()).toBe(207);

  await page.goto('/event-types');
  const row = page.locator(`[data-event-type="${NAME}"]`);
  await expect(row).toContainText('refunds');
  await expect(row).toContainText('1.1.0');
  await row.getByRole('link', { name: NAME }).click();

  await expect(page.getByTestId('type-version')).toHaveText('1.1.0');
  await expect(page.getByTestId('latest-rejects')).toContainText('/amount');
  await expect(page.getByTestId('schema-diff').locator('[data-kind="added"]', { hasText: '"reason"' })).toHaveCount(1);

  // Changing order_id's type breaks backward compatibility; the page says so as the API does.
  const candidate = schema({ reason: { type: 'string' }, order_id: { type: 'integer' } });
  await page.getByRole('textbox', { name: 'Candidate schema' }).fill(JSON.stringify(candidate));
  await page.getByRole('button', { name: 'Check' }).click();
  await expect(page.getByTestId('compatibility-report')).toHaveAttribute('data-compatible', 'false');
  const verdict = await request.post(`${baseUrl()}/v1/event-types/${NAME}/compatibility`, { data: { schema: candidate } });
  const report = (await verdict.json()) as { violations: { rule: string; path: string }[] };
  expect(report.violations.length).toBeGreaterThan(0);
  for (const violation of report.violations) {
    await expect(page.getByTestId('violations')).toContainText(violation.rule);
    await expect(page.getByTestId('violations')).toContainText(violation.path);
  }
  await page.screenshot({ path: `${screenshotDir}event-type.png`, fullPage: true });
});
