// Secrets must never reach Envoy's logs: every credential that goes to or comes from Envoy is noted
// (http() notes each exchange, startEnvoy() its configuration's secrets and its log files), and
// stopAll() scans the Envoy logs for them.

import { readFileSync } from 'node:fs';

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

/** Registers an Envoy log file for the scan in stopAll(). */
export function noteEnvoyLog(file) {
  envoyLogFiles.add(file);
}

/**
 * The noted secrets in the registered Envoy log files ([{file, line, what}], see secretsInFiles),
 * with a line on stderr saying what was checked; the files are forgotten afterwards.
 */
export function scanEnvoyLogs() {
  const leaks = secretsInFiles(envoyLogFiles);
  if (envoyLogFiles.size) {
    process.stderr.write(`harness: ${envoyLogFiles.size} Envoy log files checked for ${secrets.size} credentials: ${leaks.length ? 'FOUND' : 'none found'}\n`);
  }
  envoyLogFiles.clear();
  return leaks;
}

function noteCookiePairs(header, what) {
  for (const pair of String(header).split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0) noteSecret(pair.slice(eq + 1).trim(), `${what} ${pair.slice(0, eq).trim()}`);
  }
}

const SECRET_FIELDS = ['access_token', 'refresh_token', 'id_token', 'code', 'client_secret', 'password', 'logout_token'];

/** Notes the credentials of one http() exchange (request headers and body, response). */
export function noteExchange(pairs, payload, res) {
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
