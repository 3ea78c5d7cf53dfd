// Fetching with live refresh that never blanks the screen.
//
// The last good answer stays on screen while the next one loads and when a refresh fails; the
// caller sees which key the data belongs to and decides whether older data is still worth
// showing (a new period of the same merchant: yes, dimmed; another merchant: no).

import { useCallback, useEffect, useRef, useState } from 'react';

export interface PolledQuery<T> {
  /** The newest data, possibly for an earlier key. */
  data: T | undefined;
  /** The key `data` was fetched for. */
  dataKey: string | null;
  /** The failure of the latest attempt; cleared by the next success. */
  error: Error | undefined;
  /** The key the latest attempt was for. */
  errorKey: string | null;
  /** When `data` arrived (epoch ms). */
  updatedAt: number | null;
  /** A request is in flight. */
  fetching: boolean;
  /** Fetches again now. */
  refresh: () => void;
}

export interface PolledQueryOptions {
  /** Refresh this often while the page is visible; null for no live refresh. */
  refreshMs: number | null;
  /** After a failure, try again this much later, live or not. */
  retryMs?: number;
}

interface State<T> {
  data: T | undefined;
  dataKey: string | null;
  error: Error | undefined;
  errorKey: string | null;
  updatedAt: number | null;
  fetching: boolean;
}

function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

/**
 * Runs `load` for `key` (null: nothing to load), then again every `refreshMs`. `load` is read
 * fresh at every run, so a relative period resolves against the clock of that run.
 */
export function usePolledQuery<T>(
  key: string | null,
  load: (signal: AbortSignal) => Promise<T>,
  options: PolledQueryOptions,
): PolledQuery<T> {
  const [state, setState] = useState<State<T>>({
    data: undefined,
    dataKey: null,
    error: undefined,
    errorKey: null,
    updatedAt: null,
    fetching: false,
  });
  const [runToken, setRunToken] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const { refreshMs } = options;
  const retryMs = options.retryMs ?? 10_000;

  useEffect(() => {
    if (key === null) return;
    let stopped = false;
    let controller: AbortController | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let waitingForVisibility = false;

    const onVisible = () => {
      if (document.visibilityState !== 'visible' || !waitingForVisibility) return;
      waitingForVisibility = false;
      run();
    };

    const schedule = (delayMs: number) => {
      timer = setTimeout(() => {
        // A hidden tab does not poll; it catches up the moment it is shown again.
        if (document.visibilityState === 'hidden') waitingForVisibility = true;
        else run();
      }, delayMs);
    };

    const run = () => {
      controller = new AbortController();
      const signal = controller.signal;
      setState((previous) => (previous.fetching ? previous : { ...previous, fetching: true }));
      loadRef
        .current(signal)
        .then((data) => {
          if (stopped) return;
          setState({
            data,
            dataKey: key,
            error: undefined,
            errorKey: null,
            updatedAt: Date.now(),
            fetching: false,
          });
          if (refreshMs !== null) schedule(refreshMs);
        })
        .catch((error: unknown) => {
          if (stopped || isAbort(error)) return;
          setState((previous) => ({
            ...previous,
            error: error instanceof Error ? error : new Error(String(error)),
            errorKey: key,
            fetching: false,
          }));
          schedule(refreshMs === null ? retryMs : Math.min(refreshMs, retryMs));
        });
    };

    document.addEventListener('visibilitychange', onVisible);
    run();
    return () => {
      stopped = true;
      controller?.abort();
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [key, refreshMs, retryMs, runToken]);

  const refresh = useCallback(() => setRunToken((token) => token + 1), []);
  return { ...state, refresh };
}
