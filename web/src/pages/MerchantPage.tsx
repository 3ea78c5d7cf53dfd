// One merchant: calls and latency over the period, every API it called, and the raw calls behind
// any point. Everything on screen is in the URL, so the address can be shared as it is.

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { checkMerchant, fetchActivity, fetchApis, type MerchantCheck } from '../api/client';
import type { ActivityResponse, ApisResponse } from '../api/types';
import { ApiTable } from '../components/ApiTable';
import { CallsPanel } from '../components/CallsPanel';
import { CopyLinkButtons } from '../components/CopyLinkButtons';
import { LiveStatus } from '../components/LiveStatus';
import { Notice } from '../components/Notice';
import { PeriodPicker } from '../components/PeriodPicker';
import { TimeChart, type ChartSeries, type TooltipRow } from '../components/TimeChart';
import { DEFAULT_SORT } from '../lib/apiTable';
import { activityColumns, formatAxisLatency, formatCompactCount, summarise } from '../lib/activitySeries';
import {
  formatClock,
  formatCount,
  formatDateTime,
  formatLatency,
  formatRange,
  formatRate,
  formatUtcOffset,
} from '../lib/format';
import {
  HOUR_MS,
  isLive,
  MINUTE_MS,
  periodLabel,
  periodProblem,
  resolvePeriod,
  STEP_MS,
  type Period,
  type ResolvedRange,
  type Step,
} from '../lib/period';
import { rememberMerchant } from '../lib/recent';
import type { Theme } from '../lib/theme';
import { usePolledQuery } from '../lib/usePolledQuery';
import {
  merchantHref,
  merchantViewFor,
  parseMerchantSearch,
  type MerchantViewState,
} from '../lib/urlState';
import { Link, navigate } from '../router';

/** How often a live view refreshes. */
export const REFRESH_MS = 10_000;

interface MerchantData {
  range: ResolvedRange;
  activity: ActivityResponse;
  apis: ApisResponse;
}

const STEP_WORDS: Record<Step, string> = {
  '1m': 'minute',
  '5m': '5 minutes',
  '1h': 'hour',
  '1d': 'day',
};

function periodKey(period: Period): string {
  return period.kind === 'relative' ? period.id : `${period.fromMs ?? ''}~${period.toMs ?? ''}`;
}

/** Set once per page load, when the first merchant view has drawn its data. */
let firstRenderMarked = false;

function markFirstRender() {
  if (firstRenderMarked) return;
  firstRenderMarked = true;
  // After the next frame, the chart canvases and the table have been painted.
  requestAnimationFrame(() => {
    performance.mark('mm-merchant-view-ready');
    document.documentElement.dataset.merchantViewReadyMs = String(Math.round(performance.now()));
  });
}

export function MerchantPage({ merchant, search, theme }: { merchant: string; search: string; theme: Theme }) {
  const parsed = parseMerchantSearch(merchant, search);
  useEffect(() => {
    document.title = `${merchant} · Merchant Monitor`;
  }, [merchant]);

  if (!parsed.ok) {
    return (
      <div className="page">
        <h1 className="page-title">{merchant}</h1>
        <Notice tone="error" title="This link has a problem" testId="view-problem">
          <p>{parsed.problem}</p>
          <p>
            <Link to={merchantHref(merchantViewFor(merchant, { kind: 'relative', id: '1h', durationMs: 3_600_000 }))}>
              Show the last hour instead
            </Link>
          </p>
        </Notice>
      </div>
    );
  }
  return <MerchantView state={parsed.value} theme={theme} />;
}

