// The event gateway's registry: every event type with its owner, version and traffic.

import { useEffect } from 'react';
import { fetchEventTypes, fetchTypeStats } from '../api/client';
import type { EventType, TypeStats } from '../api/types';
import { Notice } from '../components/Notice';
import { formatCount } from '../lib/format';
import { usePolledQuery } from '../lib/usePolledQuery';
import { eventTypeHref } from '../lib/urlState';
import { Link } from '../router';
import { REFRESH_MS } from './MerchantPage';

interface Registry {
  types: EventType[];
  stats: Record<string, TypeStats>;
}

/** Events per second, with a sensible number of digits. */
export function formatPerSecond(rate: number): string {
  if (rate === 0) return '0/s';
  if (rate < 1) return `${rate.toFixed(2)}/s`;
  return `${formatCount(Math.round(rate))}/s`;
}

export function EventTypesPage() {
  useEffect(() => {
    document.title = 'Event types · Merchant Monitor';
  }, []);
  const query = usePolledQuery<Registry>(
    'event-types',
    async (signal) => {
      const types = await fetchEventTypes(signal);
      const stats = await Promise.all(types.map((type) => fetchTypeStats(type.name, signal)));
      return { types, stats: Object.fromEntries(types.map((type, index) => [type.name, stats[index]!])) };
    },
    { refreshMs: REFRESH_MS },
  );
  const data = query.data;
  return (
    <div className="page" data-testid="event-types">
      <div className="page-head">
        <div className="title-block">
          <p className="eyebrow">Event gateway</p>
          <h1 className="page-title">Event types</h1>
        </div>
      </div>
      {query.error && !data ? (
        <Notice tone="error" title="The event types could not be loaded">
          {query.error.message}
        </Notice>
      ) : null}
      {data && data.types.length === 0 ? (
        <Notice tone="empty" title="No event types yet">
          Register one with <code>PUT /v1/event-types/&#123;name&#125;</code> and a JSON Schema.
        </Notice>
      ) : null}
      {data && data.types.length > 0 ? (
        <div className="panel">
          <table className="data-table">
            <thead>
              <tr>
                <th scope="col">Event type</th>
                <th scope="col">Owner</th>
                <th scope="col">Category</th>
                <th scope="col">Version</th>
                <th scope="col">Compatibility</th>
                <th scope="col" className="num">
                  Partitions
                </th>
                <th scope="col" className="num">
                  Published
                </th>
                <th scope="col" className="num">
                  Rejected
                </th>
              </tr>
            </thead>
            <tbody>
              {data.types.map((type) => {
                const stats = data.stats[type.name];
                return (
                  <tr key={type.name} data-event-type={type.name}>
                    <td>
                      <Link to={eventTypeHref(type.name)}>{type.name}</Link>
                      {type.built_in ? <span className="tag">built in</span> : null}
                    </td>
                    <td>{type.owning_application}</td>
                    <td>{type.category}</td>
                    <td className="mono">{type.version}</td>
                    <td>{type.compatibility_mode}</td>
                    <td className="num">{type.partitions}</td>
                    <td className="num" title={stats ? `${formatCount(stats.published)} since the server started` : ''}>
                      {stats ? formatPerSecond(stats.publish_rate) : '…'}
                    </td>
                    <td className="num" title={stats ? `${formatCount(stats.rejected)} since the server started` : ''}>
                      {stats ? formatPerSecond(stats.reject_rate) : '…'}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
    </div>
  );
}
