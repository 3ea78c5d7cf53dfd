// The tests' view of the server started by global-setup.ts.

import { test as base, expect, type APIRequestContext } from '@playwright/test';

export const baseUrl = (): string => {
  const url = process.env.MM_E2E_BASE_URL;
  if (!url) throw new Error('MM_E2E_BASE_URL is not set: run the tests with `npm run e2e`');
  return url;
};

export const test = base.extend<{ api: <T>(path: string, params?: Record<string, string | number>) => Promise<T> }>({
  baseURL: async ({}, use) => use(baseUrl()),
  api: async ({ request }, use) => {
    await use(<T,>(path: string, params: Record<string, string | number> = {}) => getJson<T>(request, path, params));
  },
});

async function getJson<T>(request: APIRequestContext, path: string, params: Record<string, string | number>): Promise<T> {
  const query = new URLSearchParams(Object.entries(params).map(([name, value]) => [name, String(value)]));
  const response = await request.get(`${baseUrl()}${path}${query.size ? `?${query}` : ''}`);
  expect(response.status(), `GET ${path}`).toBe(200);
  return (await response.json()) as T;
}

export { expect };

export interface Bucket {
  start: string;
  calls: number;
  status_2xx: number;
  status_3xx: number;
  status_4xx: number;
  status_5xx: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
}

export interface ApiRow {
  api: string;
  calls: number;
  status: Record<string, number>;
}

export interface CallEvent {
  corr_id: string;
  merchant: string;
  ts: string;
  [field: string]: unknown;
}
