// Preset periods as one row of buttons, and a custom range in local time.

import { useState, type FormEvent } from 'react';
import {
  PRESET_PERIODS,
  relativePeriod,
  resolvePeriod,
  type Period,
} from '../lib/period';
import { formatUtcOffset, fromDateTimeLocalValue, toDateTimeLocalValue } from '../lib/format';

interface PeriodPickerProps {
  period: Period;
  onChange: (period: Period) => void;
}

export function PeriodPicker({ period, onChange }: PeriodPickerProps) {
  const [editing, setEditing] = useState(false);
  const isCustom = period.kind === 'range';

  return (
    <div className="period-picker">
      <div className="segmented" role="group" aria-label="Period">
        {PRESET_PERIODS.map((preset) => (
          <button
            key={preset.id}
            type="button"
            aria-pressed={period.kind === 'relative' && period.id === preset.id}
            onClick={() => {
              setEditing(false);
              onChange(relativePeriod(preset.id)!);
            }}
          >
            {preset.label}
          </button>
        ))}
        <button
          type="button"
          aria-pressed={isCustom || editing}
          aria-expanded={editing}
          onClick={() => setEditing((open) => !open)}
        >
          Custom…
        </button>
      </div>
      {editing ? (
        <CustomRangeForm
          period={period}
          onApply={(next) => {
            setEditing(false);
            onChange(next);
          }}
          onCancel={() => setEditing(false)}
        />
      ) : null}
    </div>
  );
}

interface CustomRangeFormProps {
  period: Period;
  onApply: (period: Period) => void;
  onCancel: () => void;
}

function CustomRangeForm({ period, onApply, onCancel }: CustomRangeFormProps) {
  const initial = resolvePeriod(period, Date.now());
  const [fromValue, setFromValue] = useState(toDateTimeLocalValue(initial.fromMs));
  const [toValue, setToValue] = useState(toDateTimeLocalValue(initial.toMs));
  const [problem, setProblem] = useState<string | null>(null);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const fromMs = fromDateTimeLocalValue(fromValue);
    const toMs = fromDateTimeLocalValue(toValue);
    if (fromMs === null || toMs === null) {
      setProblem('Fill in both the start and the end.');
      return;
    }
    if (fromMs >= toMs) {
      setProblem('The start must be before the end.');
      return;
    }
    onApply({ kind: 'range', fromMs, toMs });
  };

  return (
    <form className="custom-range" onSubmit={submit} noValidate>
      <label>
        From
        <input
          type="datetime-local"
          value={fromValue}
          onChange={(event) => setFromValue(event.target.value)}
          aria-label="Start of the period"
        />
      </label>
      <label>
        To
        <input
          type="datetime-local"
          value={toValue}
          onChange={(event) => setToValue(event.target.value)}
          aria-label="End of the period"
        />
      </label>
      <span className="hint">{formatUtcOffset(initial.fromMs)}</span>
      <button type="submit" className="primary">
        Apply
      </button>
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
      {problem ? (
        <p className="form-problem" role="alert">
          {problem}
        </p>
      ) : null}
    </form>
  );
}
