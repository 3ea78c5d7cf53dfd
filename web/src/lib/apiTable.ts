// The per-API table's columns, totals and ordering, kept apart from rendering so they can be
// checked on their own.

import type { ApiRow } from '../api/types';
import type { SortSpec } from './urlState';

/** Status codes that always get a column, so "how many 200s and 500s" is answered at a glance. */
export const ALWAYS_SHOWN_STATUS_CODES = [200, 500];

/**
 * The status-code columns for a set of rows: 200 and 500, plus every code that occurred in any
 * row, in numeric order.
 */
export function statusColumns(rows: ApiRow[]): number[] {
  const codes = new Set<number>(ALWAYS_SHOWN_STATUS_CODES);
  for (const row of rows) {
    for (const [code, count] of Object.entries(row.status)) {
      const numeric = Number(code);
      if (count > 0 && Number.isInteger(numeric)) codes.add(numeric);
    }
  }
  return [...codes].sort((left, right) => left - right);
}

export function statusCount(row: ApiRow, code: number): number {
  return row.status[String(code)] ?? 0;
}

/** Non-status columns; status codes are keyed by their number ("500"). */
export const FIXED_COLUMNS = ['api', 'calls', 'error_rate', 'p50', 'p95', 'p99', 'max'] as const;

/** The order a column sorts in on its first click: names A→Z, numbers largest first. */
export function defaultDescending(column: string): boolean {
  return column !== 'api';
}

export const DEFAULT_SORT: SortSpec = { column: 'calls', descending: true };

/** Value of a column for sorting; null sorts last in either direction. */
function sortValue(row: ApiRow, column: string): number | string | null {
  switch (column) {
    case 'api':
      return row.api;
    case 'calls':
      return row.calls;
    case 'error_rate':
      return row.error_rate;
    case 'p50':
      return row.p50_ms;
    case 'p95':
      return row.p95_ms;
    case 'p99':
      return row.p99_ms;
    case 'max':
      return row.max_ms;
    default: {
      const code = Number(column);
      return Number.isInteger(code) ? statusCount(row, code) : null;
    }
  }
}

/** Rows in the requested order; ties (and unknown columns) fall back to the API name. */
export function sortRows(rows: ApiRow[], sort: SortSpec): ApiRow[] {
  const direction = sort.descending ? -1 : 1;
  return [...rows].sort((left, right) => {
    const leftValue = sortValue(left, sort.column);
    const rightValue = sortValue(right, sort.column);
    if (leftValue !== rightValue) {
      if (leftValue === null) return 1;
      if (rightValue === null) return -1;
      if (typeof leftValue === 'string' && typeof rightValue === 'string') {
        return direction * leftValue.localeCompare(rightValue);
      }
      if (leftValue < rightValue) return -direction;
      if (leftValue > rightValue) return direction;
    }
    return left.api.localeCompare(right.api);
  });
}

/** The next sort after clicking a column header: flip it if it is the current one. */
export function nextSort(current: SortSpec, column: string): SortSpec {
  if (current.column === column) return { column, descending: !current.descending };
  return { column, descending: defaultDescending(column) };
}

export interface Totals {
  calls: number;
  status: Record<string, number>;
  /** 5xx share of all calls. */
  errorRate: number;
  maxMs: number | null;
}

/**
 * Sums over all APIs. Percentiles do not add up, so the totals row leaves them out; the
 * merchant-wide percentiles are on the latency chart.
 */
export function totals(rows: ApiRow[]): Totals {
  const status: Record<string, number> = {};
  let calls = 0;
  let serverErrors = 0;
  let maxMs: number | null = null;
  for (const row of rows) {
    calls += row.calls;
    for (const [code, count] of Object.entries(row.status)) {
      status[code] = (status[code] ?? 0) + count;
      if (Number(code) >= 500) serverErrors += count;
    }
    if (row.max_ms !== null && (maxMs === null || row.max_ms > maxMs)) maxMs = row.max_ms;
  }
  return { calls, status, errorRate: calls === 0 ? 0 : serverErrors / calls, maxMs };
}
