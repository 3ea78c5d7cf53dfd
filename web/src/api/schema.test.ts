// @vitest-environment node
//
// schema.d.ts must be what openapi-typescript makes of openapi.json today: the dashboard's
// types come from the server's document and nowhere else. (The Rust side checks that
// openapi.json is the server's current document.)

import { readFile } from 'node:fs/promises';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import { describe, expect, it } from 'vitest';

const REGENERATE = 'npm --prefix web run gen:api';

describe('generated API types', () => {
  it('schema.d.ts is generated from the committed openapi.json', async () => {
    const document = new URL('./openapi.json', import.meta.url);
    // The same steps as the `openapi-typescript` command that `gen:api` runs.
    const expected = COMMENT_HEADER + astToString(await openapiTS(document, { silent: true }));
    const committed = await readFile(new URL('./schema.d.ts', import.meta.url), 'utf8');
    expect(
      committed === expected,
      `web/src/api/schema.d.ts is stale: regenerate it from openapi.json with \`${REGENERATE}\``,
    ).toBe(true);
  }, 30_000);
});
