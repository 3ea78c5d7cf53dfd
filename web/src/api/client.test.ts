import { afterEach, describe, expect, it, vi } from 'vitest';
import { installFakeServer } from '../test/fakeServer';
import { ApiError, buildUrl, checkMerchant, fetchActivity, getJson, REQUEST_TIMEOUT_MS } from './client';

afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

async function failure(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error('expected the request to fail');
}

describe('buildUrl', () => {
  it('leaves out empty parameters and encodes the rest', () => {
    expect(buildUrl('/v1/merchants', { from: 1, to: 2, api: null, sort: undefined, prefix: '' })).toBe('/v1/merchants?from=1&to=2');
    expect(buildUrl('/v1/x', { api: '/v1/payments/{id}' })).toBe('/v1/x?api=%2Fv1%2Fpayments%2F%7Bid%7D');
  });
});

describe('getJson', () => {
  it('returns the body of a 2xx answer', async () => {
    installFakeServer({ '/v1/merchants': () => ({ body: { merchants: [] } }) });
    await expect(getJson('/v1/merchants')).resolves.toEqual({ merchants: [] });
  });

  it("passes the server's own error message and code on", async () => {
    installFakeServer({
      '/v1/merchants/M/activity': () => ({
        status: 400,
        body: { error: { code: 'bad_request', message: 'step "7m" is not one of 1m, 5m, 1h, 1d' } },
      }),
    });
    const error = await failure(getJson('/v1/merchants/M/activity'));
    expect(error.kind).toBe('rejected');
    expect(error.status).toBe(400);
    expect(error.code).toBe('bad_request');
    expect(error.message).toBe('step "7m" is not one of 1m, 5m, 1h, 1d');
  });

  it('says the server cannot be reached when the network fails', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))));
    const error = await failure(getJson('/v1/merchants'));
    expect(error.kind).toBe('unreachable');
    expect(error.message).toContain('cannot be reached');
  });

  it('treats a proxy 502 without the API error shape as the server being down', async () => {
    installFakeServer({ '/v1/merchants': () => ({ status: 502, text: '<html>Bad Gateway</html>' }) });
    const error = await failure(getJson('/v1/merchants'));
    expect(error.kind).toBe('unreachable');
    expect(error.message).toContain('HTTP 502');
  });

  it('explains a token requirement', async () => {
    installFakeServer({
      '/v1/merchants': () => ({ status: 401, body: { error: { code: 'unauthorized', message: 'missing token' } } }),
    });
    const error = await failure(getJson('/v1/merchants'));
    expect(error.kind).toBe('unauthorized');
    expect(error.message).toContain('access token');
  });

  it('refuses a 200 that is not JSON', async () => {
    installFakeServer({ '/v1/merchants': () => ({ text: '<!doctype html><p>hello</p>' }) });
    const error = await failure(getJson('/v1/merchants'));
    expect(error.kind).toBe('bad-response');
    expect(error.message).toContain('not JSON');
  });

  it('gives up after the timeout', async () => {
    vi.useFakeTimers();
    vi.stubGlobal(
      'fetch',
      vi.fn(
        (_url: string, init: RequestInit) =>
          new Promise((_resolve, reject) => {
            init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
          }),
      ),
    );
    const pending = failure(getJson('/v1/merchants'));
    await vi.advanceTimersByTimeAsync(REQUEST_TIMEOUT_MS + 1);
    const error = await pending;
    expect(error.kind).toBe('timeout');
  });

  it("rethrows the caller's own cancellation untouched", async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(
        (_url: string, init: RequestInit) =>
          new Promise((_resolve, reject) => {
            init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
          }),
      ),
    );
    const controller = new AbortController();
    const pending = getJson('/v1/merchants', {}, controller.signal);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('endpoints', () => {
  it('asks for activity with explicit from, to and step', async () => {
    const server = installFakeServer({
      '/v1/merchants/[^/]+/activity': () => ({ body: { merchant: 'Acme/EU', step: '5m', buckets: [] } }),
    });
    await fetchActivity('Acme/EU', { fromMs: 1000, toMs: 2000, step: '5m' }, '/v1/payments');
    const request = server.requests[0]!;
    expect(request.pathname).toBe('/v1/merchants/Acme%2FEU/activity');
    expect(Object.fromEntries(request.searchParams)).toEqual({ from: '1000', to: '2000', step: '5m', api: '/v1/payments' });
  });
});

describe('checkMerchant', () => {
  it('knows a merchant the server knows', async () => {
    installFakeServer({
      '/v1/merchants/Known': () => ({ body: { merchant: 'Known', last_seen: '2026-11-21T18:30:00.000Z' } }),
    });
    await expect(checkMerchant('Known')).resolves.toEqual({ known: true, lastSeenMs: Date.parse('2026-11-21T18:30:00Z') });
  });

  it('reports an unknown merchant with look-alikes', async () => {
    const server = installFakeServer({
      '/v1/merchants/acmeauto556us': () => ({
        status: 404,
        body: { error: { code: 'unknown_merchant', message: 'no merchant acmeauto556us' } },
      }),
      '/v1/merchants/search': (url) => ({
        body: { merchants: url.searchParams.get('prefix')!.length <= 12 ? ['AcmeAuto556US'] : [] },
      }),
    });
    await expect(checkMerchant('acmeauto556us')).resolves.toEqual({ known: false, similar: ['AcmeAuto556US'] });
    expect(server.requests.some((url) => url.pathname === '/v1/merchants/search')).toBe(true);
  });

  it('falls back to the name index on a server without the merchant endpoint', async () => {
    installFakeServer({
      '/v1/merchants/search': (url) => ({
        body: { merchants: url.searchParams.get('prefix') === 'AcmeAuto556US' ? ['AcmeAuto556US', 'AcmeAuto556USX'] : [] },
      }),
    });
    await expect(checkMerchant('AcmeAuto556US')).resolves.toEqual({ known: true, lastSeenMs: null });
    await expect(checkMerchant('Nobody')).resolves.toEqual({ known: false, similar: [] });
  });

  it('lets other failures through', async () => {
    installFakeServer({ '/v1/merchants/M': () => ({ status: 503, text: '' }) });
    const error = await failure(checkMerchant('M'));
    expect(error.kind).toBe('unreachable');
  });
});
