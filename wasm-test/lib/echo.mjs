// The echo upstream (echo/server.mjs): its start as a child process.

import { join } from 'node:path';

import {
  DEFAULT_TIMEOUTS, WASM_TEST_DIR, runDirectory, startProcess,
} from './processes.mjs';
import { assertPortFree, checkPort, freePort } from './ports.mjs';
import { waitHttp } from './http.mjs';

/**
 * Start the echo upstream (echo/server.mjs).
 * @param {object} [options]
 * @param {number} [options.port] default: a free port
 * @returns {Promise<{pid, port, url, logFiles, stop, log}>}
 */
export async function startEcho({ port, timeoutMs = DEFAULT_TIMEOUTS.echo } = {}) {
  const p = port === undefined ? await freePort() : checkPort(port, 'port');
  await assertPortFree(p, 'echo port');
  const url = `http://127.0.0.1:${p}`;
  const handle = await startProcess({
    name: `echo:${p}`,
    command: process.execPath,
    args: [join(WASM_TEST_DIR, 'echo', 'server.mjs'), '--port', String(p)],
    logFile: join(runDirectory(), `echo-${p}.log`),
    timeoutMs,
    ready: () => waitHttp(`${url}/__ready`, (r) => r.status === 200 && r.json?.path === '/__ready'),
  });
  return { ...handle, port: p, url };
}
