// The one way the dashboard talks to the server.
//
// Every failure becomes an ApiError whose message can be shown to a person as it is: the
// server's own message for a rejected request, plain words for a server that is down, slow or
// answering something that is not the API.

import type { ResolvedRange } from '../lib/period';
import { announceTokenNeeded, readToken } from './token';
import type {
  ActivityResponse,
  ApisResponse,
  CallEvent,
  CompatibilityMode,
  CompatibilityReport,
  ErrorBody,
  EventsPage,
  EventType,
  EventTypeList,
  MerchantsResponse,
  SchemaList,
  SearchResponse,
  TypeStats,
} from './types';

export type ApiErrorKind =
  /** No answer at all, or a proxy in front of the server saying it is not there. */
  | 'unreachable'
  | 'timeout'
  /** The server needs a bearer token. */
  | 'unauthorized'
  /** The server answered with its error shape; `code` says which. */
  | 'rejected'
  /** An answer that is not what the API sends. */
  | 'bad-response';

export class ApiError extends Error {
  readonly kind: ApiErrorKind;
  /** HTTP status, 0 when there was no answer. */
  readonly status: number;
  /** The API's error code ("bad_request", "unknown_merchant", ...) or "" when there is none. */
  readonly code: string;

  constructor(kind: ApiErrorKind, message: string, status = 0, code = '') {
    super(message);
    this.name = 'ApiError';
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

/** How long one request may take before the dashboard gives up on it. */
export const REQUEST_TIMEOUT_MS = 15_000;

type Params = Record<string, string | number | null | undefined>;

export function buildUrl(path: string, params: Params = {}): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function isErrorBody(body: unknown): body is ErrorBody {
  if (typeof body !== 'object' || body === null || !('error' in body)) return false;
  const error = (body as { error: unknown }).error;
  return (
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { message?: unknown }).message === 'string'
  );
}

/**
 * GETs a JSON document. Rejects with an ApiError, or with the AbortError of `signal` when the
 * caller cancelled (callers ignore those).
 */
export function getJson<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  return requestJson<T>('GET', path, params, undefined, signal);
}

/** POSTs a JSON document and reads the JSON answer, failing as getJson does. */
export function postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  return requestJson<T>('POST', path, {}, body, signal);
}

async function requestJson<T>(
  method: 'GET' | 'POST',
  path: string,
  params: Params,
  requestBody: unknown,
  signal?: AbortSignal,
): Promise<T> {
  const url = buildUrl(path, params);
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), REQUEST_TIMEOUT_MS);
  const onCallerAbort = () => timeout.abort();
  signal?.addEventListener('abort', onCallerAbort);
  let response: Response;
  try {
    const headers: Record<string, string> = { accept: 'application/json' };
    const token = readToken();
    if (token) headers.authorization = `Bearer ${token}`;
    if (method === 'GET') {
      response = await fetch(url, { signal: timeout.signal, headers });
    } else {
      headers['content-type'] = 'application/json';
      response = await fetch(url, { method, signal: timeout.signal, headers, body: JSON.stringify(requestBody) });
    }
  } catch (error) {
    if (signal?.aborted) throw error;
    if (timeout.signal.aborted) {
      throw new ApiError(
        'timeout',
        `The server took more than ${REQUEST_TIMEOUT_MS / 1000} s to answer. It may be overloaded; the dashboard will try again.`,
      );
    }
    throw new ApiError(
      'unreachable',
      'The Merchant Monitor server cannot be reached. Check that it is running; the dashboard keeps trying.',
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onCallerAbort);
  }

  let body: unknown = undefined;
  const text = await response.text();
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }

  if (response.ok) {
    if (body === undefined) {
      throw new ApiError(
        'bad-response',
        `The server's answer to ${path} was not JSON. Is this address a Merchant Monitor server?`,
        response.status,
      );
    }
    return body as T;
  }

  if (response.status === 401 || response.status === 403) {
    announceTokenNeeded();
    throw new ApiError(
      'unauthorized',
      readToken()
        ? 'The server did not accept the access token. Enter a valid one above.'
        : 'This server asks for an access token. Enter one above.',
      response.status,
      isErrorBody(body) ? body.error.code : '',
    );
  }
  if (isErrorBody(body)) {
    throw new ApiError('rejected', body.error.message, response.status, body.error.code);
  }
  if (response.status >= 500) {
    throw new ApiError(
      'unreachable',
      `The Merchant Monitor server is not answering (HTTP ${response.status}). Check that it is running; the dashboard keeps trying.`,
      response.status,
    );
  }
  throw new ApiError(
    'bad-response',
    `The server answered HTTP ${response.status} to ${path}, without an explanation.`,
    response.status,
  );
}

const merchantPath = (merchant: string) => `/v1/merchants/${encodeURIComponent(merchant)}`;

export type MerchantSort = 'calls' | 'errors' | 'error_rate';

