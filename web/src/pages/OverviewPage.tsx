// Who is busiest, who fails most, who fails most often: three rankings over one period.

import { useEffect, useState } from 'react';
import { fetchTopMerchants, type MerchantSort } from '../api/client';
import type { MerchantRank } from '../api/types';
import { rateClass } from '../components/ApiTable';
import { LiveStatus } from '../components/LiveStatus';
import { Notice } from '../components/Notice';
import { PeriodPicker } from '../components/PeriodPicker';
import { formatCount, formatRange, formatRate, formatUtcOffset } from '../lib/format';
import { isLive, periodProblem, resolvePeriod, type Period } from '../lib/period';
import { usePolledQuery } from '../lib/usePolledQuery';
import { merchantHref, merchantViewFor, overviewHref, parsePeriodParams } from '../lib/urlState';
import { Link, navigate } from '../router';
import { REFRESH_MS } from './MerchantPage';

const TOP = 10;

interface Rankings {
  fromMs: number;
  toMs: number;
  byCalls: MerchantRank[];
  byErrors: MerchantRank[];
  byErrorRate: MerchantRank[];
}

export function OverviewPage({ search }: { search: string }) {
  useEffect(() => {
    document.title = 'Merchant Monitor';
  }, []);
  const parsed = parsePeriodParams(new URLSearchParams(search));
  if (!parsed.ok) {
    return (
      <div className="page">
        <h1 className="page-title">Overview</h1>
        <Notice tone="error" title="This link has a problem">
          <p>{parsed.problem}</p>
          <p>
            <Link to="/">Show the last hour instead</Link>
          </p>
        </Notice>
      </div>
    );
  }
  return <Overview period={parsed.value} />;
}

function Overview({ period }: { period: Period }) {
  const [paused, setPaused] = useState(false);
  const problem = periodProblem(period, Date.now());
  const key = problem ? null : JSON.stringify(period);
  const query = usePolledQuery<Rankings>(
    key,
    async (signal) => {
      const range = resolvePeriod(period, Date.now());
      const ranking = (sort: MerchantSort) => fetchTopMerchants(range, sort, TOP, signal).then((body) => body.merchants);
      const [byCalls, byErrors, byErrorRate] = await Promise.all([
        ranking('calls'),
        ranking('errors'),
        ranking('error_rate'),
      ]);
      return { fromMs: range.fromMs, toMs: range.toMs, byCalls, byErrors, byErrorRate };
    },
    { refreshMs: isLive(period) && !paused ? REFRESH_MS : null },
  );
  const data = query.data;
  const error = query.errorKey === key ? query.error : undefined;

  return (
    <div
      className={`page${data && query.dataKey !== key ? ' stale' : ''}`}
      data-testid="overview"
      data-from={data?.fromMs}
      data-to={data?.toMs}
    >
      <div className="page-head">
        <div className="title-block">
          <p className="eyebrow">All merchants</p>
          <h1 className="page-title">Overview</h1>
        </div>
        <div className="head-controls">
          <PeriodPicker period={period} onChange={(next) => navigate(overviewHref(next))} />
          <div className="head-meta">
            {data ? (
              <span className="range-text">
                {formatRange(data.fromMs, data.toMs)} {formatUtcOffset(data.fromMs)}
              </span>
            ) : null}
            <LiveStatus
              live={isLive(period)}
              paused={paused}
              onTogglePause={() => setPaused((value) => !value)}
              updatedAt={query.updatedAt}
              failing={error !== undefined}
            />
          </div>
        </div>
      </div>

      {problem ? (
        <Notice tone="error" title="This period cannot be shown">
          {problem}
        </Notice>
      ) : null}
      {error && data ? (
        <Notice tone="warning">Could not refresh: {error.message}</Notice>
      ) : null}
      {error && !data ? (
        <Notice tone="error" title="The rankings could not be loaded" testId="overview-error">
          {error.message}
        </Notice>
      ) : null}

      {!data && !error && !problem ? (
        <div className="rankings" aria-busy="true">
          <div className="panel skeleton-block" />
          <div className="panel skeleton-block" />
          <div className="panel skeleton-block" />
        </div>
      ) : null}

      {data && data.byCalls.length === 0 ? (
        <Notice tone="empty" title="No calls in this period" testId="overview-empty">
          No merchant made a call between {formatRange(data.fromMs, data.toMs)}. Pick a longer period, or send logs to{' '}
          <code>POST /v1/ingest</code>.
        </Notice>
      ) : null}

      {data && data.byCalls.length > 0 ? (
        <div className="rankings">
          <Ranking
            title="Most calls"
            testId="top-calls"
            rows={data.byCalls}
            period={period}
            rankedBy="calls"
          />
          <Ranking
            title="Most errors (5xx)"
            testId="top-errors"
            rows={data.byErrors.filter((row) => row.errors > 0)}
            period={period}
            rankedBy="errors"
            emptyText="No merchant got a 5xx answer in this period."
          />
          <Ranking
            title="Highest error rate (5xx)"
            testId="top-error-rate"
            rows={data.byErrorRate.filter((row) => row.errors > 0)}
            period={period}
            rankedBy="error_rate"
            emptyText="No merchant got a 5xx answer in this period."
          />
        </div>
      ) : null}
    </div>
  );
}

type RankedBy = 'calls' | 'errors' | 'error_rate';

interface RankingProps {
  title: string;
  testId: string;
  rows: MerchantRank[];
  period: Period;
  rankedBy: RankedBy;
  emptyText?: string;
}

function Ranking({ title, testId, rows, period, rankedBy, emptyText }: RankingProps) {
  const metric = (row: MerchantRank) => row[rankedBy];
  const largest = Math.max(...rows.map(metric), 0);
  const emphasis = (column: RankedBy) => (column === rankedBy ? ' strong' : '');
  return (
    <section className="panel ranking" data-testid={testId} aria-label={title}>
      <header className="panel-header">
        <h2>{title}</h2>
      </header>
      {rows.length === 0 ? (
        <p className="muted ranking-empty">{emptyText}</p>
      ) : (
        <table className="ranking-table">
          <thead>
            <tr>
              <th scope="col" className="num rank">
                #
              </th>
              <th scope="col" className="text">
                Merchant
              </th>
              <th scope="col" className={`num${emphasis('calls')}`}>
                Calls
              </th>
              <th scope="col" className={`num${emphasis('errors')}`}>
                5xx
              </th>
              <th scope="col" className={`num${emphasis('error_rate')}`}>
                Error rate
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row, index) => (
              <tr key={row.merchant} data-merchant={row.merchant} data-calls={row.calls}>
                <td className="num rank muted">{index + 1}</td>
                <td className="text merchant-cell">
                  <Link to={merchantHref(merchantViewFor(row.merchant, period))}>{row.merchant}</Link>
                  <span className="bar" aria-hidden="true">
                    <span style={{ width: `${largest > 0 ? (metric(row) / largest) * 100 : 0}%` }} />
                  </span>
                </td>
                <td className={`num${emphasis('calls')}`}>{formatCount(row.calls)}</td>
                <td className={`num${emphasis('errors')}`}>{formatCount(row.errors)}</td>
                <td className={`num${emphasis('error_rate')} ${rateClass(row.error_rate)}`}>{formatRate(row.error_rate)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
