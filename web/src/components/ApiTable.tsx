// Every API a merchant called in the period: calls, a column per status code that occurred (200
// and 500 always), 5xx error rate and latency. Headers sort; a row narrows the charts to that
// API; a status count opens those calls.

import type { ApiRow } from '../api/types';
import { nextSort, sortRows, statusColumns, statusCount, totals } from '../lib/apiTable';
import { describeStatus, formatCount, formatLatency, formatRate, statusClass } from '../lib/format';
import type { SortSpec } from '../lib/urlState';

interface ApiTableProps {
  rows: ApiRow[];
  sort: SortSpec;
  onSort: (sort: SortSpec) => void;
  selectedApi: string | null;
  onSelectApi: (api: string | null) => void;
  /** A click on a status count: the calls of that API (null: all APIs) with that status. */
  onPickStatus?: (api: string | null, status: number) => void;
}

interface Column {
  key: string;
  label: string;
  title: string;
  className?: string;
}

export function ApiTable({ rows, sort, onSort, selectedApi, onSelectApi, onPickStatus }: ApiTableProps) {
  const codes = statusColumns(rows);
  const sorted = sortRows(rows, sort);
  const sum = totals(rows);

  const columns: Column[] = [
    { key: 'api', label: 'API', title: 'API name' },
    { key: 'calls', label: 'Calls', title: 'All calls' },
    ...codes.map((code) => ({
      key: String(code),
      label: String(code),
      title: `Calls answered ${describeStatus(code)}`,
      className: `status-col status-${statusClass(code)}`,
    })),
    { key: 'error_rate', label: 'Error rate', title: 'Share of calls answered 5xx' },
    { key: 'p50', label: 'p50', title: 'Median latency' },
    { key: 'p95', label: 'p95', title: '95th percentile latency' },
    { key: 'p99', label: 'p99', title: '99th percentile latency' },
    { key: 'max', label: 'Max', title: 'Slowest call' },
  ];

  const statusCell = (api: string | null, code: number, count: number) => {
    const className = `num status-col status-${statusClass(code)}${count === 0 ? ' zero' : ''}`;
    if (count === 0 || !onPickStatus) {
      return (
        <td key={code} className={className} data-col={code} data-value={count}>
          {formatCount(count)}
        </td>
      );
    }
    return (
      <td key={code} className={className} data-col={code} data-value={count}>
        <button
          type="button"
          className="cell-link"
          title={`Show the ${describeStatus(code)} calls${api ? ` to ${api}` : ''}`}
          onClick={(event) => {
            event.stopPropagation();
            onPickStatus(api, code);
          }}
        >
          {formatCount(count)}
        </button>
      </td>
    );
  };

  return (
    <div className="table-scroll">
      <table className="api-table" data-testid="api-table" data-rows={rows.length}>
        <thead>
          <tr>
            {columns.map((column) => {
              const active = sort.column === column.key;
              return (
                <th
                  key={column.key}
                  scope="col"
                  className={`${column.key === 'api' ? 'text' : 'num'} ${column.className ?? ''}`}
                  aria-sort={active ? (sort.descending ? 'descending' : 'ascending') : 'none'}
                  title={column.title}
                >
                  <button type="button" className="sort-button" onClick={() => onSort(nextSort(sort, column.key))}>
                    {column.label}
                    <span className="sort-mark" aria-hidden="true">
                      {active ? (sort.descending ? '▼' : '▲') : ''}
                    </span>
                  </button>
                </th>
              );
            })}
          </tr>
        </thead>
        <tbody>
          <tr
            className="total-row"
            aria-selected={selectedApi === null}
            onClick={() => onSelectApi(null)}
            data-api=""
          >
            <th scope="row" className="text">
              <button type="button" className="row-link" onClick={() => onSelectApi(null)}>
                All APIs
              </button>
            </th>
            <td className="num" data-col="calls" data-value={sum.calls}>
              {formatCount(sum.calls)}
            </td>
            {codes.map((code) => statusCell(null, code, sum.status[String(code)] ?? 0))}
            <td className={`num ${rateClass(sum.errorRate)}`}>{formatRate(sum.errorRate)}</td>
            <td className="num muted" colSpan={3} title="Percentiles of all APIs together are on the latency chart">
              see chart
            </td>
            <td className="num">{formatLatency(sum.maxMs)}</td>
          </tr>
          {sorted.map((row) => (
            <tr
              key={row.api}
              data-api={row.api}
              aria-selected={row.api === selectedApi}
              onClick={() => onSelectApi(row.api === selectedApi ? null : row.api)}
            >
              <th scope="row" className="text api-name">
                <button
                  type="button"
                  className="row-link"
                  title={row.api === selectedApi ? 'Show all APIs on the charts' : `Show only ${row.api} on the charts`}
                  onClick={(event) => {
                    event.stopPropagation();
                    onSelectApi(row.api === selectedApi ? null : row.api);
                  }}
                >
                  {row.api}
                </button>
              </th>
              <td className="num" data-col="calls" data-value={row.calls}>
                {formatCount(row.calls)}
              </td>
              {codes.map((code) => statusCell(row.api, code, statusCount(row, code)))}
              <td className={`num ${rateClass(row.error_rate)}`} data-col="error_rate" data-value={row.error_rate}>
                {formatRate(row.error_rate)}
              </td>
              <td className="num">{formatLatency(row.p50_ms)}</td>
              <td className="num">{formatLatency(row.p95_ms)}</td>
              <td className="num">{formatLatency(row.p99_ms)}</td>
              <td className="num">{formatLatency(row.max_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Colour for an error rate: quiet below 1%, a warning up to 5%, alarming above. */
export function rateClass(rate: number): string {
  if (rate >= 0.05) return 'rate-bad';
  if (rate >= 0.01) return 'rate-warn';
  return '';
}