export function fetchTopMerchants(
  range: Pick<ResolvedRange, 'fromMs' | 'toMs'>,
  sort: MerchantSort,
  limit: number,
  signal?: AbortSignal,
): Promise<MerchantsResponse> {
  return getJson('/v1/merchants', { from: range.fromMs, to: range.toMs, sort, limit }, signal);
}

export async function searchMerchants(prefix: string, limit: number, signal?: AbortSignal): Promise<string[]> {
  const response = await getJson<SearchResponse>('/v1/merchants/search', { prefix, limit }, signal);
  return response.merchants;
}

export function fetchActivity(
  merchant: string,
  range: ResolvedRange,
  api: string | null,
  signal?: AbortSignal,
): Promise<ActivityResponse> {
  return getJson(
    `${merchantPath(merchant)}/activity`,
    { from: range.fromMs, to: range.toMs, step: range.step, api },
    signal,
  );
}

export function fetchApis(
  merchant: string,
  range: Pick<ResolvedRange, 'fromMs' | 'toMs'>,
  signal?: AbortSignal,
): Promise<ApisResponse> {
  return getJson(`${merchantPath(merchant)}/apis`, { from: range.fromMs, to: range.toMs }, signal);
}

export interface EventsQuery {
  fromMs: number;
  toMs: number;
  api?: string | null;
  status?: number | null;
  limit?: number;
  cursor?: string | null;
}

export function fetchEvents(merchant: string, query: EventsQuery, signal?: AbortSignal): Promise<EventsPage> {
  return getJson(
    `${merchantPath(merchant)}/events`,
    {
      from: query.fromMs,
      to: query.toMs,
      api: query.api,
      status: query.status,
      limit: query.limit,
      cursor: query.cursor,
    },
    signal,
  );
}

export async function lookupCorrelationId(
  corrId: string,
  range: Pick<ResolvedRange, 'fromMs' | 'toMs'>,
  signal?: AbortSignal,
): Promise<CallEvent[]> {
  const response = await getJson<{ events: CallEvent[] }>(
    `/v1/events/${encodeURIComponent(corrId)}`,
    { from: range.fromMs, to: range.toMs },
    signal,
  );
  return response.events;
}

export type MerchantCheck =
  /** `lastSeenMs`: the merchant's latest call, when the server says. */
  | { known: true; lastSeenMs: number | null }
  /** `similar`: known merchants whose names start like this one, for "did you mean". */
  | { known: false; similar: string[] };

/**
 * Whether the server has ever seen a merchant. Asks GET /v1/merchants/{merchant}; a server that
 * predates that endpoint answers its generic not_found, and then the name index is asked instead.
 */
export async function checkMerchant(merchant: string, signal?: AbortSignal): Promise<MerchantCheck> {
  try {
    const body = await getJson<{ merchant: string; last_seen?: string }>(merchantPath(merchant), {}, signal);
    const lastSeenMs = body.last_seen ? Date.parse(body.last_seen) : Number.NaN;
    return { known: true, lastSeenMs: Number.isNaN(lastSeenMs) ? null : lastSeenMs };
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    if (error.code === 'unknown_merchant') {
      return { known: false, similar: await similarMerchants(merchant, signal) };
    }
  }
  const candidates = await searchMerchants(merchant, 50, signal);
  if (candidates.includes(merchant)) return { known: true, lastSeenMs: null };
  return { known: false, similar: await similarMerchants(merchant, signal) };
}

/** Known merchants sharing the first letters of a name, closest prefix first. */
async function similarMerchants(merchant: string, signal?: AbortSignal): Promise<string[]> {
  for (let length = Math.min(merchant.length, 12); length >= 1; length = length > 4 ? length - 4 : length - 1) {
    const found = await searchMerchants(merchant.slice(0, length), 5, signal);
    if (found.length > 0) return found;
    if (length <= 2) break;
  }
  return [];
}

const eventTypePath = (name: string) => `/v1/event-types/${encodeURIComponent(name)}`;

export async function fetchEventTypes(signal?: AbortSignal): Promise<EventType[]> {
  return (await getJson<EventTypeList>('/v1/event-types', {}, signal)).event_types;
}

export function fetchEventType(name: string, signal?: AbortSignal): Promise<EventType> {
  return getJson(eventTypePath(name), {}, signal);
}

export async function fetchSchemas(name: string, signal?: AbortSignal): Promise<SchemaList['schemas']> {
  return (await getJson<SchemaList>(`${eventTypePath(name)}/schemas`, {}, signal)).schemas;
}

export function fetchTypeStats(name: string, signal?: AbortSignal): Promise<TypeStats> {
  return getJson(`${eventTypePath(name)}/stats`, {}, signal);
}

/** The registry's dry run of a candidate schema (under the type's mode, or `mode`). */
export function checkCompatibility(
  name: string,
  schema: unknown,
  mode: CompatibilityMode | null,
  signal?: AbortSignal,
): Promise<CompatibilityReport> {
  const body = mode ? { schema, compatibility_mode: mode } : { schema };
  return postJson(`${eventTypePath(name)}/compatibility`, body, signal);
}
