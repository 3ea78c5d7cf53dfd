import { describe, expect, it } from 'vitest';
import { relativePeriod } from './period';
import {
  lookupHref,
  matchRoute,
  merchantHref,
  merchantViewFor,
  overviewHref,
  parseMerchantSearch,
  parsePeriodParams,
  type MerchantViewState,
} from './urlState';

function roundTrip(state: MerchantViewState): MerchantViewState {
  const href = merchantHref(state);
  const url = new URL(href, 'http://dashboard.test');
  const route = matchRoute(url.pathname);
  if (route.page !== 'merchant') throw new Error(`${href} is not a merchant route`);
  const parsed = parseMerchantSearch(route.merchant, url.search);
  if (!parsed.ok) throw new Error(parsed.problem);
  return parsed.value;
}

describe('merchant view URLs', () => {
  it('round-trips a relative period with every filter', () => {
    const state: MerchantViewState = {
      merchant: 'DuffMobility718APP',
      period: relativePeriod('6h')!,
      api: '/v1/payments/{id}/captures',
      sort: { column: '500', descending: true },
      atMs: Date.parse('2026-11-21T17:05:00Z'),
      status: 502,
      calls: true,
    };
    expect(roundTrip(state)).toEqual(state);
  });

  it('round-trips a fixed range and odd merchant names', () => {
    const state: MerchantViewState = {
      ...merchantViewFor('Acme & Sons/EU 100%', {
        kind: 'range',
        fromMs: Date.parse('2026-11-21T15:00:00Z'),
        toMs: Date.parse('2026-11-21T16:30:00.500Z'),
      }),
      sort: { column: 'api', descending: false },
    };
    expect(roundTrip(state)).toEqual(state);
  });

  it('writes readable links that other tools can build', () => {
    const href = merchantHref({
      ...merchantViewFor('DuffMobility718APP', {
        kind: 'range',
        fromMs: Date.parse('2026-11-21T15:00:00Z'),
        toMs: Date.parse('2026-11-21T16:00:00Z'),
      }),
      api: '/v1/payments',
    });
    expect(href).toBe('/merchants/DuffMobility718APP?from=2026-11-21T15:00:00Z&to=2026-11-21T16:00:00Z&api=/v1/payments');
    expect(merchantHref(merchantViewFor('M', relativePeriod('1h')!))).toBe('/merchants/M?period=1h');
  });

  it('reads from/to given as epoch milliseconds', () => {
    const parsed = parseMerchantSearch('M', '?from=1795273200000&to=1795276800000&api=%2Fv1%2Frefunds');
    expect(parsed).toEqual({
      ok: true,
      value: {
        ...merchantViewFor('M', { kind: 'range', fromMs: 1795273200000, toMs: 1795276800000 }),
        api: '/v1/refunds',
      },
    });
  });

  it('prefers from/to over period and defaults to the last hour', () => {
    const both = parsePeriodParams(new URLSearchParams('period=7d&from=1795273200000'));
    expect(both).toEqual({ ok: true, value: { kind: 'range', fromMs: 1795273200000, toMs: null } });
    expect(parsePeriodParams(new URLSearchParams(''))).toEqual({ ok: true, value: relativePeriod('1h') });
  });

  it('explains what it cannot read', () => {
    const badFrom = parseMerchantSearch('M', '?from=last-tuesday&to=1795276800000');
    expect(badFrom.ok).toBe(false);
    if (!badFrom.ok) expect(badFrom.problem).toContain('“last-tuesday”');
    const badPeriod = parseMerchantSearch('M', '?period=fortnight');
    expect(badPeriod.ok).toBe(false);
    const badStatus = parseMerchantSearch('M', '?status=42');
    expect(badStatus.ok).toBe(false);
    if (!badStatus.ok) expect(badStatus.problem).toContain('100 to 599');
  });
});

describe('other routes', () => {
  it('maps paths to pages', () => {
    expect(matchRoute('/')).toEqual({ page: 'overview' });
    expect(matchRoute('/merchants/Acme%20%26%20Sons%2FEU')).toEqual({ page: 'merchant', merchant: 'Acme & Sons/EU' });
    expect(matchRoute('/events')).toEqual({ page: 'lookup', corrId: null });
    expect(matchRoute('/events/9ef23f7a')).toEqual({ page: 'lookup', corrId: '9ef23f7a' });
    expect(matchRoute('/nowhere/at/all')).toEqual({ page: 'not-found' });
    expect(matchRoute('/merchants/%E0%A4%A')).toEqual({ page: 'not-found' });
  });

  it('builds overview and lookup links', () => {
    expect(overviewHref(relativePeriod('24h')!)).toBe('/?period=24h');
    expect(lookupHref('abc 123')).toBe('/events/abc%20123');
    expect(lookupHref('abc', relativePeriod('7d')!)).toBe('/events/abc?period=7d');
  });
});
