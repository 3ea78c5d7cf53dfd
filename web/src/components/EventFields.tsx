// One call with every field it was ingested with.

import type { CallEvent } from '../api/types';
import { describeStatus, formatLatency, formatTimestamp, statusClass } from '../lib/format';
import { Link } from '../router';
import { lookupHref } from '../lib/urlState';

/** The mapped fields first, in reading order; everything else after them, A→Z. */
const LEADING_FIELDS = ['ts', 'merchant', 'api', 'status', 'latency_ms', 'corr_id'];

export function orderedFields(event: CallEvent): [string, unknown][] {
  const leading = LEADING_FIELDS.filter((name) => name in event).map((name): [string, unknown] => [name, event[name]]);
  const rest = Object.keys(event)
    .filter((name) => !LEADING_FIELDS.includes(name))
    .sort()
    .map((name): [string, unknown] => [name, event[name]]);
  return [...leading, ...rest];
}

function fieldText(value: unknown): string {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

/** A human reading next to the raw value, where one helps. */
function fieldHint(name: string, value: unknown): string | null {
  if (name === 'ts' && typeof value === 'string') {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : `${formatTimestamp(ms)} local`;
  }
  if (name === 'status' && typeof value === 'number') return describeStatus(value).slice(4) || null;
  if (name === 'latency_ms' && typeof value === 'number') return formatLatency(value);
  return null;
}

export function EventFields({ event, linkCorrId = true }: { event: CallEvent; linkCorrId?: boolean }) {
  return (
    <dl className="fields">
      {orderedFields(event).map(([name, value]) => {
        const hint = fieldHint(name, value);
        return (
          <div className="field" key={name} data-field={name}>
            <dt>{name}</dt>
            <dd>
              {name === 'corr_id' && linkCorrId && typeof value === 'string' ? (
                <Link to={lookupHref(value)} className="mono">
                  {value}
                </Link>
              ) : (
                <span className={`mono${name === 'status' && typeof value === 'number' ? ` status-${statusClass(value)}` : ''}`}>
                  {fieldText(value)}
                </span>
              )}
              {hint ? <span className="field-hint">{hint}</span> : null}
            </dd>
          </div>
        );
      })}
    </dl>
  );
}
