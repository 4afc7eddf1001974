// The test bed's child processes: the run directory, the registry of started processes, start
// (wait until ready) and stop by PID, and bounded waits.
//
// Every wait is bounded; a process that dies or is not ready in time fails the start with its log
// in the error. Logs go to a run directory under the OS temp dir (GATEHOUSE_TEST_RUN_DIR to
// choose another parent); stopAll() removes it unless a start failed or GATEHOUSE_KEEP_LOGS=1.

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { scanEnvoyLogs } from './credential-scan.mjs';

export const WASM_TEST_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(WASM_TEST_DIR, '..');

/** Readiness timeouts of the starts (echo.mjs, envoy.mjs) and the stop timeout, in ms. */
export const DEFAULT_TIMEOUTS = { echo: 10_000, envoy: 60_000, stop: 5_000 };
const LOG_TAIL_BYTES = 16 * 1024;

// --- run directory and process registry -----------------------------------------------------------

let runDir;
let keepRunDir = false;
/** pid -> {name, child, logFiles, exit: Promise<{code, signal}>, exited: boolean} */
const processes = new Map();

/** The directory where this test run's logs and generated files go (created on first use). */
export function runDirectory() {
  if (!runDir) {
    const parent = process.env.GATEHOUSE_TEST_RUN_DIR || tmpdir();
    runDir = mkdtempSync(join(parent, 'gatehouse-test-'));
  }
  return runDir;
}

function tail(file, bytes = LOG_TAIL_BYTES) {
  try {
    const data = readFileSync(file);
    const text = data.subarray(Math.max(0, data.length - bytes)).toString('utf8');
    return data.length > bytes ? `[... ${data.length - bytes} earlier bytes in ${file}]\n${text}` : text;
  } catch (err) {
    return `[cannot read ${file}: ${err.message}]`;
  }
}

function logDump(logFiles) {
  return logFiles
    .map((f) => `----- ${f} -----\n${tail(f).trimEnd() || '[empty]'}`)
    .join('\n');
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/** `promise`'s value, or `fallback` after `ms`; the timer is cleared either way (no lingering). */
function withTimeout(promise, ms, fallback) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((r) => { timer = setTimeout(() => r(fallback), ms); }),
  ]);
}

let signalHandlersInstalled = false;
function installExitHandlers() {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  // Last resort if the test process exits without stopAll(): no orphans left on the ports.
  process.on('exit', () => {
    for (const [pid, p] of processes) {
      if (!p.exited) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      }
    }
  });
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
    process.once(signal, () => {
      stopAll().finally(() => process.exit(code));
    });
  }
}

/**
 * Spawn a process, capture its stdout/stderr to `logFile`, and wait until `ready()` resolves true.
 * @returns {Promise<{pid: number, name: string, logFiles: string[], exit: Promise, stop: Function}>}
 */
export async function startProcess({
  name, command, args, env, logFile, extraLogFiles = [], ready, timeoutMs, expectFailure = false,
  stopTimeoutMs = DEFAULT_TIMEOUTS.stop, killGroup = false,
}) {
  installExitHandlers();
  const fd = openSync(logFile, 'a');
  let child;
  try {
    // Own process group: a Ctrl-C in the terminal reaches only this process, which then stops
    // its children by PID. Unref'd: a test that forgets stopAll() still exits, and the exit hook
    // below kills what is left.
    child = spawn(command, args, {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
      cwd: WASM_TEST_DIR,
      detached: true,
    });
    child.unref();
  } finally {
    closeSync(fd);
  }
  const logFiles = [logFile, ...extraLogFiles];
  // killGroup: a launcher script whose program runs as its child (Keycloak's kc.sh runs java):
  // the last resort kills the whole process group, so nothing is left behind.
  const entry = { name, child, logFiles, exited: false, stopTimeoutMs, killGroup };
  const spawnError = new Promise((resolveSpawn) => { child.once('error', resolveSpawn); });
  const exit = new Promise((resolveExit) => {
    child.once('exit', (code, signal) => {
      entry.exited = true;
      resolveExit({ code, signal });
    });
  });
  entry.exit = exit;
  if (child.pid !== undefined) processes.set(child.pid, entry);
  const err = await withTimeout(spawnError, 50, undefined);
  if (err || child.pid === undefined) {
    if (child.pid !== undefined) processes.delete(child.pid);
    throw new Error(`${name}: cannot run ${command}: ${err?.message ?? 'spawn failed'}`);
  }
  const handle = {
    pid: child.pid,
    name,
    logFiles,
    exit,
    stop: () => stopProcess(child.pid),
    log: () => logDump(logFiles),
  };

  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    if (entry.exited) {
      const { code, signal } = await exit;
      // A start a test makes fail on purpose needs no logs kept; any other does.
      if (!expectFailure) keepRunDir = true;
      processes.delete(child.pid);
      const log = logDump(logFiles);
      throw Object.assign(
        new Error(`${name} (pid ${child.pid}) exited before it was ready (code ${code}, signal ${signal})\n${log}`),
        { log, exitCode: code, signal },
      );
    }
    try {
      // eslint-disable-next-line no-await-in-loop
      if (await ready()) return handle;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      keepRunDir = true;
      await stopProcess(child.pid);
      const log = logDump(logFiles);
      throw Object.assign(
        new Error(`${name} (pid ${child.pid}) not ready within ${timeoutMs} ms`
          + `${lastError ? ` (last check: ${lastError.message})` : ''}\n${log}`),
        { log },
      );
    }
    // eslint-disable-next-line no-await-in-loop
    await sleep(100);
  }
}

