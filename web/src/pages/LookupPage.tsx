// Find the call(s) that carried a correlation id, with every field, and jump to the merchant's
// activity around that moment.

import { useEffect, useState, type FormEvent } from 'react';
import { lookupCorrelationId } from '../api/client';
import type { CallEvent } from '../api/types';
import { EventFields } from '../components/EventFields';
import { Notice } from '../components/Notice';
import { describeStatus, formatLatency, formatRange, formatTimestamp, statusClass } from '../lib/format';
import { DAY_MS, MINUTE_MS, relativePeriod, resolvePeriod, type Period } from '../lib/period';
import { usePolledQuery } from '../lib/usePolledQuery';
import { lookupHref, merchantHref, merchantViewFor, parsePeriodParams } from '../lib/urlState';
import { Link, navigate } from '../router';

/** "Activity around this call" shows this much either side of the call's minute. */
const AROUND_CALL_MS = 30 * MINUTE_MS;

const LOOKUP_PERIODS = [
  { id: '24h', label: 'Last 24 h' },
  { id: '7d', label: 'Last 7 days' },
  { id: '30d', label: 'Last 30 days' },
] as const;

interface LookupResult {
  fromMs: number;
  toMs: number;
  events: CallEvent[];
}

export function LookupPage({ corrId, search }: { corrId: string | null; search: string }) {
  const params = new URLSearchParams(search);
  const parsed = params.has('period') || params.has('from') || params.has('to') ? parsePeriodParams(params) : null;
  const period: Period = parsed?.ok ? parsed.value : relativePeriod('24h')!;
  const [text, setText] = useState(corrId ?? '');
  useEffect(() => setText(corrId ?? ''), [corrId]);
  useEffect(() => {
    document.title = corrId ? `${corrId} · Merchant Monitor` : 'Look up a call · Merchant Monitor';
  }, [corrId]);

  const key = corrId ? JSON.stringify([corrId, period]) : null;
  const query = usePolledQuery<LookupResult>(
    key,
    async (signal) => {
      const range = resolvePeriod(period, Date.now());
      const events = await lookupCorrelationId(corrId!, range, signal);
      return { fromMs: range.fromMs, toMs: range.toMs, events };
    },
    { refreshMs: null },
  );
  const result = query.dataKey === key ? query.data : undefined;
  const error = query.errorKey === key ? query.error : undefined;

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const id = text.trim();
    if (id === '') return;
    navigate(lookupHref(id, period.kind === 'relative' && period.id === '24h' ? undefined : period));
  };

  return (
    <div className="page lookup" data-testid="lookup">
      <div className="page-head">
        <div className="title-block">
          <p className="eyebrow">Correlation id</p>
          <h1 className="page-title">Look up a call</h1>
        </div>
      </div>
      <form className="lookup-form" onSubmit={submit} role="search">
        <input
          type="search"
          className="lookup-input mono"
          aria-label="Correlation id"
          placeholder="Paste a correlation id, e.g. 9ef23f7adda447943b8794948ea202f1"
          value={text}
          onChange={(event) => setText(event.target.value)}
          autoFocus={!corrId}
          spellCheck={false}
          autoComplete="off"
        />
        <div className="segmented" role="group" aria-label="Search in">
          {LOOKUP_PERIODS.map((option) => (
            <button
              key={option.id}
              type="button"
              aria-pressed={period.kind === 'relative' && period.id === option.id}
              onClick={() => {
                const id = (text.trim() || corrId) ?? '';
                const next = relativePeriod(option.id)!;
                if (id) navigate(lookupHref(id, next), { replace: id === corrId });
                else navigate(`/events?period=${option.id}`, { replace: true });
              }}
            >
              {option.label}
            </button>
          ))}
        </div>
        <button type="submit" className="primary">
          Look up
        </button>
      </form>
      {parsed && !parsed.ok ? <Notice tone="warning">{parsed.problem} Searching the last 24 hours instead.</Notice> : null}

      {!corrId ? (
        <Notice tone="info">
          Paste the correlation id from a log line, an alert or a merchant's support ticket. Any call of any merchant
          that carried it is shown with every field it was sent with.
        </Notice>
      ) : null}
      {corrId && error ? (
        <Notice tone="error" title="The lookup failed" testId="lookup-error">
          {error.message}
        </Notice>
      ) : null}
      {corrId && !result && !error ? <div className="skeleton-block" aria-busy="true" /> : null}
      {corrId && result && result.events.length === 0 ? (
        <Notice tone="empty" title="No call found" testId="lookup-empty">
          <p>
            No call with correlation id <code>{corrId}</code> between {formatRange(result.fromMs, result.toMs)}.
          </p>
          {!(period.kind === 'relative' && period.durationMs >= 30 * DAY_MS) ? (
            <p>
              <Link to={lookupHref(corrId, relativePeriod(period.kind === 'relative' && period.durationMs >= 7 * DAY_MS ? '30d' : '7d')!)}>
                Search further back
              </Link>
            </p>
          ) : null}
        </Notice>
      ) : null}
      {result && result.events.length > 0 ? (
        <>
          <p className="muted" data-testid="lookup-count">
            {result.events.length === 1 ? 'One call' : `${result.events.length} calls`} carried this correlation id.
          </p>
          {result.events.map((event, index) => (
            <EventCard key={`${event.ts}:${index}`} event={event} />
          ))}
        </>
      ) : null}
    </div>
  );
}

function EventCard({ event }: { event: CallEvent }) {
  const ms = Date.parse(event.ts);
  const minuteMs = Math.floor(ms / MINUTE_MS) * MINUTE_MS;
  const around = Number.isNaN(ms)
    ? null
    : merchantHref({
        ...merchantViewFor(event.merchant, {
          kind: 'range',
          fromMs: minuteMs - AROUND_CALL_MS,
          toMs: minuteMs + AROUND_CALL_MS,
        }),
        api: event.api,
        atMs: minuteMs,
      });
  return (
    <article className="panel event-card" data-testid="event-card" data-corr-id={event.corr_id}>
      <header className="panel-header">
        <span className={`status-badge status-${statusClass(event.status)}`}>{describeStatus(event.status)}</span>
        <h2 className="event-title">
          <span className="mono">{event.api}</span> · <Link to={merchantHref(merchantViewFor(event.merchant, relativePeriod('1h')!))}>{event.merchant}</Link>
        </h2>
        <span className="muted">
          {Number.isNaN(ms) ? event.ts : formatTimestamp(ms)} · {formatLatency(event.latency_ms)}
        </span>
        {around ? (
          <Link className="button push-right" to={around} title="The merchant's activity on this API, an hour around this call">
            Activity around this call
          </Link>
        ) : null}
      </header>
      <EventFields event={event} linkCorrId={false} />
    </article>
  );
}
