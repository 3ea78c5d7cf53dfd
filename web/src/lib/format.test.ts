import { describe, expect, it } from 'vitest';
import { formatAxisLatency, formatCompactCount, summarise } from './activitySeries';
import {
  describeStatus,
  formatCount,
  formatLatency,
  formatRate,
  fromDateTimeLocalValue,
  statusClass,
  toDateTimeLocalValue,
} from './format';

describe('formatRate', () => {
  it.each([
    [0, '0%'],
    [0.00064, '0.06%'],
    [0.00001, '<0.01%'],
    [0.014975, '1.50%'],
    [0.1694, '16.9%'],
    [1, '100%'],
  ])('%s → %s', (rate, text) => {
    expect(formatRate(rate)).toBe(text);
  });
});

describe('formatLatency', () => {
  it.each([
    [null, '–'],
    [0.42, '0.4 ms'],
    [183.1, '183 ms'],
    [1043.3, '1,043 ms'],
    [21813.472, '21.8 s'],
  ])('%s → %s', (ms, text) => {
    expect(formatLatency(ms)).toBe(text);
  });
});

describe('counts and axis labels', () => {
  it('groups thousands', () => {
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(0)).toBe('0');
  });

  it('compacts axis counts', () => {
    expect(formatCompactCount(950)).toBe('950');
    expect(formatCompactCount(1200)).toBe('1.2k');
    expect(formatCompactCount(35_400)).toBe('35k');
    expect(formatCompactCount(1_500_000)).toBe('1.5M');
    expect(formatCompactCount(2.5)).toBe('2.5');
  });

  it('labels latency axes in ms and s', () => {
    expect(formatAxisLatency(10)).toBe('10 ms');
    expect(formatAxisLatency(1000)).toBe('1 s');
    expect(formatAxisLatency(1500)).toBe('1.5 s');
    expect(formatAxisLatency(0.5)).toBe('0.5 ms');
  });
});

describe('status codes', () => {
  it('names well-known codes and classes them', () => {
    expect(describeStatus(402)).toBe('402 Payment Required');
    expect(describeStatus(499)).toBe('499');
    expect(statusClass(201)).toBe('2xx');
    expect(statusClass(304)).toBe('3xx');
    expect(statusClass(429)).toBe('4xx');
    expect(statusClass(503)).toBe('5xx');
  });
});

describe('datetime-local values', () => {
  it('round-trips local time to the minute', () => {
    const ms = new Date(2026, 10, 21, 18, 5).getTime();
    expect(toDateTimeLocalValue(ms)).toBe('2026-11-21T18:05');
    expect(fromDateTimeLocalValue('2026-11-21T18:05')).toBe(ms);
    expect(fromDateTimeLocalValue('')).toBeNull();
  });
});

describe('summarise', () => {
  it('adds the buckets up and takes the slowest call', () => {
    const bucket = (calls: number, s5xx: number, max: number | null) => ({
      start: '2026-11-21T18:00:00.000Z',
      calls,
      status_2xx: calls - s5xx - 1,
      status_3xx: 0,
      status_4xx: 1,
      status_5xx: s5xx,
      error_rate: s5xx / calls,
      p50_ms: null,
      p95_ms: null,
      p99_ms: null,
      max_ms: max,
    });
    const summary = summarise([bucket(10, 1, 300), bucket(30, 2, 1200), { ...bucket(1, 0, null), calls: 0, status_2xx: 0, status_4xx: 0 }]);
    expect(summary.calls).toBe(40);
    expect(summary.status5xx).toBe(3);
    expect(summary.status4xx).toBe(2);
    expect(summary.errorRate).toBeCloseTo(3 / 40);
    expect(summary.maxMs).toBe(1200);
    expect(summary.peakCalls).toBe(30);
  });
});
