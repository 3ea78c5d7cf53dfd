// Response shapes of the Merchant Monitor HTTP API (see /openapi.json on the server).

import type { Step } from '../lib/period';

export interface MerchantRank {
  merchant: string;
  calls: number;
  /** 5xx calls. */
  errors: number;
  /** 5xx share of calls. */
  error_rate: number;
}

export interface MerchantsResponse {
  merchants: MerchantRank[];
}

export interface SearchResponse {
  merchants: string[];
  prefix?: string;
}

export interface ActivityBucket {
  start: string;
  calls: number;
  status_2xx: number;
  status_3xx: number;
  status_4xx: number;
  status_5xx: number;
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
}

export interface ActivityResponse {
  merchant: string;
  step: Step;
  api?: string;
  buckets: ActivityBucket[];
}

export interface ApiRow {
  api: string;
  calls: number;
  /** Calls per exact status code; codes that did not occur are absent. */
  status: Record<string, number>;
  /** 5xx share of calls. */
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
}

export interface ApisResponse {
  merchant: string;
  apis: ApiRow[];
}

/** One call as ingested: the mapped fields plus whatever else the record carried. */
export interface CallEvent {
  ts: string;
  merchant: string;
  api: string;
  status: number;
  latency_ms: number;
  corr_id: string;
  [field: string]: unknown;
}

export interface EventsPage {
  events: CallEvent[];
  merchant?: string;
  next_cursor?: string | null;
}

export interface ErrorBody {
  error: { code: string; message: string };
}
