// One event type: its definition and traffic, the latest rejected events with their reasons,
// the diff between two schema versions, and a candidate schema checked against the registry.

import { useEffect, useState } from 'react';
import { ApiError, checkCompatibility, fetchEventType, fetchSchemas, fetchTypeStats } from '../api/client';
import type { CompatibilityMode, CompatibilityReport, EventType, SchemaRecord, TypeStats } from '../api/types';
import { Notice } from '../components/Notice';
import { formatCount } from '../lib/format';
import { canonicalJson, diffJson } from '../lib/jsonDiff';
import { usePolledQuery } from '../lib/usePolledQuery';
import { Link } from '../router';
import { formatPerSecond } from './EventTypesPage';
import { REFRESH_MS } from './MerchantPage';

interface TypeView {
  type: EventType;
  schemas: SchemaRecord[];
  stats: TypeStats;
}

const MODES: CompatibilityMode[] = [
  'none',
  'backward',
  'forward',
  'full',
  'backward_transitive',
  'forward_transitive',
  'full_transitive',
];

export function EventTypePage({ name }: { name: string }) {
  useEffect(() => {
    document.title = `${name} · Event types · Merchant Monitor`;
  }, [name]);
  const query = usePolledQuery<TypeView>(
    name,
    async (signal) => {
      const [type, schemas, stats] = await Promise.all([
        fetchEventType(name, signal),
        fetchSchemas(name, signal),
        fetchTypeStats(name, signal),
      ]);
      return { type, schemas, stats };
    },
    { refreshMs: REFRESH_MS },
  );
  const data = query.dataKey === name ? query.data : undefined;
  const error = query.errorKey === name ? query.error : undefined;
  return (
    <div className="page" data-testid="event-type">
      <div className="page-head">
        <div className="title-block">
          <p className="eyebrow">
            <Link to="/event-types">Event types</Link>
          </p>
          <h1 className="page-title">{name}</h1>
        </div>
      </div>
      {error && !data ? (
        <Notice tone="error" title="This event type could not be loaded" testId="event-type-error">
          {error.message}
        </Notice>
      ) : null}
      {data ? <TypeDetails view={data} /> : null}
    </div>
  );
}

function TypeDetails({ view }: { view: TypeView }) {
  const { type, schemas, stats } = view;
  return (
    <>
      <div className="panel type-summary">
        <dl className="facts">
          <dt>Owner</dt>
          <dd>{type.owning_application}</dd>
          <dt>Category</dt>
          <dd>{type.category}</dd>
          <dt>Version</dt>
          <dd className="mono" data-testid="type-version">
            {type.version}
          </dd>
          <dt>Compatibility</dt>
          <dd>{type.compatibility_mode}</dd>
          <dt>Partitioning</dt>
          <dd>
            {type.partition_strategy}
            {type.partition_key_fields.length ? ` on ${type.partition_key_fields.join(', ')}` : ''}, {type.partitions}{' '}
            partition{type.partitions === 1 ? '' : 's'}
          </dd>
          <dt>Published</dt>
          <dd>
            {formatPerSecond(stats.publish_rate)} · {formatCount(stats.published)} since start
          </dd>
          <dt>Rejected</dt>
          <dd>
            {formatPerSecond(stats.reject_rate)} · {formatCount(stats.rejected)} since start
          </dd>
        </dl>
        {type.built_in ? (
          <p className="hint">Built in: its schema follows the server's field mapping; its events arrive through /v1/ingest.</p>
        ) : null}
      </div>

      <section className="panel" aria-label="Latest rejected events">
        <h2 className="panel-title">Latest rejected events</h2>
        {stats.latest_rejects.length === 0 ? (
          <p className="hint">No event of this type was rejected since the server started.</p>
        ) : (
          <div className="table-scroll">
          <table className="data-table" data-testid="latest-rejects">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Event id</th>
                <th scope="col">Step</th>
                <th scope="col">Reason</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {stats.latest_rejects.map((reject, index) => (
                <tr key={`${reject.at}-${reject.eid}-${index}`}>
                  <td className="mono">{reject.at}</td>
                  <td className="mono">{reject.eid || '—'}</td>
                  <td>{reject.step}</td>
                  <td>{reject.reason}</td>
                  <td>{reject.detail}</td>
                </tr>
              ))}
            </tbody>
          </table>
          </div>
        )}
      </section>

      <SchemaVersions schemas={schemas} />
      {type.built_in ? null : <CandidateCheck type={type} />}
    </>
  );
}

