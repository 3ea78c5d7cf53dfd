// How numbers and times read on screen. One place, so the table, the tooltips and the lists agree.

const integerFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** 12345 → "12,345". */
export function formatCount(value: number): string {
  return integerFormat.format(value);
}

/**
 * A share as a percentage with enough digits to tell small rates apart:
 * 0 → "0%", 0.00064 → "0.06%", 0.0149 → "1.49%", 0.5 → "50.0%", 1 → "100%".
 */
export function formatRate(rate: number): string {
  if (!Number.isFinite(rate) || rate <= 0) return '0%';
  if (rate >= 1) return '100%';
  const percent = rate * 100;
  if (percent < 0.01) return '<0.01%';
  if (percent < 10) return `${percent.toFixed(2)}%`;
  return `${percent.toFixed(1)}%`;
}

/**
 * A latency: whole milliseconds up to 10 s, seconds above; "–" when there were no calls.
 * 0.4 → "0.4 ms", 183.1 → "183 ms", 1043.3 → "1,043 ms", 21813 → "21.8 s".
 */
export function formatLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1) return `${ms.toFixed(1)} ms`;
  if (ms < 10_000) return `${integerFormat.format(Math.round(ms))} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

const pad = (value: number, width = 2) => String(value).padStart(width, '0');

/** Local wall-clock time of day, "18:05" or with seconds "18:05:09". */
export function formatClock(ms: number, withSeconds = false): string {
  const date = new Date(ms);
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  return withSeconds ? `${clock}:${pad(date.getSeconds())}` : clock;
}

const monthNames = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Local date and time, "21 Nov 18:05". */
export function formatDateTime(ms: number, withSeconds = false): string {
  const date = new Date(ms);
  return `${date.getDate()} ${monthNames[date.getMonth()]} ${formatClock(ms, withSeconds)}`;
}

/** A precise local timestamp for raw calls: "2026-11-21 18:05:09.123". */
export function formatTimestamp(ms: number): string {
  const date = new Date(ms);
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${formatClock(ms, true)}.${pad(date.getMilliseconds(), 3)}`
  );
}

/** A range, leaving out the date of the end when it is the same day: "21 Nov 17:05 – 18:05". */
export function formatRange(fromMs: number, toMs: number): string {
  const from = new Date(fromMs);
  const to = new Date(toMs);
  const sameDay =
    from.getFullYear() === to.getFullYear() &&
    from.getMonth() === to.getMonth() &&
    from.getDate() === to.getDate();
  return `${formatDateTime(fromMs)} – ${sameDay ? formatClock(toMs) : formatDateTime(toMs)}`;
}

/** The browser's offset from UTC, "UTC", "UTC+1" or "UTC−5:30". */
export function formatUtcOffset(ms: number): string {
  const offsetMinutes = -new Date(ms).getTimezoneOffset();
  if (offsetMinutes === 0) return 'UTC';
  const sign = offsetMinutes > 0 ? '+' : '−';
  const hours = Math.floor(Math.abs(offsetMinutes) / 60);
  const minutes = Math.abs(offsetMinutes) % 60;
  return `UTC${sign}${hours}${minutes ? `:${pad(minutes)}` : ''}`;
}

/** "just now", "12 s ago", "3 min ago". */
export function formatAge(ageMs: number): string {
  const seconds = Math.round(ageMs / 1000);
  if (seconds < 3) return 'just now';
  if (seconds < 90) return `${seconds} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

/** Value for an <input type="datetime-local">, in local time: "2026-11-21T18:05". */
export function toDateTimeLocalValue(ms: number): string {
  const date = new Date(ms);
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${formatClock(ms)}`
  );
}

/** Reads an <input type="datetime-local"> value as local time; null when empty or unreadable. */
export function fromDateTimeLocalValue(value: string): number | null {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value);
  if (!match) return null;
  const [, year, month, day, hours, minutes, seconds] = match;
  const date = new Date(
    Number(year),
    Number(month) - 1,
    Number(day),
    Number(hours),
    Number(minutes),
    Number(seconds ?? 0),
  );
  return date.getTime();
}

const statusNames: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No Content',
  301: 'Moved Permanently',
  302: 'Found',
  304: 'Not Modified',
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  410: 'Gone',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** "402 Payment Required", or just "499" for codes without a well-known name. */
export function describeStatus(code: number): string {
  const name = statusNames[code];
  return name ? `${code} ${name}` : String(code);
}

/** "2xx", "4xx", ...: the class a status code belongs to. */
export function statusClass(code: number): '1xx' | '2xx' | '3xx' | '4xx' | '5xx' {
  if (code >= 500) return '5xx';
  if (code >= 400) return '4xx';
  if (code >= 300) return '3xx';
  if (code >= 200) return '2xx';
  return '1xx';
}
