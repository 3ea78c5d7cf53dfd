// Periods, bucket sizes and time ranges.
//
// A period is either relative ("the last hour", moving with the clock) or a fixed range. Either
// way it resolves to a concrete `{ fromMs, toMs, step }` right before each request, so the chart
// and the table of one refresh always describe exactly the same span.

export type Step = '1m' | '5m' | '1h' | '1d';

export const MINUTE_MS = 60_000;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

export const STEP_MS: Record<Step, number> = {
  '1m': MINUTE_MS,
  '5m': 5 * MINUTE_MS,
  '1h': HOUR_MS,
  '1d': DAY_MS,
};

const STEPS_FINEST_FIRST: Step[] = ['1m', '5m', '1h', '1d'];

/** Most points a chart should draw; beyond this the next coarser bucket size is used. */
export const MAX_CHART_POINTS = 300;

/** The presets offered in the period picker. */
export const PRESET_PERIODS = [
  { id: '15m', label: '15 min' },
  { id: '1h', label: '1 h' },
  { id: '6h', label: '6 h' },
  { id: '24h', label: '24 h' },
  { id: '7d', label: '7 d' },
] as const;

export const DEFAULT_PERIOD = '1h';

export type Period =
  /** The last `durationMs`, ending now; `id` is how the URL spells it, e.g. "1h". */
  | { kind: 'relative'; id: string; durationMs: number }
  /**
   * A range. A missing `toMs` means "until now" (the range keeps moving); a missing `fromMs` means
   * one hour before the end, as the API does.
   */
  | { kind: 'range'; fromMs: number | null; toMs: number | null };

export interface ResolvedRange {
  fromMs: number;
  toMs: number;
  step: Step;
}

/**
 * Parses a relative duration as the URL spells it: a positive whole number followed by
 * m (minutes), h (hours) or d (days). Returns null when it is not one.
 */
export function parseDuration(text: string): number | null {
  const match = /^(\d{1,6})(m|h|d)$/.exec(text.trim());
  if (!match) return null;
  const amount = Number(match[1]);
  if (amount <= 0) return null;
  const unitMs = match[2] === 'm' ? MINUTE_MS : match[2] === 'h' ? HOUR_MS : DAY_MS;
  return amount * unitMs;
}

export function relativePeriod(id: string): Period | null {
  const durationMs = parseDuration(id);
  return durationMs === null ? null : { kind: 'relative', id, durationMs };
}

/**
 * The finest step that keeps the chart at or under MAX_CHART_POINTS points: 15 min and 1 h get
 * 1-minute buckets, 6 h and 24 h 5-minute buckets, 7 days hourly ones.
 */
export function stepForSpan(spanMs: number): Step {
  for (const step of STEPS_FINEST_FIRST) {
    if (Math.ceil(spanMs / STEP_MS[step]) <= MAX_CHART_POINTS) return step;
  }
  return '1d';
}

/** Number of buckets the API returns for a range: every bucket that overlaps [from, to). */
export function bucketCount(range: ResolvedRange): number {
  const stepMs = STEP_MS[range.step];
  if (range.toMs <= range.fromMs) return 0;
  return Math.floor((range.toMs - 1) / stepMs) - Math.floor(range.fromMs / stepMs) + 1;
}

/**
 * The concrete range a period stands for at `nowMs`.
 *
 * Relative periods end at the end of the bucket that holds "now", so the newest (still filling)
 * bucket is on the chart and a period of N steps is exactly N points.
 */
export function resolvePeriod(period: Period, nowMs: number): ResolvedRange {
  if (period.kind === 'relative') {
    const step = stepForSpan(period.durationMs);
    const stepMs = STEP_MS[step];
    const toMs = Math.floor(nowMs / stepMs) * stepMs + stepMs;
    return { fromMs: toMs - period.durationMs, toMs, step };
  }
  const toMs = period.toMs ?? nowMs;
  const fromMs = period.fromMs ?? toMs - HOUR_MS;
  return { fromMs, toMs, step: stepForSpan(toMs - fromMs) };
}

/** True when the period's end moves with the clock, so the view should refresh by itself. */
export function isLive(period: Period): boolean {
  return period.kind === 'relative' || period.toMs === null;
}

/** Why a period cannot be shown, in plain words; null when it is fine. */
export function periodProblem(period: Period, nowMs: number): string | null {
  if (period.kind === 'relative') return null;
  const { fromMs, toMs } = resolvePeriod(period, nowMs);
  if (fromMs >= toMs) {
    return `The period starts (${new Date(fromMs).toISOString()}) at or after it ends (${new Date(toMs).toISOString()}). Pick a start before the end.`;
  }
  return null;
}

/**
 * Parses a time as links spell it: epoch milliseconds ("1795273200000") or RFC 3339
 * ("2026-11-21T15:00:00Z", offsets and fractions allowed). Returns null when it is neither.
 */
export function parseTime(text: string): number | null {
  const trimmed = text.trim();
  if (/^\d{1,15}$/.test(trimmed)) return Number(trimmed);
  const rfc3339 =
    /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$/;
  if (!rfc3339.test(trimmed)) return null;
  // Date.parse does not take more than millisecond precision everywhere; trim the fraction.
  const normalised = trimmed.replace(/(\.\d{3})\d+/, '$1').replace(' ', 'T');
  const ms = Date.parse(normalised);
  return Number.isNaN(ms) ? null : ms;
}

/** How links spell a time: RFC 3339 in UTC, without milliseconds when they are zero. */
export function formatTimeParam(ms: number): string {
  const iso = new Date(ms).toISOString();
  return iso.endsWith('.000Z') ? iso.slice(0, -5) + 'Z' : iso;
}

/** A short human name for a period, e.g. "Last 1 h" or "Custom range". */
export function periodLabel(period: Period): string {
  if (period.kind === 'relative') {
    const preset = PRESET_PERIODS.find((candidate) => candidate.id === period.id);
    return `Last ${preset ? preset.label : period.id}`;
  }
  return period.toMs === null ? 'Since a time' : 'Custom range';
}