function SchemaVersions({ schemas }: { schemas: SchemaRecord[] }) {
  // Newest first from the server; compare the one before the newest with the newest by default.
  const [fromVersion, setFromVersion] = useState<string>(schemas[1]?.version ?? schemas[0]?.version ?? '');
  const [toVersion, setToVersion] = useState<string>(schemas[0]?.version ?? '');
  const from = schemas.find((record) => record.version === fromVersion) ?? schemas[schemas.length - 1];
  const to = schemas.find((record) => record.version === toVersion) ?? schemas[0];
  if (!from || !to) return null;
  const lines = diffJson(from.schema, to.schema);
  const changed = lines.some((line) => line.kind !== 'same');
  const picker = (label: string, value: string, onChange: (version: string) => void) => (
    <label className="field">
      <span>{label}</span>
      <select value={value} onChange={(event) => onChange(event.target.value)} aria-label={label}>
        {schemas.map((record) => (
          <option key={record.version} value={record.version}>
            {record.version} ({record.created_at.slice(0, 10)})
          </option>
        ))}
      </select>
    </label>
  );
  return (
    <section className="panel" aria-label="Schema versions">
      <h2 className="panel-title">Schema versions</h2>
      <div className="controls-row">
        {picker('From version', from.version, setFromVersion)}
        {picker('To version', to.version, setToVersion)}
      </div>
      {from.version === to.version ? null : !changed ? (
        <p className="hint">These versions have the same schema.</p>
      ) : null}
      <pre className="json-diff" data-testid="schema-diff">
        {lines.map((line, index) => (
          <span key={index} className={`diff-${line.kind}`} data-kind={line.kind}>
            {line.kind === 'added' ? '+ ' : line.kind === 'removed' ? '- ' : '  '}
            {line.text}
            {'\n'}
          </span>
        ))}
      </pre>
    </section>
  );
}

function CandidateCheck({ type }: { type: EventType }) {
  const [text, setText] = useState(() => canonicalJson(type.schema));
  const [mode, setMode] = useState<CompatibilityMode | ''>('');
  const [report, setReport] = useState<CompatibilityReport | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  const check = async () => {
    setProblem(null);
    setReport(null);
    let candidate: unknown;
    try {
      candidate = JSON.parse(text);
    } catch (error) {
      setProblem(`The candidate is not JSON: ${(error as Error).message}`);
      return;
    }
    setChecking(true);
    try {
      setReport(await checkCompatibility(type.name, candidate, mode || null));
    } catch (error) {
      setProblem(error instanceof ApiError ? error.message : String(error));
    } finally {
      setChecking(false);
    }
  };

  return (
    <section className="panel" aria-label="Check a candidate schema">
      <h2 className="panel-title">Check a candidate schema</h2>
      <p className="hint">
        Paste a new schema: the registry says whether it would be accepted, as which version, what it breaks and which
        subscriptions read this type. Nothing is changed.
      </p>
      <textarea
        className="schema-input mono"
        aria-label="Candidate schema"
        value={text}
        onChange={(event) => setText(event.target.value)}
        rows={14}
        spellCheck={false}
      />
      <div className="controls-row">
        <label className="field">
          <span>Mode</span>
          <select value={mode} onChange={(event) => setMode(event.target.value as CompatibilityMode | '')} aria-label="Mode">
            <option value="">the type's own ({type.compatibility_mode})</option>
            {MODES.map((candidate) => (
              <option key={candidate} value={candidate}>
                {candidate}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => void check()} disabled={checking}>
          {checking ? 'Checking…' : 'Check'}
        </button>
      </div>
      {problem ? (
        <Notice tone="error" title="The candidate could not be checked" testId="candidate-problem">
          {problem}
        </Notice>
      ) : null}
      {report ? <Report report={report} /> : null}
    </section>
  );
}

function Report({ report }: { report: CompatibilityReport }) {
  return (
    <div data-testid="compatibility-report" data-compatible={report.compatible ? 'true' : 'false'}>
      {report.compatible ? (
        <Notice tone="info" title="Compatible">
          Accepted under {report.compatibility_mode} as version <span className="mono">{report.next_version}</span>.
        </Notice>
      ) : (
        <Notice tone="warning" title={`Refused under ${report.compatibility_mode}: ${report.violations.length} violation(s)`}>
          The change breaks the compatibility mode. Each row says what and how to make it compatible.
        </Notice>
      )}
      {report.violations.length ? (
        <div className="table-scroll">
        <table className="data-table" data-testid="violations">
          <thead>
            <tr>
              <th scope="col">Where</th>
              <th scope="col">Rule</th>
              <th scope="col">Old</th>
              <th scope="col">New</th>
              <th scope="col">What breaks</th>
              <th scope="col">Hint</th>
            </tr>
          </thead>
          <tbody>
            {report.violations.map((violation, index) => (
              <tr key={`${violation.path}-${violation.rule}-${index}`}>
                <td className="mono">{violation.path}</td>
                <td className="mono">{violation.rule}</td>
                <td className="mono">{JSON.stringify(violation.old)}</td>
                <td className="mono">{JSON.stringify(violation.new)}</td>
                <td>{violation.message}</td>
                <td>{violation.hint}</td>
              </tr>
            ))}
          </tbody>
        </table>
        </div>
      ) : null}
      <p className="hint" data-testid="consumers">
        {report.consumers.length
          ? `Read by: ${report.consumers.join(', ')}`
          : 'No subscription reads this type.'}
      </p>
    </div>
  );
}
