import { describe, expect, it } from 'vitest';
import type { ApiRow } from '../api/types';
import { nextSort, sortRows, statusColumns, totals } from './apiTable';

function row(api: string, calls: number, status: Record<string, number>, p99: number | null = 100): ApiRow {
  const serverErrors = Object.entries(status)
    .filter(([code]) => Number(code) >= 500)
    .reduce((sum, [, count]) => sum + count, 0);
  return {
    api,
    calls,
    status,
    error_rate: calls === 0 ? 0 : serverErrors / calls,
    p50_ms: p99 === null ? null : p99 / 4,
    p95_ms: p99 === null ? null : p99 / 2,
    p99_ms: p99,
    max_ms: p99 === null ? null : p99 * 3,
  };
}

const rows = [
  row('/v1/payments', 621, { '201': 590, '400': 3, '402': 27, '500': 1 }, 1043),
  row('/v1/balance', 40, { '200': 38, '503': 2 }, 90),
  row('/v1/refunds', 300, { '201': 299, '422': 1 }, null),
];

describe('statusColumns', () => {
  it('always has 200 and 500, then every code that occurred, in numeric order', () => {
    expect(statusColumns(rows)).toEqual([200, 201, 400, 402, 422, 500, 503]);
  });

  it('keeps 200 and 500 when nothing was called', () => {
    expect(statusColumns([])).toEqual([200, 500]);
  });

  it('leaves out codes whose count is zero', () => {
    expect(statusColumns([row('/v1/x', 1, { '200': 1, '418': 0 })])).toEqual([200, 500]);
  });
});

describe('sortRows', () => {
  const names = (sorted: ApiRow[]) => sorted.map((entry) => entry.api);

  it('sorts by calls, largest first', () => {
    expect(names(sortRows(rows, { column: 'calls', descending: true }))).toEqual([
      '/v1/payments',
      '/v1/refunds',
      '/v1/balance',
    ]);
  });

  it('sorts by a status code column, absent codes counting as zero', () => {
    expect(names(sortRows(rows, { column: '503', descending: true }))).toEqual([
      '/v1/balance',
      '/v1/payments',
      '/v1/refunds',
    ]);
  });

  it('sorts names A→Z and back', () => {
    expect(names(sortRows(rows, { column: 'api', descending: false }))).toEqual([
      '/v1/balance',
      '/v1/payments',
      '/v1/refunds',
    ]);
    expect(names(sortRows(rows, { column: 'api', descending: true }))).toEqual([
      '/v1/refunds',
      '/v1/payments',
      '/v1/balance',
    ]);
  });

  it('puts missing latencies last in both directions', () => {
    expect(names(sortRows(rows, { column: 'p99', descending: true })).at(-1)).toBe('/v1/refunds');
    expect(names(sortRows(rows, { column: 'p99', descending: false })).at(-1)).toBe('/v1/refunds');
    expect(names(sortRows(rows, { column: 'p99', descending: false }))[0]).toBe('/v1/balance');
  });

  it('does not reorder the input', () => {
    const before = names(rows);
    sortRows(rows, { column: 'api', descending: false });
    expect(names(rows)).toEqual(before);
  });
});

describe('nextSort', () => {
  it('flips the current column and starts others in their natural order', () => {
    expect(nextSort({ column: 'calls', descending: true }, 'calls')).toEqual({ column: 'calls', descending: false });
    expect(nextSort({ column: 'calls', descending: true }, 'api')).toEqual({ column: 'api', descending: false });
    expect(nextSort({ column: 'api', descending: false }, '500')).toEqual({ column: '500', descending: true });
  });
});

describe('totals', () => {
  it('adds calls and codes and computes the 5xx share', () => {
    const sum = totals(rows);
    expect(sum.calls).toBe(961);
    expect(sum.status).toEqual({ '200': 38, '201': 889, '400': 3, '402': 27, '422': 1, '500': 1, '503': 2 });
    expect(sum.errorRate).toBeCloseTo(3 / 961, 10);
    expect(sum.maxMs).toBe(3129);
  });

  it('is zero without rows', () => {
    expect(totals([])).toEqual({ calls: 0, status: {}, errorRate: 0, maxMs: null });
  });
});
