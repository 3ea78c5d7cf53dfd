// Starts a real Merchant Monitor server on a free port with a fresh data directory, loads a
// generated dataset into it and hands its address to the tests (MM_E2E_BASE_URL). The returned
// function stops the server and removes the data.
//
// MM_BIN names the binary (default ../target/debug/merchant-monitor from web/). The server gets
// this process's environment, so MM_WEB_DIR=web/dist serves the fresh build; without it the UI
// embedded in the binary is what gets tested.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const webDir = fileURLToPath(new URL('..', import.meta.url));

/** The dataset: 30,000 calls of 50 merchants at 50 calls/s of event time, ending about now. */
export const DATASET = { events: 30_000, merchants: 50, seed: 11, rate: 50 };

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolveSleep) => setTimeout(resolveSleep, ms));

async function waitForReady(baseUrl: string, server: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) {
      throw new Error(`the server exited with ${server.exitCode} before it was ready:\n${tail(logFile)}`);
    }
    try {
      const response = await fetch(`${baseUrl}/readyz`);
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`the server was not ready within 30 s:\n${tail(logFile)}`);
}

/** Waits until every ingested call is counted, so the tests and the UI read settled numbers. */
async function waitForRollups(baseUrl: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  let counted = -1;
  while (Date.now() < deadline) {
    const now = Date.now();
    const response = await fetch(`${baseUrl}/v1/merchants?limit=1000&from=${now - 6 * 3_600_000}&to=${now + 3_600_000}`);
    const body = (await response.json()) as { merchants: { calls: number }[] };
    counted = body.merchants.reduce((sum, merchant) => sum + merchant.calls, 0);
    if (counted === DATASET.events) return;
    await sleep(250);
  }
  throw new Error(`only ${counted} of ${DATASET.events} calls were counted after 30 s`);
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no server log)';
  }
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const binary = resolve(webDir, process.env.MM_BIN ?? '../target/debug/merchant-monitor');
  if (!existsSync(binary)) {
    throw new Error(`no merchant-monitor binary at ${binary}: build it (cargo build) or set MM_BIN`);
  }
  const workDir = mkdtempSync(join(tmpdir(), 'mm-e2e-'));
  const dataDir = join(workDir, 'data');
  const logFile = join(workDir, 'server.log');
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;

  const log = createWriteStream(logFile);
  const server = spawn(binary, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout?.pipe(log);
  server.stderr?.pipe(log);

  const stop = async () => {
    if (server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((resolveExit) => server.once('exit', resolveExit));
      server.kill('SIGTERM');
      const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!stopped) server.kill('SIGKILL');
    }
    if (process.env.MM_E2E_KEEP_DATA) console.log(`e2e: server data and log kept in ${workDir}`);
    else rmSync(workDir, { recursive: true, force: true });
  };

  try {
    await waitForReady(baseUrl, server, logFile);
    const dataset = join(workDir, 'calls.ndjson');
    await run(binary, [
      'gen',
      '-n',
      String(DATASET.events),
      '--merchants',
      String(DATASET.merchants),
      '--seed',
      String(DATASET.seed),
      '--rate',
      String(DATASET.rate),
      '-o',
      dataset,
    ]);
    await run(binary, ['replay', dataset, '--to', baseUrl, '--quiet']);
    await waitForRollups(baseUrl);

    const page = await fetch(`${baseUrl}/merchants/anything`);
    const html = await page.text();
    if (!html.includes('id="root"')) {
      throw new Error(
        `${binary} does not serve the dashboard at non-API paths (got: ${html.slice(0, 200)}). ` +
          'Build the binary with the UI embedded, or set MM_WEB_DIR to web/dist.',
      );
    }
  } catch (error) {
    await stop();
    throw error;
  }

  process.env.MM_E2E_BASE_URL = baseUrl;
  console.log(`e2e: ${binary} serving on ${baseUrl}${process.env.MM_WEB_DIR ? ` with the UI from ${process.env.MM_WEB_DIR}` : ''}`);
  return stop;
}
