// Client-side routing over the history API: the server answers every non-API path with
// index.html, and this module decides what that path shows.

import { useSyncExternalStore, type AnchorHTMLAttributes, type MouseEvent } from 'react';

const NAVIGATE_EVENT = 'mm:navigate';

export interface LocationSnapshot {
  pathname: string;
  search: string;
}

let cachedHref = '';
let cachedSnapshot: LocationSnapshot = { pathname: '/', search: '' };

function readLocation(): LocationSnapshot {
  // useSyncExternalStore needs the same object back while nothing changed.
  if (window.location.href !== cachedHref) {
    cachedHref = window.location.href;
    cachedSnapshot = { pathname: window.location.pathname, search: window.location.search };
  }
  return cachedSnapshot;
}

function subscribe(onChange: () => void): () => void {
  window.addEventListener('popstate', onChange);
  window.addEventListener(NAVIGATE_EVENT, onChange);
  return () => {
    window.removeEventListener('popstate', onChange);
    window.removeEventListener(NAVIGATE_EVENT, onChange);
  };
}

export function useLocation(): LocationSnapshot {
  return useSyncExternalStore(subscribe, readLocation, readLocation);
}

/**
 * Goes to a path within the dashboard. `replace` rewrites the current history entry, for changes
 * that should not each take a Back press (sorting, typing).
 */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const current = window.location.pathname + window.location.search;
  if (to === current) return;
  if (options.replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.dispatchEvent(new Event(NAVIGATE_EVENT));
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { to: string; replace?: boolean };

/** An <a> that navigates in place on a plain click and behaves as a link otherwise. */
export function Link({ to, replace, onClick, ...rest }: LinkProps) {
  const handleClick = (event: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(event);
    if (
      event.defaultPrevented ||
      event.button !== 0 ||
      event.metaKey ||
      event.ctrlKey ||
      event.shiftKey ||
      event.altKey
    ) {
      return;
    }
    event.preventDefault();
    navigate(to, { replace });
  };
  return <a href={to} onClick={handleClick} {...rest} />;
}
