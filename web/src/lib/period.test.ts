import { describe, expect, it } from 'vitest';
import {
  bucketCount,
  DAY_MS,
  HOUR_MS,
  MINUTE_MS,
  parseDuration,
  parseTime,
  formatTimeParam,
  periodProblem,
  relativePeriod,
  resolvePeriod,
  stepForSpan,
  isLive,
} from './period';

const NOW = Date.parse('2026-11-21T18:23:41.512Z');

describe('stepForSpan', () => {
  it.each([
    ['15m', '1m'],
    ['1h', '1m'],
    ['6h', '5m'],
    ['24h', '5m'],
    ['7d', '1h'],
    ['30d', '1d'],
  ])('picks %s → %s', (period, step) => {
    expect(stepForSpan(parseDuration(period)!)).toBe(step);
  });

  it('keeps every preset at or under 300 points', () => {
    for (const id of ['15m', '1h', '6h', '24h', '7d']) {
      const range = resolvePeriod(relativePeriod(id)!, NOW);
      expect(bucketCount(range)).toBeLessThanOrEqual(300);
    }
  });

  it('uses the finest step that fits a custom span', () => {
    expect(stepForSpan(5 * HOUR_MS)).toBe('1m');
    expect(stepForSpan(5 * HOUR_MS + MINUTE_MS)).toBe('5m');
    expect(stepForSpan(2 * DAY_MS)).toBe('1h');
  });
});

describe('resolvePeriod', () => {
  it('ends a relative period at the end of the bucket holding now', () => {
    const range = resolvePeriod(relativePeriod('1h')!, NOW);
    expect(new Date(range.toMs).toISOString()).toBe('2026-11-21T18:24:00.000Z');
    expect(new Date(range.fromMs).toISOString()).toBe('2026-11-21T17:24:00.000Z');
    expect(range.step).toBe('1m');
    expect(bucketCount(range)).toBe(60);
  });

  it('gives a preset exactly duration / step buckets', () => {
    expect(bucketCount(resolvePeriod(relativePeriod('15m')!, NOW))).toBe(15);
    expect(bucketCount(resolvePeriod(relativePeriod('6h')!, NOW))).toBe(72);
    expect(bucketCount(resolvePeriod(relativePeriod('24h')!, NOW))).toBe(288);
    const week = resolvePeriod(relativePeriod('7d')!, NOW);
    expect(week.step).toBe('1h');
    expect(new Date(week.toMs).toISOString()).toBe('2026-11-21T19:00:00.000Z');
    expect(bucketCount(week)).toBe(168);
  });

  it('fills a range without an end with now and without a start with an hour before the end', () => {
    const open = resolvePeriod({ kind: 'range', fromMs: NOW - 2 * HOUR_MS, toMs: null }, NOW);
    expect(open).toEqual({ fromMs: NOW - 2 * HOUR_MS, toMs: NOW, step: '1m' });
    const endOnly = resolvePeriod({ kind: 'range', fromMs: null, toMs: NOW }, NOW);
    expect(endOnly.fromMs).toBe(NOW - HOUR_MS);
  });

  it('counts buckets the way the API does for unaligned ranges', () => {
    // 15 minutes starting mid-minute touch 16 one-minute buckets.
    expect(bucketCount({ fromMs: NOW - 15 * MINUTE_MS, toMs: NOW, step: '1m' })).toBe(16);
    expect(bucketCount({ fromMs: NOW, toMs: NOW, step: '1m' })).toBe(0);
  });
});

describe('isLive and periodProblem', () => {
  it('treats relative periods and open-ended ranges as live', () => {
    expect(isLive(relativePeriod('1h')!)).toBe(true);
    expect(isLive({ kind: 'range', fromMs: 1, toMs: null })).toBe(true);
    expect(isLive({ kind: 'range', fromMs: 1, toMs: 2 })).toBe(false);
  });

  it('says plainly when a range starts after it ends', () => {
    const problem = periodProblem({ kind: 'range', fromMs: NOW, toMs: NOW - HOUR_MS }, NOW);
    expect(problem).toContain('starts');
    expect(problem).toContain('2026-11-21T18:23:41.512Z');
    expect(periodProblem({ kind: 'range', fromMs: NOW - HOUR_MS, toMs: NOW }, NOW)).toBeNull();
    expect(periodProblem({ kind: 'range', fromMs: NOW, toMs: NOW }, NOW)).not.toBeNull();
  });
});

describe('parseDuration', () => {
  it('reads minutes, hours and days', () => {
    expect(parseDuration('15m')).toBe(15 * MINUTE_MS);
    expect(parseDuration('6h')).toBe(6 * HOUR_MS);
    expect(parseDuration('7d')).toBe(7 * DAY_MS);
  });

  it('refuses anything else', () => {
    for (const text of ['', '0h', '1w', 'h', '-1h', '1.5h', '1 h']) expect(parseDuration(text)).toBeNull();
  });
});

describe('parseTime and formatTimeParam', () => {
  it('reads epoch milliseconds and RFC 3339 with zones and fractions', () => {
    expect(parseTime('1795273200000')).toBe(1795273200000);
    expect(parseTime('2026-11-21T15:00:00Z')).toBe(Date.parse('2026-11-21T15:00:00Z'));
    expect(parseTime('2026-11-21T16:00:00+01:00')).toBe(Date.parse('2026-11-21T15:00:00Z'));
    expect(parseTime('2026-11-21T15:00:00.123456Z')).toBe(Date.parse('2026-11-21T15:00:00.123Z'));
  });

  it('refuses dates without a zone and words', () => {
    expect(parseTime('2026-11-21T15:00:00')).toBeNull();
    expect(parseTime('yesterday')).toBeNull();
    expect(parseTime('2026-13-45T99:00:00Z')).toBeNull();
  });

  it('writes RFC 3339 UTC, without zero milliseconds', () => {
    expect(formatTimeParam(Date.parse('2026-11-21T15:00:00Z'))).toBe('2026-11-21T15:00:00Z');
    expect(formatTimeParam(Date.parse('2026-11-21T15:00:00.250Z'))).toBe('2026-11-21T15:00:00.250Z');
  });
});