/** Resident memory of a process, in KiB (Linux /proc). */
export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Stop one started process by PID: SIGTERM, then SIGKILL after a bounded wait. */
export async function stopProcess(pid, { timeoutMs } = {}) {
  const entry = processes.get(pid);
  if (!entry) return;
  if (!entry.exited) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
    const done = await withTimeout(entry.exit.then(() => true), timeoutMs ?? entry.stopTimeoutMs, false);
    if (!done) {
      try { process.kill(entry.killGroup ? -pid : pid, 'SIGKILL'); } catch { /* already gone */ }
      await withTimeout(entry.exit, 2_000, undefined);
    }
  }
  if (entry.killGroup) {
    // The launcher is gone; its program may not be (SIGKILL is not forwarded).
    try { process.kill(-pid, 'SIGKILL'); } catch { /* the group is empty */ }
  }
  processes.delete(pid);
}

/**
 * Stop every process this harness started (newest first). Removes the run directory unless a
 * start failed or GATEHOUSE_KEEP_LOGS=1 (then its path is printed).
 */
export async function stopAll() {
  for (const fn of stopHooks.splice(0).reverse()) {
    // eslint-disable-next-line no-await-in-loop
    await fn();
  }
  const pids = [...processes.keys()].reverse();
  for (const pid of pids) {
    // eslint-disable-next-line no-await-in-loop
    await stopProcess(pid);
  }
  // Envoy has written its logs out on exit: no credential may be in them.
  const leaks = scanEnvoyLogs();
  if (leaks.length) keepRunDir = true;
  if (runDir) {
    if (keepRunDir || process.env.GATEHOUSE_KEEP_LOGS === '1') {
      process.stderr.write(`harness: logs kept in ${runDir}\n`);
    } else {
      rmSync(runDir, { recursive: true, force: true });
    }
    runDir = undefined;
    keepRunDir = false;
  }
  if (leaks.length) {
    throw new Error(`credentials in Envoy's logs: ${leaks.map((l) => `${l.what} at ${l.file}:${l.line}`).join('; ')}`);
  }
}

const stopHooks = [];

/** Run `fn` (an in-process server's close, say) when stopAll() runs, before the processes stop. */
export function onStopAll(fn) {
  stopHooks.push(fn);
}

/** Keep the run directory (logs) when stopAll() runs, e.g. from a failing test. */
export function keepLogs() {
  keepRunDir = true;
}

/**
 * Poll `fn` until it returns a truthy value (returned), at most `timeoutMs`. Exceptions thrown by
 * `fn` count as "not yet"; the last one is reported on timeout.
 * @param {() => any} fn
 * @param {{timeoutMs?: number, intervalMs?: number, what?: string}} [options]
 */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 100, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      // eslint-disable-next-line no-await-in-loop
      const value = await fn();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    }
    // eslint-disable-next-line no-await-in-loop
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}
