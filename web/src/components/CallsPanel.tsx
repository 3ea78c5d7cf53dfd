// The raw calls behind a chart bucket or a status count, newest first, a page at a time. Each
// call opens to show every field it carried.

import { Fragment, useEffect, useState } from 'react';
import { fetchEvents } from '../api/client';
import type { CallEvent } from '../api/types';
import { formatCount, formatLatency, formatTimestamp, statusClass } from '../lib/format';
import { EventFields } from './EventFields';
import { Notice } from './Notice';

const PAGE_SIZE = 50;

interface CallsPanelProps {
  merchant: string;
  fromMs: number;
  toMs: number;
  api: string | null;
  status: number | null;
  title: string;
  onClose: () => void;
}

interface Loaded {
  key: string;
  events: CallEvent[];
  nextCursor: string | null;
}

export function CallsPanel({ merchant, fromMs, toMs, api, status, title, onClose }: CallsPanelProps) {
  const key = JSON.stringify([merchant, fromMs, toMs, api, status]);
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [openRows, setOpenRows] = useState<Set<string>>(() => new Set());
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const controller = new AbortController();
    setProblem(null);
    fetchEvents(merchant, { fromMs, toMs, api, status, limit: PAGE_SIZE }, controller.signal)
      .then((page) => {
        setLoaded({ key, events: page.events, nextCursor: page.next_cursor ?? null });
        setOpenRows(new Set());
      })
      .catch((error: unknown) => {
        if (controller.signal.aborted) return;
        setProblem(error instanceof Error ? error.message : String(error));
      });
    return () => controller.abort();
  }, [key, attempt, merchant, fromMs, toMs, api, status]);

  const loadMore = () => {
    if (!loaded?.nextCursor) return;
    setLoadingMore(true);
    fetchEvents(merchant, { fromMs, toMs, api, status, limit: PAGE_SIZE, cursor: loaded.nextCursor })
      .then((page) => {
        setLoaded((previous) =>
          previous && previous.key === key
            ? { key, events: [...previous.events, ...page.events], nextCursor: page.next_cursor ?? null }
            : previous,
        );
      })
      .catch((error: unknown) => setProblem(error instanceof Error ? error.message : String(error)))
      .finally(() => setLoadingMore(false));
  };

  const toggle = (rowKey: string) =>
    setOpenRows((previous) => {
      const next = new Set(previous);
      if (next.has(rowKey)) next.delete(rowKey);
      else next.add(rowKey);
      return next;
    });

  const current = loaded && loaded.key === key ? loaded : null;

  return (
    <section className="panel calls-panel" aria-labelledby="calls-title" data-testid="calls-panel">
      <header className="panel-header">
        <h2 id="calls-title">{title}</h2>
        <button type="button" className="ghost" onClick={onClose} aria-label="Close the calls">
          Close ✕
        </button>
      </header>
      {problem ? (
        <Notice tone="error" title="The calls could not be loaded">
          {problem}{' '}
          <button type="button" className="link-button" onClick={() => setAttempt((value) => value + 1)}>
            Try again
          </button>
        </Notice>
      ) : null}
      {!current && !problem ? <div className="skeleton-block" aria-busy="true" aria-label="Loading calls" /> : null}
      {current && current.events.length === 0 ? (
        <Notice tone="empty">No calls match in this span.</Notice>
      ) : null}
      {current && current.events.length > 0 ? (
        <>
          <div className="table-scroll">
            <table className="calls-table">
              <thead>
                <tr>
                  <th scope="col" className="text">
                    Time
                  </th>
                  <th scope="col" className="text">
                    API
                  </th>
                  <th scope="col" className="num">
                    Status
                  </th>
                  <th scope="col" className="num">
                    Latency
                  </th>
                  <th scope="col" className="text">
                    Correlation id
                  </th>
                </tr>
              </thead>
              <tbody>
                {current.events.map((event, index) => {
                  const rowKey = `${event.corr_id}:${event.ts}:${index}`;
                  const open = openRows.has(rowKey);
                  const ms = Date.parse(event.ts);
                  return (
                    <Fragment key={rowKey}>
                      <tr className="call-row" aria-expanded={open} onClick={() => toggle(rowKey)} data-corr-id={event.corr_id}>
                        <td className="text mono">
                          <button type="button" className="row-link" aria-expanded={open} onClick={(clickEvent) => { clickEvent.stopPropagation(); toggle(rowKey); }}>
                            <span className="disclosure" aria-hidden="true">{open ? '▾' : '▸'}</span>
                            {Number.isNaN(ms) ? event.ts : formatTimestamp(ms)}
                          </button>
                        </td>
                        <td className="text">{event.api}</td>
                        <td className={`num status-${statusClass(event.status)}`}>{event.status}</td>
                        <td className="num">{formatLatency(event.latency_ms)}</td>
                        <td className="text mono">{event.corr_id}</td>
                      </tr>
                      {open ? (
                        <tr className="call-details">
                          <td colSpan={5}>
                            <EventFields event={event} />
                          </td>
                        </tr>
                      ) : null}
                    </Fragment>
                  );
                })}
              </tbody>
            </table>
          </div>
          <footer className="panel-footer">
            <span className="muted">
              {formatCount(current.events.length)} call{current.events.length === 1 ? '' : 's'}
              {current.nextCursor ? ' shown, newest first' : ', newest first'}
            </span>
            {current.nextCursor ? (
              <button type="button" onClick={loadMore} disabled={loadingMore}>
                {loadingMore ? 'Loading…' : `Load ${PAGE_SIZE} more`}
              </button>
            ) : null}
          </footer>
        </>
      ) : null}
    </section>
  );
}