function MerchantView({ state, theme }: { state: MerchantViewState; theme: Theme }) {
  const { merchant, period, api } = state;
  const [paused, setPaused] = useState(false);
  const problem = periodProblem(period, Date.now());

  const update = useCallback(
    (changes: Partial<MerchantViewState>, options: { replace?: boolean } = {}) => {
      navigate(merchantHref({ ...state, ...changes }), options);
    },
    [state],
  );

  const check = usePolledQuery<MerchantCheck>(
    `check:${merchant}`,
    (signal) => checkMerchant(merchant, signal),
    { refreshMs: null },
  );
  const known = check.dataKey === `check:${merchant}` && check.data?.known === true;
  useEffect(() => {
    if (known) rememberMerchant(merchant);
  }, [known, merchant]);

  const unknown = check.dataKey === `check:${merchant}` && check.data && !check.data.known ? check.data : null;
  const dataKey = problem || unknown ? null : JSON.stringify([merchant, periodKey(period), api]);
  const view = usePolledQuery<MerchantData>(
    dataKey,
    async (signal) => {
      const range = resolvePeriod(period, Date.now());
      const [activity, apis] = await Promise.all([
        fetchActivity(merchant, range, api, signal),
        fetchApis(merchant, range, signal),
      ]);
      return { range, activity, apis };
    },
    { refreshMs: isLive(period) && !paused ? REFRESH_MS : null },
  );

  // Data of the same merchant for an earlier period or filter stays up, dimmed, until the new
  // answer arrives; another merchant's data never shows under this one's name.
  const data = view.data && view.data.activity.merchant === merchant ? view.data : undefined;
  const isCurrent = data !== undefined && view.dataKey === dataKey;
  const viewError = view.errorKey === dataKey ? view.error : undefined;

  const columns = useMemo(() => (data ? activityColumns(data.activity.buckets) : null), [data]);
  const summary = useMemo(() => (data ? summarise(data.activity.buckets) : null), [data]);
  const seriesForCalls = useMemo(() => (columns ? callSeries(columns) : []), [columns]);
  const seriesForLatency = useMemo(() => (columns ? latencySeries(columns) : []), [columns]);

  useEffect(() => {
    if (isCurrent && check.data?.known) markFirstRender();
  }, [isCurrent, check.data]);

  const callsPanelRef = useRef<HTMLDivElement>(null);
  const callsOpen = state.atMs !== null || state.status !== null || state.calls;
  useEffect(() => {
    if (callsOpen) callsPanelRef.current?.scrollIntoView?.({ block: 'nearest', behavior: 'smooth' });
  }, [callsOpen, state.atMs, state.status]);

  const header = (
    <div className="page-head">
      <div className="title-block">
        <p className="eyebrow">Merchant</p>
        <h1 className="page-title" data-testid="merchant-name">
          {merchant}
        </h1>
      </div>
      <div className="head-controls">
        <PeriodPicker period={period} onChange={(next) => update({ period: next, atMs: null })} />
        <div className="head-meta" hidden={unknown !== null}>
          {data ? (
            <span className="range-text" data-testid="range-text">
              {formatRange(data.range.fromMs, data.range.toMs)} {formatUtcOffset(data.range.fromMs)} ·{' '}
              {periodLabel(period)} · per {STEP_WORDS[data.range.step]}
            </span>
          ) : null}
          <LiveStatus
            live={isLive(period)}
            paused={paused}
            onTogglePause={() => setPaused((value) => !value)}
            updatedAt={view.updatedAt}
            failing={viewError !== undefined}
          />
          <CopyLinkButtons fixedHref={data && isLive(period) ? merchantHref({ ...state, period: { kind: 'range', fromMs: data.range.fromMs, toMs: data.range.toMs } }) : null} />
        </div>
      </div>
    </div>
  );

  // A problem with the link itself is known at once and outranks the merchant check, which
  // answers later: otherwise the check landing would replace this notice with "Unknown merchant".
  if (problem) {
    return (
      <div className="page">
        {header}
        <Notice tone="error" title="This period cannot be shown" testId="view-problem">
          {problem}
        </Notice>
      </div>
    );
  }

  if (unknown) {
    return (
      <div className="page">
        {header}
        <Notice tone="error" title="Unknown merchant" testId="unknown-merchant">
          <p>
            This server has never received a call from a merchant account called <strong>“{merchant}”</strong>. Merchant
            accounts are matched exactly, including upper and lower case.
          </p>
          {unknown.similar.length > 0 ? (
            <p>
              Did you mean{' '}
              {unknown.similar.map((candidate, index) => (
                <span key={candidate}>
                  {index > 0 ? ', ' : ''}
                  <Link to={merchantHref(merchantViewFor(candidate, period))}>{candidate}</Link>
                </span>
              ))}
              ?
            </p>
          ) : (
            <p>Type a few letters in the search box at the top to see the merchants it knows.</p>
          )}
        </Notice>
      </div>
    );
  }

  const blockingError = !data ? (viewError ?? (check.errorKey === `check:${merchant}` ? check.error : undefined)) : undefined;
  if (blockingError) {
    return (
      <div className="page">
        {header}
        <Notice tone="error" title="The merchant's activity could not be loaded" testId="view-error">
          {blockingError.message}
        </Notice>
      </div>
    );
  }

  if (!data || !columns || !summary) {
    return (
      <div className="page" aria-busy="true">
        {header}
        <div className="kpis skeleton-row" />
        <div className="charts">
          <div className="chart skeleton-chart" />
          <div className="chart skeleton-chart" />
        </div>
        <div className="skeleton-block" />
      </div>
    );
  }

  const { range } = data;
  const lastSeenMs = check.data?.known ? check.data.lastSeenMs : null;
  const lastSeenMinute = lastSeenMs === null ? 0 : Math.floor(lastSeenMs / MINUTE_MS) * MINUTE_MS;
  const stepMs = STEP_MS[range.step];
  const bucketTitle = (index: number) => {
    const start = columns.xs[index] ?? 0;
    // The bucket holding "now" is still filling up; say so, or its low count reads as a drop.
    const inProgress = Date.now() < start + stepMs;
    return `${formatDateTime(start)} – ${formatClock(start + stepMs)}${inProgress ? ' · in progress' : ''}`;
  };
  const describeCalls = (index: number): { title: string; rows: TooltipRow[] } => {
    const rows: TooltipRow[] = [
      { label: 'Total', value: formatCount(columns.total[index] ?? 0), colorVar: '--series-total' },
      { label: '2xx', value: formatCount(columns.status2xx[index] ?? 0), colorVar: '--series-2xx' },
    ];
    if ((columns.status3xx[index] ?? 0) > 0) {
      rows.push({ label: '3xx', value: formatCount(columns.status3xx[index] ?? 0), colorVar: '--series-3xx' });
    }
    rows.push(
      { label: '4xx', value: formatCount(columns.status4xx[index] ?? 0), colorVar: '--series-4xx' },
      { label: '5xx', value: formatCount(columns.status5xx[index] ?? 0), colorVar: '--series-5xx' },
      { label: 'Error rate', value: formatRate(data.activity.buckets[index]?.error_rate ?? 0) },
    );
    return { title: bucketTitle(index), rows };
  };
  const describeLatency = (index: number): { title: string; rows: TooltipRow[] } => ({
    title: bucketTitle(index),
    rows: [
      { label: 'p50', value: formatLatency(columns.p50[index]), colorVar: '--series-p50' },
      { label: 'p95', value: formatLatency(columns.p95[index]), colorVar: '--series-p95' },
      { label: 'p99', value: formatLatency(columns.p99[index]), colorVar: '--series-p99' },
      { label: 'Max', value: formatLatency(columns.max[index]) },
      { label: 'Calls', value: formatCount(columns.total[index] ?? 0) },
    ],
  });

  const chartAttributes = {
    from: range.fromMs,
    to: range.toMs,
    step: range.step,
    api: api ?? '',
  };
  const apiRows = data.apis.apis;
  const selectedMissing = api !== null && !apiRows.some((row) => row.api === api);

  const callsRange = state.atMs !== null ? { fromMs: state.atMs, toMs: state.atMs + stepMs } : range;
  const callsTitle =
    (state.atMs !== null ? `Calls ${formatDateTime(state.atMs)} – ${formatClock(state.atMs + stepMs)}` : 'Calls in the period') +
    (api ? ` to ${api}` : '') +
    (state.status !== null ? ` answered ${state.status}` : '');

  return (
    <div className={`page${isCurrent ? '' : ' stale'}`} data-testid="merchant-view" data-current={isCurrent}>
      {header}
      {viewError ? (
        <Notice tone="warning" testId="refresh-problem">
          Could not refresh: {viewError.message} Showing data from {view.updatedAt ? formatClock(view.updatedAt, true) : 'earlier'}.
        </Notice>
      ) : null}
      {api ? (
        <div className="filter-bar">
          <span className="chip" data-testid="api-filter">
            API <strong>{api}</strong>
            <button type="button" aria-label="Show all APIs" title="Show all APIs" onClick={() => update({ api: null, status: null })}>
              ✕
            </button>
          </span>
        </div>
      ) : null}

      <dl className="kpis" data-testid="kpis">
        <Kpi label="Calls" value={formatCount(summary.calls)} />
        <Kpi label="2xx" value={formatCount(summary.status2xx)} tone="ok" />
        {summary.status3xx > 0 ? <Kpi label="3xx" value={formatCount(summary.status3xx)} /> : null}
        <Kpi label="4xx" value={formatCount(summary.status4xx)} tone="warn" />
        <Kpi label="5xx" value={formatCount(summary.status5xx)} tone="bad" />
        <Kpi label="Error rate (5xx)" value={formatRate(summary.errorRate)} />
        <Kpi label="Slowest call" value={formatLatency(summary.maxMs)} />
      </dl>

      {summary.calls === 0 ? (
        <Notice tone="empty" testId="no-calls">
          {api ? `${merchant} made no calls to ${api} in this period.` : `${merchant} made no calls in this period.`}{' '}
          {lastSeenMs !== null && lastSeenMs < range.fromMs ? (
            <>
              Its latest call was at {formatDateTime(lastSeenMs)}:{' '}
              <Link
                to={merchantHref({
                  ...state,
                  period: { kind: 'range', fromMs: lastSeenMinute - HOUR_MS + MINUTE_MS, toMs: lastSeenMinute + MINUTE_MS },
                  atMs: null,
                })}
              >
                show the hour up to it
              </Link>
              .
            </>
          ) : (
            'Pick a longer period to see older activity.'
          )}
        </Notice>
      ) : null}

      <div className="charts">
        <TimeChart
          name="calls"
          title={`Calls per ${STEP_WORDS[range.step]}`}
          xs={columns.xs}
          series={seriesForCalls}
          stepMs={stepMs}
          formatValue={formatCompactCount}
          theme={theme}
          syncKey="merchant"
          describeBucket={describeCalls}
          onPickBucket={(startMs) => update({ atMs: startMs })}
          onPickRange={(fromMs, toMs) => update({ period: { kind: 'range', fromMs, toMs }, atMs: null })}
          dataAttributes={chartAttributes}
        />
        <TimeChart
          name="latency"
          title="Latency (log scale)"
          xs={columns.xs}
          series={seriesForLatency}
          stepMs={stepMs}
          formatValue={formatAxisLatency}
          logScale
          theme={theme}
          syncKey="merchant"
          describeBucket={describeLatency}
          onPickBucket={(startMs) => update({ atMs: startMs })}
          onPickRange={(fromMs, toMs) => update({ period: { kind: 'range', fromMs, toMs }, atMs: null })}
          dataAttributes={chartAttributes}
          emptyMessage={summary.calls === 0 ? 'No calls, so no latency' : null}
        />
      </div>

      {callsOpen ? (
        <div ref={callsPanelRef}>
          <CallsPanel
            merchant={merchant}
            fromMs={callsRange.fromMs}
            toMs={callsRange.toMs}
            api={api}
            status={state.status}
            title={callsTitle}
            onClose={() => update({ atMs: null, status: null, calls: false })}
          />
        </div>
      ) : null}

      <section className="panel" aria-labelledby="apis-title">
        <header className="panel-header">
          <h2 id="apis-title">APIs</h2>
          <span className="muted">
            {apiRows.length === 0
              ? ''
              : `${apiRows.length} API${apiRows.length === 1 ? '' : 's'} · click a row to chart it alone, a count to see its calls`}
          </span>
          {!callsOpen && summary.calls > 0 ? (
            <button type="button" className="ghost push-right" onClick={() => update({ calls: true })}>
              Show raw calls
            </button>
          ) : null}
        </header>
        {selectedMissing ? (
          <Notice tone="info">
            {merchant} made no calls to {api} in this period, so it has no row below.
          </Notice>
        ) : null}
        {apiRows.length === 0 ? (
          <Notice tone="empty" testId="no-apis">
            No API calls in this period.
          </Notice>
        ) : (
          <ApiTable
            rows={apiRows}
            sort={state.sort ?? DEFAULT_SORT}
            onSort={(sort) => update({ sort }, { replace: true })}
            selectedApi={api}
            onSelectApi={(next) => update({ api: next, atMs: null, status: null })}
            onPickStatus={(pickedApi, status) => update({ api: pickedApi, status, atMs: null })}
          />
        )}
      </section>
    </div>
  );
}

function Kpi({ label, value, tone }: { label: string; value: string; tone?: 'ok' | 'warn' | 'bad' }) {
  return (
    <div className={`kpi${tone ? ` kpi-${tone}` : ''}`}>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function callSeries(columns: ReturnType<typeof activityColumns>): ChartSeries[] {
  return [
    { label: 'Total', colorVar: '--series-total', values: columns.total, width: 2 },
    { label: '2xx', colorVar: '--series-2xx', values: columns.status2xx },
    { label: '4xx', colorVar: '--series-4xx', values: columns.status4xx },
    { label: '5xx', colorVar: '--series-5xx', values: columns.status5xx },
  ];
}

function latencySeries(columns: ReturnType<typeof activityColumns>): ChartSeries[] {
  return [
    { label: 'p50', colorVar: '--series-p50', values: columns.p50 },
    { label: 'p95', colorVar: '--series-p95', values: columns.p95 },
    { label: 'p99', colorVar: '--series-p99', values: columns.p99, width: 2 },
  ];
}
