// The API access token, for servers configured with bearer tokens. Kept in this browser's
// local storage; sent with every API request.

const KEY = 'merchant-monitor.token';
const CHANGED = 'merchant-monitor:token-needed';

export function readToken(): string {
  try {
    return window.localStorage.getItem(KEY) ?? '';
  } catch {
    return '';
  }
}

export function saveToken(token: string): void {
  try {
    if (token) window.localStorage.setItem(KEY, token);
    else window.localStorage.removeItem(KEY);
  } catch {
    // Storage can be off (private mode): the token then lasts until the page is reloaded.
  }
}

/** Tells the shell that the server refused the request for want of a (valid) token. */
export function announceTokenNeeded(): void {
  window.dispatchEvent(new Event(CHANGED));
}

/** Calls `listener` whenever a request was refused for want of a token. */
export function onTokenNeeded(listener: () => void): () => void {
  window.addEventListener(CHANGED, listener);
  return () => window.removeEventListener(CHANGED, listener);
}
