import { act, render, screen } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { usePolledQuery } from './usePolledQuery';

function Probe({ queryKey, load, refreshMs }: { queryKey: string | null; load: () => Promise<string>; refreshMs: number | null }) {
  const query = usePolledQuery(queryKey, load, { refreshMs, retryMs: 5_000 });
  return (
    <output>
      {`data=${query.data ?? '-'} for=${query.dataKey ?? '-'} error=${query.error?.message ?? '-'} fetching=${query.fetching}`}
    </output>
  );
}

const shown = () => screen.getByRole('status').textContent;

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('usePolledQuery', () => {
  it('refreshes on its interval and keeps the old data on screen while it does', async () => {
    let version = 0;
    let release: (() => void) | null = null;
    const load = vi.fn(() => {
      version += 1;
      const value = `v${version}`;
      if (version === 1) return Promise.resolve(value);
      return new Promise<string>((resolve) => {
        release = () => resolve(value);
      });
    });
    render(<Probe queryKey="k" load={load} refreshMs={10_000} />);
    await act(async () => {});
    expect(shown()).toBe('data=v1 for=k error=- fetching=false');

    await act(async () => {
      await vi.advanceTimersByTimeAsync(10_000);
    });
    expect(load).toHaveBeenCalledTimes(2);
    expect(shown()).toBe('data=v1 for=k error=- fetching=true');

    await act(async () => {
      release!();
    });
    expect(shown()).toBe('data=v2 for=k error=- fetching=false');
  });

  it('keeps the last good data when a refresh fails, and recovers', async () => {
    const load = vi
      .fn<() => Promise<string>>()
      .mockResolvedValueOnce('good')
      .mockRejectedValueOnce(new Error('server down'))
      .mockResolvedValueOnce('better');
    render(<Probe queryKey="k" load={load} refreshMs={10_000} />);
    await act(async () => {});
    await act(async () => {
      await vi.advanceTimersByTimeAsync(10_000);
    });
    expect(shown()).toBe('data=good for=k error=server down fetching=false');
    // Retries sooner than the refresh interval after a failure.
    await act(async () => {
      await vi.advanceTimersByTimeAsync(5_000);
    });
    expect(shown()).toBe('data=better for=k error=- fetching=false');
  });

  it('keeps data of the previous key, marked as such, until the new key answers', async () => {
    let resolveSecond: ((value: string) => void) | null = null;
    const first = vi.fn(() => Promise.resolve('first'));
    const second = vi.fn(() => new Promise<string>((resolve) => (resolveSecond = resolve)));
    const { rerender } = render(<Probe queryKey="a" load={first} refreshMs={null} />);
    await act(async () => {});
    rerender(<Probe queryKey="b" load={second} refreshMs={null} />);
    await act(async () => {});
    expect(shown()).toBe('data=first for=a error=- fetching=true');
    await act(async () => {
      resolveSecond!('second');
    });
    expect(shown()).toBe('data=second for=b error=- fetching=false');
  });

  it('does not poll without an interval and does nothing without a key', async () => {
    const load = vi.fn(() => Promise.resolve('once'));
    const { rerender } = render(<Probe queryKey="k" load={load} refreshMs={null} />);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(60_000);
    });
    expect(load).toHaveBeenCalledTimes(1);
    const idle = vi.fn(() => Promise.resolve('never'));
    rerender(<Probe queryKey={null} load={idle} refreshMs={1_000} />);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(5_000);
    });
    expect(idle).not.toHaveBeenCalled();
  });
});
