// Activity buckets → chart columns and the summary strip above the charts.

import type { ActivityBucket } from '../api/types';

export interface ActivityColumns {
  /** Bucket starts, epoch ms. */
  xs: number[];
  total: number[];
  status2xx: number[];
  status3xx: number[];
  status4xx: number[];
  status5xx: number[];
  p50: (number | null)[];
  p95: (number | null)[];
  p99: (number | null)[];
  max: (number | null)[];
}

export function activityColumns(buckets: ActivityBucket[]): ActivityColumns {
  return {
    xs: buckets.map((bucket) => Date.parse(bucket.start)),
    total: buckets.map((bucket) => bucket.calls),
    status2xx: buckets.map((bucket) => bucket.status_2xx),
    status3xx: buckets.map((bucket) => bucket.status_3xx),
    status4xx: buckets.map((bucket) => bucket.status_4xx),
    status5xx: buckets.map((bucket) => bucket.status_5xx),
    p50: buckets.map((bucket) => bucket.p50_ms),
    p95: buckets.map((bucket) => bucket.p95_ms),
    p99: buckets.map((bucket) => bucket.p99_ms),
    max: buckets.map((bucket) => bucket.max_ms),
  };
}

export interface ActivitySummary {
  calls: number;
  status2xx: number;
  status3xx: number;
  status4xx: number;
  status5xx: number;
  /** 5xx share of calls. */
  errorRate: number;
  /** Slowest single call; null without calls. */
  maxMs: number | null;
  /** Busiest bucket's call count. */
  peakCalls: number;
}

export function summarise(buckets: ActivityBucket[]): ActivitySummary {
  const summary: ActivitySummary = {
    calls: 0,
    status2xx: 0,
    status3xx: 0,
    status4xx: 0,
    status5xx: 0,
    errorRate: 0,
    maxMs: null,
    peakCalls: 0,
  };
  for (const bucket of buckets) {
    summary.calls += bucket.calls;
    summary.status2xx += bucket.status_2xx;
    summary.status3xx += bucket.status_3xx;
    summary.status4xx += bucket.status_4xx;
    summary.status5xx += bucket.status_5xx;
    summary.peakCalls = Math.max(summary.peakCalls, bucket.calls);
    if (bucket.max_ms !== null && (summary.maxMs === null || bucket.max_ms > summary.maxMs)) {
      summary.maxMs = bucket.max_ms;
    }
  }
  summary.errorRate = summary.calls === 0 ? 0 : summary.status5xx / summary.calls;
  return summary;
}

/** Axis labels for counts: 950, 1.2k, 35k, 1.5M. */
export function formatCompactCount(value: number): string {
  const magnitude = Math.abs(value);
  if (magnitude >= 1_000_000) return `${trimZero((value / 1_000_000).toFixed(1))}M`;
  if (magnitude >= 10_000) return `${Math.round(value / 1000)}k`;
  if (magnitude >= 1000) return `${trimZero((value / 1000).toFixed(1))}k`;
  if (Number.isInteger(value)) return String(value);
  return trimZero(value.toFixed(1));
}

/** Axis labels for latency: 0.5 ms, 20 ms, 1 s, 1.5 s. */
export function formatAxisLatency(ms: number): string {
  if (ms >= 1000) return `${trimZero((ms / 1000).toFixed(1))} s`;
  if (ms >= 1) return `${Math.round(ms)} ms`;
  return `${trimZero(ms.toFixed(2))} ms`;
}

function trimZero(text: string): string {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}
