// A stand-in for the Merchant Monitor API in component tests: routes by path, records requests.

import { vi } from 'vitest';

export interface Answer {
  status?: number;
  body?: unknown;
  text?: string;
}

/**
 * Answers a request (with its method and body in `init`); a promise lets a test decide when
 * (or whether) the answer arrives.
 */
export type Handler = (url: URL, init?: RequestInit) => Answer | Promise<Answer>;

export interface FakeServer {
  requests: URL[];
  fetch: ReturnType<typeof vi.fn>;
}

/** Installs a fetch that answers from `routes` (matched on the path, most specific first). */
export function installFakeServer(routes: Record<string, Handler>): FakeServer {
  const requests: URL[] = [];
  const patterns = Object.entries(routes)
    .map(([pattern, handler]) => ({ regex: new RegExp(`^${pattern}$`), handler }))
    .sort((left, right) => right.regex.source.length - left.regex.source.length);
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), 'http://dashboard.test');
    requests.push(url);
    const route = patterns.find((candidate) => candidate.regex.test(url.pathname));
    if (!route) {
      return new Response(JSON.stringify({ error: { code: 'not_found', message: 'no such endpoint' } }), { status: 404 });
    }
    const answer = await route.handler(url, init);
    const text = answer.text ?? JSON.stringify(answer.body);
    return new Response(text, { status: answer.status ?? 200, headers: { 'content-type': 'application/json' } });
  });
  vi.stubGlobal('fetch', fetchMock);
  return { requests, fetch: fetchMock };
}
