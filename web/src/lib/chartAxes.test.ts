import { describe, expect, it } from 'vitest';
import { logSplits, timeAxisLabels } from './chartAxes';

describe('logSplits', () => {
  it('puts gridlines at powers of ten and threes over few decades', () => {
    expect(logSplits(10, 10_000)).toEqual([10, 30, 100, 300, 1000, 3000, 10_000]);
  });

  it('keeps only powers of ten over many decades', () => {
    expect(logSplits(0.1, 100_000)).toEqual([0.1, 1, 10, 100, 1000, 10_000, 100_000]);
  });
});

describe('timeAxisLabels', () => {
  const at = (text: string) => new Date(text).getTime();

  it('writes 24-hour local times with the date under the first label of each day', () => {
    const labels = timeAxisLabels([at('2026-11-21T23:00:00'), at('2026-11-21T23:30:00'), at('2026-11-22T00:00:00')], 1_800_000);
    expect(labels).toEqual(['23:00\n21 Nov', '23:30', '00:00\n22 Nov']);
  });

  it('writes only dates when ticks are days apart', () => {
    expect(timeAxisLabels([at('2026-11-21T00:00:00'), at('2026-11-22T00:00:00')], 86_400_000)).toEqual(['21 Nov', '22 Nov']);
  });
});
