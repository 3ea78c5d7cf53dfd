// "Live · updated 18:24:05" with a pause button, or "Fixed range" when nothing moves.

import { formatClock } from '../lib/format';

interface LiveStatusProps {
  live: boolean;
  paused: boolean;
  onTogglePause: () => void;
  updatedAt: number | null;
  /** The latest refresh failed; older data is on screen. */
  failing: boolean;
}

export function LiveStatus({ live, paused, onTogglePause, updatedAt, failing }: LiveStatusProps) {
  if (!live) {
    return (
      <span className="live-status" data-state="fixed">
        <span className="live-dot" aria-hidden="true" />
        Fixed range{updatedAt ? ` · loaded ${formatClock(updatedAt, true)}` : ''}
      </span>
    );
  }
  const state = paused ? 'paused' : failing ? 'failing' : 'live';
  return (
    <span className="live-status" data-state={state}>
      <span className="live-dot" aria-hidden="true" />
      {paused ? 'Paused' : failing ? 'Reconnecting' : 'Live'}
      {updatedAt ? ` · updated ${formatClock(updatedAt, true)}` : ''}
      <button type="button" className="link-button" onClick={onTogglePause}>
        {paused ? 'Resume' : 'Pause'}
      </button>
    </span>
  );
}
