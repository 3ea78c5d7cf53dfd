// What the address bar holds, and back.
//
// Every view's state lives in its URL so a copied link reopens the same view. Other tools (an
// alert, a runbook) build these links too, so parsing is forgiving about time formats but says
// plainly what it could not read.
//
//   /merchants/{merchant}?period=1h&api=/v1/payments&sort=-calls
//   /merchants/{merchant}?from=2026-11-21T15:00:00Z&to=1795280400000&at=2026-11-21T15:05:00Z&status=500
//   /?period=24h                      overview
//   /events/{corr_id}?period=7d       correlation id lookup

import {
  DEFAULT_PERIOD,
  formatTimeParam,
  parseTime,
  relativePeriod,
  type Period,
} from './period';

export interface SortSpec {
  /** A column key: "api", "calls", a status code such as "500", "error_rate", "p50", ... */
  column: string;
  descending: boolean;
}

export interface MerchantViewState {
  merchant: string;
  period: Period;
  /** Narrows the charts (and the raw calls) to one API. */
  api: string | null;
  sort: SortSpec | null;
  /** Start of the chart bucket whose raw calls are shown. */
  atMs: number | null;
  /** Only raw calls with this status code. */
  status: number | null;
  /** The raw calls panel is open for the whole period. */
  calls: boolean;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

const defaultPeriod = relativePeriod(DEFAULT_PERIOD) as Period;

/** Reads `period`, or `from`/`to`, from a query string; defaults to the last hour. */
export function parsePeriodParams(params: URLSearchParams): Parsed<Period> {
  const fromText = params.get('from');
  const toText = params.get('to');
  if (fromText !== null || toText !== null) {
    const fromMs = fromText === null || fromText === '' ? null : parseTime(fromText);
    const toMs = toText === null || toText === '' ? null : parseTime(toText);
    if (fromText && fromMs === null) return { ok: false, problem: timeProblem('from', fromText) };
    if (toText && toMs === null) return { ok: false, problem: timeProblem('to', toText) };
    return { ok: true, value: { kind: 'range', fromMs, toMs } };
  }
  const periodText = params.get('period');
  if (periodText === null || periodText === '') return { ok: true, value: defaultPeriod };
  const period = relativePeriod(periodText);
  if (!period) {
    return {
      ok: false,
      problem: `The period “${periodText}” is not one this page knows. Use a number followed by m, h or d, such as 15m, 6h or 7d.`,
    };
  }
  return { ok: true, value: period };
}

function timeProblem(name: string, text: string): string {
  return `The “${name}” time “${text}” is not a time this page can read. Use RFC 3339 (2026-11-21T15:00:00Z) or epoch milliseconds (1795273200000).`;
}

/** Writes a period into query parameters (relative as `period`, ranges as RFC 3339 from/to). */
export function writePeriodParams(params: URLSearchParams, period: Period): void {
  if (period.kind === 'relative') {
    params.set('period', period.id);
    return;
  }
  if (period.fromMs !== null) params.set('from', formatTimeParam(period.fromMs));
  if (period.toMs !== null) params.set('to', formatTimeParam(period.toMs));
}

export function parseSort(text: string | null): SortSpec | null {
  if (!text) return null;
  const descending = text.startsWith('-');
  const column = descending ? text.slice(1) : text;
  if (!/^[a-z0-9_]+$/.test(column)) return null;
  return { column, descending };
}

export function formatSort(sort: SortSpec): string {
  return (sort.descending ? '-' : '') + sort.column;
}

export function parseMerchantSearch(merchant: string, search: string): Parsed<MerchantViewState> {
  const params = new URLSearchParams(search);
  const period = parsePeriodParams(params);
  if (!period.ok) return period;
  const atText = params.get('at');
  let atMs: number | null = null;
  if (atText) {
    atMs = parseTime(atText);
    if (atMs === null) return { ok: false, problem: timeProblem('at', atText) };
  }
  const statusText = params.get('status');
  let status: number | null = null;
  if (statusText) {
    status = Number(statusText);
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      return {
        ok: false,
        problem: `The status “${statusText}” is not an HTTP status code (100 to 599).`,
      };
    }
  }
  const api = params.get('api');
  return {
    ok: true,
    value: {
      merchant,
      period: period.value,
      api: api === '' ? null : api,
      sort: parseSort(params.get('sort')),
      atMs,
      status,
      calls: params.get('calls') === '1',
    },
  };
}

/** The path and query of a merchant view; parameters in a fixed order so links compare equal. */
export function merchantHref(state: MerchantViewState): string {
  const params = new URLSearchParams();
  writePeriodParams(params, state.period);
  if (state.api !== null) params.set('api', state.api);
  if (state.sort !== null) params.set('sort', formatSort(state.sort));
  if (state.atMs !== null) params.set('at', formatTimeParam(state.atMs));
  if (state.status !== null) params.set('status', String(state.status));
  if (state.calls) params.set('calls', '1');
  return `/merchants/${encodeURIComponent(state.merchant)}?${queryString(params)}`;
}

/** A merchant view with nothing but the merchant and a period. */
export function merchantViewFor(merchant: string, period: Period): MerchantViewState {
  return { merchant, period, api: null, sort: null, atMs: null, status: null, calls: false };
}

export function overviewHref(period: Period): string {
  const params = new URLSearchParams();
  writePeriodParams(params, period);
  return `/?${queryString(params)}`;
}

export function eventTypeHref(name: string): string {
  return `/event-types/${encodeURIComponent(name)}`;
}

export function lookupHref(corrId: string, period?: Period): string {
  const path = `/events/${encodeURIComponent(corrId)}`;
  if (!period) return path;
  const params = new URLSearchParams();
  writePeriodParams(params, period);
  return `${path}?${queryString(params)}`;
}

/** URLSearchParams encodes "/" and ":" too; they are safe in a query and easier to read bare. */
function queryString(params: URLSearchParams): string {
  return params.toString().replace(/%2F/gi, '/').replace(/%3A/gi, ':');
}

export type Route =
  | { page: 'overview' }
  | { page: 'merchant'; merchant: string }
  | { page: 'lookup'; corrId: string | null }
  | { page: 'event-types' }
  | { page: 'event-type'; name: string }
  | { page: 'not-found' };

/** Which page a path shows. Paths are percent-decoded one segment at a time. */
export function matchRoute(pathname: string): Route {
  const segments = pathname.split('/').filter((segment) => segment !== '');
  const decoded = segments.map(safeDecode);
  if (decoded.some((segment) => segment === null)) return { page: 'not-found' };
  const parts = decoded as string[];
  if (parts.length === 0) return { page: 'overview' };
  if (parts[0] === 'merchants' && parts.length === 2) return { page: 'merchant', merchant: parts[1]! };
  if (parts[0] === 'merchants' && parts.length === 1) return { page: 'overview' };
  if (parts[0] === 'events' && parts.length <= 2) return { page: 'lookup', corrId: parts[1] ?? null };
  if (parts[0] === 'event-types' && parts.length === 1) return { page: 'event-types' };
  if (parts[0] === 'event-types' && parts.length === 2) return { page: 'event-type', name: parts[1]! };
  return { page: 'not-found' };
}

function safeDecode(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}
