#!/usr/bin/env node
// make soak: a bounded mixed load against Envoy (2 workers) with gatehouse, real Keycloak (a copy
// of the demo realm whose access tokens live 30 s) and the echo service, for a set number of
// minutes. Virtual users sign in on Keycloak's login page by the code flow, use their session
// cookies (which refresh), send bearer tokens (Keycloak's, repeated, and distinct ones that miss
// the cache, signed with keys the fault proxy in front of Keycloak adds to its key set), sign out
// (ending the Keycloak session too), and send bad requests (tampered cookies, forged and malformed
// tokens, bogus callbacks, spoofed headers, sessions without the right group). Every answer is
// checked against the status it must have.
//
// Pass: zero unexpected answers; gatehouse's VM memory flat after the warm-up; no Wasm VM failed
// or was re-created (Envoy's stats and logs). Writes wasm-test/soak/REPORT.md (or --report) and
// exits 1 if a criterion fails.
//
//   node soak/soak.mjs [--minutes 5] [--users 12] [--report PATH]
//
// Needs WASM (the module) and ENVOY_BIN, as the end-to-end tests (the Makefile sets them).

import { parseArgs } from 'node:util';
import { readFile, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

import {
  startEcho, startEnvoy, stopAll, http, CookieJar, browse, passwordToken, envoyStats,
} from '../lib/harness.mjs';
import { rssKiB } from '../lib/processes.mjs';
import { generateKeys, publicJwks, signJwt } from '../lib/keys.mjs';
import { KEYCLOAK_VERSION, createRealmCopy, startKeycloak } from '../lib/keycloak.mjs';
import { keysProxy } from '../lib/tokens.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: process.env.SOAK_MINUTES ?? '5' },
    users: { type: 'string', default: '12' },
    report: { type: 'string', default: join(HERE, 'REPORT.md') },
  },
});
const MINUTES = Number(args.minutes);
const USERS = Number(args.users);
if (!(MINUTES > 0 && MINUTES <= 60)) throw new Error(`--minutes must be in (0, 60], got ${args.minutes}`);
if (!(Number.isInteger(USERS) && USERS >= 1 && USERS <= 64)) throw new Error(`--users must be 1..64, got ${args.users}`);
const WASM = process.env.WASM;
if (!WASM) throw new Error('WASM must point at the built gatehouse.wasm (run through `make soak`)');

const ACCESS_TTL = 30;
const SAMPLE_MS = 5000;
const WARMUP_SHARE = 0.4; // memory must be flat after this share of the run (bounded caches fill up before)
const HTML = { accept: 'text/html,application/xhtml+xml' };
const COOKIE_KEY = 'soak-cookie-key-0123456789abcdef-0123456789';
const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// --- set-up --------------------------------------------------------------------------------------

const jwks = await generateKeys({ algs: ['RS256', 'ES256'], encryptionKey: false });
const kc = await startKeycloak();
const realm = await createRealmCopy(kc, 'demo-soak', { accessTokenLifespan: ACCESS_TTL });
const proxy = await keysProxy(kc, () => publicJwks(jwks).keys);
const echo = await startEcho();
const envoy = await startEnvoy({
  idpPort: proxy.port, // gatehouse's calls to Keycloak; browsers go to Keycloak directly
  echoPort: echo.port,
  wasmPath: WASM,
  concurrency: 2,
  componentLogLevel: 'wasm:info', // debug level would log every request: not what production runs
  filterConfig: {
    provider: {
      issuer: realm.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'],
    },
    session: { keys: [COOKIE_KEY], secure: false, refresh: true, refreshBeforeSeconds: 10 },
    publicPaths: [{ prefix: '/public/' }],
    rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
  },
});
const gateway = envoy.url;
const envoyPid = envoy.pid;

for (const deadline = Date.now() + 20000; ;) {
  // eslint-disable-next-line no-await-in-loop
  const r = await http(`${gateway}/echo`, { headers: HTML });
  if (r.status === 302) break;
  if (Date.now() > deadline) throw new Error(`gatehouse not ready: ${r.status}`);
  // eslint-disable-next-line no-await-in-loop
  await sleep(100);
}

// --- what the users do ----------------------------------------------------------------------------

/** op -> {n, unexpected, ms: number[] (bounded sample)} */
const ops = new Map();
const unexpectedSamples = [];
function record(op, ok, ms, detail) {
  if (!ops.has(op)) ops.set(op, { n: 0, unexpected: 0, ms: [] });
  const o = ops.get(op);
  o.n += 1;
  if (!ok) {
    o.unexpected += 1;
    if (unexpectedSamples.length < 20) unexpectedSamples.push(`${op}: ${detail}`);
  }
  if (o.ms.length < 20000) o.ms.push(ms); else o.ms[Math.floor(Math.random() * 20000)] = ms;
}

/** Runs `fn` (→ [ok, detail]) and records it; a thrown error is an unexpected answer. */
async function step(op, fn) {
  const t0 = performance.now();
  let ok;
  let detail;
  try {
    [ok, detail] = await fn();
  } catch (err) {
    ok = false;
    detail = err.message;
  }
  record(op, ok, performance.now() - t0, detail);
}

const USERS_BY_NAME = { alice: { email: 'alice@example.com', admin: true }, bob: { email: 'bob@example.com', admin: false } };
/** Signed-in browsers: {user, jar, since}. Bounded: the oldest sign out. */
const sessions = [];
const MAX_SESSIONS = 100;
/** Keycloak's own access tokens, renewed before they expire: user -> {token, exp}. */
const idpTokens = new Map();

const pick = (list) => list[Math.floor(Math.random() * list.length)];
const expect = (r, status, extra = true) => [r.status === status && extra, `${r.status} (expected ${status}) ${String(r.body).slice(0, 120)}`];

async function login() {
  const user = Math.random() < 0.5 ? 'alice' : 'bob';
  const jar = new CookieJar();
  const path = `/echo?u=${Math.random().toString(36).slice(2, 8)}`;
  const res = await browse(`${gateway}${path}`, { jar, username: user, password: user });
  const ok = res.response?.status === 200 && res.response.json?.path === path
    && res.response.json.headers['x-auth-request-email'] === USERS_BY_NAME[user].email;
  if (ok) sessions.push({ user, jar, since: Date.now() });
  return [ok, `${res.response?.status} at ${res.url}`];
}

async function sessionRequest() {
  const s = pick(sessions);
  if (!s) return login();
  const admin = Math.random() < 0.3;
  const path = admin ? '/admin/x' : '/echo';
  const r = await http(`${gateway}${path}`, { headers: { cookie: s.jar.header(`${gateway}${path}`) } });
  s.jar.store(`${gateway}${path}`, r.headers['set-cookie']); // a refreshed session
  if (admin && !USERS_BY_NAME[s.user].admin) return expect(r, 403);
  return expect(r, 200, r.json?.headers?.['x-auth-request-email'] === USERS_BY_NAME[s.user].email);
}

async function idpToken(user) {
  const t = idpTokens.get(user);
  if (t && t.exp > now() + 5) return t.token;
  const token = (await passwordToken({ tokenUrl: realm.token, username: user, password: user })).access_token;
  idpTokens.set(user, { token, exp: now() + ACCESS_TTL });
  return token;
}

async function bearerRequest() {
  let token;
  if (Math.random() < 0.5) {
    token = await idpToken(Math.random() < 0.5 ? 'alice' : 'bob'); // repeated: cache hits
  } else {
    // A token never seen before (cache misses), RS256 or ES256.
    token = await signJwt(jwks, {
      iss: realm.issuer, sub: 'soak-sub', aud: 'account', azp: 'api', typ: 'Bearer', exp: now() + 120, iat: now(),
      jti: Math.random().toString(36).slice(2), email: 'soak@example.com', groups: ['/users'],
    }, { alg: Math.random() < 0.5 ? 'RS256' : 'ES256' });
  }
  const r = await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${token}` } });
  return expect(r, 200, typeof r.json?.headers?.['x-auth-request-email'] === 'string');
}

async function logout() {
  if (sessions.length === 0) return login();
  const s = sessions.splice(Math.floor(Math.random() * sessions.length), 1)[0];
  const url = `${gateway}/oauth2/sign_out`;
  const r = await http(url, { method: 'POST', headers: { origin: gateway, cookie: s.jar.header(url) } });
  s.jar.store(url, r.headers['set-cookie']);
  const cleared = !s.jar.list().some((c) => c.name.startsWith('_gatehouse'));
  if (r.status !== 302 || !cleared) return [false, `sign-out: ${r.status}, cookies cleared: ${cleared}`];
  // Keycloak ends its own session too (id_token_hint: no confirmation page).
  const idpLogout = await http(r.headers.location, { headers: { cookie: s.jar.header(r.headers.location) } });
  return [idpLogout.status < 500, `Keycloak logout ${idpLogout.status}`];
}

const BAD = [
  ['no credentials (API)', async () => expect(await http(`${gateway}/echo`), 401)],
  ['tampered session cookie', async () => {
    const s = pick(sessions);
    const v = s?.jar.list().find((c) => c.name === '_gatehouse')?.value ?? 'v1.AAAA.BBBB.CCCC';
    const i = Math.floor(Math.random() * v.length);
    const bad = v.slice(0, i) + (v[i] === 'A' ? 'B' : 'A') + v.slice(i + 1);
    return expect(await http(`${gateway}/echo`, { headers: { cookie: `_gatehouse=${bad}` } }), 401);
  }],
  ['forged token (alg none)', async () => {
    const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const t = `${b({ alg: 'none' })}.${b({ iss: realm.issuer, sub: 'x', aud: 'account', exp: now() + 60 })}.`;
    return expect(await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${t}` } }), 401);
  }],
  ['expired token', async () => {
    const t = await signJwt(jwks, { iss: realm.issuer, sub: 'x', aud: 'account', exp: now() - 3600, iat: now() - 7200 });
    return expect(await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${t}` } }), 401);
  }],
  ['malformed Authorization', async () => expect(await http(`${gateway}/echo`, { headers: { authorization: 'Bearer a.b' } }), 401)],
  ['bogus callback', async () => expect(await http(`${gateway}/oauth2/callback?code=x&state=${'A'.repeat(43)}`, { headers: HTML }), 400)],
  ['spoofed identity header, public path', async () => {
    const r = await http(`${gateway}/public/x`, { headers: { 'x-auth-request-email': 'ceo@example.com' } });
    return expect(r, 200, r.json?.headers?.['x-auth-request-email'] === undefined);
  }],
  ['open redirect attempt', async () => {
    const r = await http(`${gateway}//evil.example/x`, { headers: HTML });
    return expect(r, 302, new URL(r.headers.location ?? 'http://x').port === String(kc.port));
  }],
];

// Shares of the operations. Sign-ins and sign-outs are rare, as in real traffic, so that sessions
// live long enough to be refreshed (their access tokens expire after ACCESS_TTL seconds).
const MIX = [
  [0.002, 'login', login],
  [0.450, 'session request', sessionRequest],
  [0.370, 'bearer request', bearerRequest],
  [0.001, 'logout', logout],
  [0.177, 'bad request', null],
];

async function user(until) {
  while (Date.now() < until) {
    let x = Math.random();
    const [, name, fn] = MIX.find(([w]) => { x -= w; return x < 0; }) ?? MIX[1];
    if (fn) {
      // eslint-disable-next-line no-await-in-loop
      await step(name, fn);
    } else {
      const [badName, badFn] = pick(BAD);
      // eslint-disable-next-line no-await-in-loop
      await step(`bad: ${badName}`, badFn);
    }
    if (sessions.length > MAX_SESSIONS) {
      // eslint-disable-next-line no-await-in-loop
      await step('logout', logout);
    }
  }
}

// --- sampling -------------------------------------------------------------------------------------

const samples = [];
async function sample(t0) {
  const st = await envoyStats(envoy);
  const get = (re) => Object.entries(st).filter(([k]) => re.test(k)).reduce((a, [, v]) => a + v, 0);
  samples.push({
    s: Math.round((Date.now() - t0) / 1000),
    vmMemory: get(/gatehouse\.vm_memory_bytes$/),
    rss: rssKiB(envoyPid) * 1024,
    allowed: get(/gatehouse\.requests\.allowed$/),
    denied: get(/gatehouse\.requests\.denied\.\w+$/),
    logins: get(/gatehouse\.logins\.completed$/),
    refreshed: get(/gatehouse\.sessions\.refreshed$/),
    refreshFailed: get(/gatehouse\.sessions\.refresh_failed$/),
    vmActive: get(/^wasm\.envoy\.wasm\.runtime\.v8\.active$/),
    vmCreated: get(/^wasm\.envoy\.wasm\.runtime\.v8\.created$/),
    stats: st,
  });
}

// --- run ------------------------------------------------------------------------------------------

console.log(`soak: ${MINUTES} min, ${USERS} users, Envoy with 2 workers at ${gateway}`);
const t0 = Date.now();
const until = t0 + MINUTES * 60_000;
await sample(t0);
// Some signed-in browsers to start with.
await Promise.all(Array.from({ length: USERS }, () => step('login', login)));
const sampler = (async () => {
  while (Date.now() < until) {
    // eslint-disable-next-line no-await-in-loop
    await sleep(Math.min(SAMPLE_MS, Math.max(0, until - Date.now())));
    // eslint-disable-next-line no-await-in-loop
    await sample(t0);
    const last = samples[samples.length - 1];
    const done = [...ops.values()].reduce((a, o) => a + o.n, 0);
    if (last.s % 30 < SAMPLE_MS / 1000) {
      console.log(`soak: ${last.s}s, ${done} operations, ${[...ops.values()].reduce((a, o) => a + o.unexpected, 0)} unexpected, VM memory ${(last.vmMemory / 1048576).toFixed(1)} MiB, Envoy RSS ${(last.rss / 1048576).toFixed(0)} MiB, sessions refreshed ${last.refreshed}`);
    }
  }
})();
await Promise.all([...Array.from({ length: USERS }, () => user(until)), sampler]);
const elapsed = (Date.now() - t0) / 1000;
await sample(t0);

// --- verdict and report ---------------------------------------------------------------------------

const envoyLog = await readFile(envoy.logFiles.find((f) => f.endsWith('.log')) ?? envoy.logFiles[0], 'utf8').catch(() => '');
const traps = ['panicked at', 'Uncaught', 'RuntimeError', 'Function: proxy_on_']
  .map((p) => [p, envoyLog.split('\n').filter((l) => l.includes(p)).length]).filter(([, n]) => n > 0);
const first = samples[0];
const last = samples[samples.length - 1];
const warm = samples.find((s) => s.s >= elapsed * WARMUP_SHARE) ?? first;
const afterWarm = samples.filter((s) => s.s >= warm.s);
const vmMax = Math.max(...afterWarm.map((s) => s.vmMemory));
const vmGrowth = vmMax - warm.vmMemory;
const rssGrowth = last.rss - warm.rss;
const totalOps = [...ops.values()].reduce((a, o) => a + o.n, 0);
const unexpected = [...ops.values()].reduce((a, o) => a + o.unexpected, 0);
const failureStats = Object.entries(last.stats).filter(([k, v]) => /^wasm\./.test(k) && /fail|crash|trap/i.test(k) && v > 0);

const criteria = [
  ['zero unexpected answers', unexpected === 0, `${unexpected} of ${totalOps}`],
  ['gatehouse VM memory flat after the warm-up (grows ≤ 1 MiB)', vmGrowth <= 1048576,
    `${(warm.vmMemory / 1048576).toFixed(2)} MiB at ${warm.s}s, at most ${(vmMax / 1048576).toFixed(2)} MiB after, end ${(last.vmMemory / 1048576).toFixed(2)} MiB`],
  ['no Wasm VM failed or re-created', last.vmActive === first.vmActive && last.vmCreated === first.vmCreated && failureStats.length === 0,
    `VMs active ${first.vmActive} → ${last.vmActive}, created ${first.vmCreated} → ${last.vmCreated}${failureStats.length ? `, ${failureStats.map(([k, v]) => `${k}=${v}`).join(', ')}` : ''}`],
  ['no trap or panic in Envoy\'s log', traps.length === 0, traps.length ? traps.map(([p, n]) => `${n}× "${p}"`).join(', ') : 'none'],
  ['sessions refreshed, none failed', last.refreshed > 0 && last.refreshFailed === 0, `${last.refreshed} refreshed, ${last.refreshFailed} failed`],
];
// Stops everything; Envoy's logs, now complete, must hold none of the credentials used.
let leak = null;
try { await stopAll(); } catch (err) { leak = err.message; }
criteria.push(['no credential in Envoy\'s logs', leak === null, leak ?? 'none of the tokens, codes, cookies and secrets used']);
const passed = criteria.every(([, ok]) => ok);

const pct = (list, p) => {
  if (!list.length) return NaN;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const mib = (b) => (b / 1048576).toFixed(1);
let commit = 'unknown';
try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim(); } catch { /* not a checkout */ }
const every = Math.max(1, Math.round(samples.length / 12));
const lines = [
  '# Soak report',
  '',
  `Generated by \`make soak\` (\`wasm-test/soak/soak.mjs\`) at commit ${commit}, ${new Date().toISOString().slice(0, 16)}Z:`,
  `${elapsed.toFixed(0)} s of mixed load by ${USERS} concurrent users against Envoy ${'(2 workers)'} with gatehouse (V8),`,
  `Keycloak ${KEYCLOAK_VERSION} (a copy of the demo realm: access tokens live ${ACCESS_TTL} s; sessions refresh 10 s before) and the echo service, all on 127.0.0.1.`,
  '',
  `**${passed ? 'PASSED' : 'FAILED'}**`,
  '',
  '| criterion | result | figures |',
  '|---|---|---|',
  ...criteria.map(([name, ok, fig]) => `| ${name} | ${ok ? 'met' : '**not met**'} | ${fig} |`),
  '',
  `## Operations (${totalOps}, ${(totalOps / elapsed).toFixed(0)}/s)`,
  '',
  '| operation | count | unexpected | p50 ms | p99 ms |',
  '|---|---|---|---|---|',
  ...[...ops.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, o]) => `| ${name} | ${o.n} | ${o.unexpected} | ${pct(o.ms, 50).toFixed(1)} | ${pct(o.ms, 99).toFixed(1)} |`),
  '',
  ...(unexpectedSamples.length ? ['Unexpected answers (first 20):', '', ...unexpectedSamples.map((u) => `- ${u}`), ''] : []),
  '## gatehouse counters at the end',
  '',
  '| counter | value |',
  '|---|---|',
  ...Object.entries(last.stats).filter(([k]) => /gatehouse\./.test(k) && !/vm_memory|callout_ms/.test(k)).sort()
    .map(([k, v]) => `| \`${k.replace(/^wasmcustom\./, '')}\` | ${v} |`),
  '',
  '## Memory over time',
  '',
  `gatehouse's linear memory (gauge \`gatehouse.vm_memory_bytes\`, the workers' VMs) and Envoy's resident memory;`,
  `Envoy RSS grew ${mib(rssGrowth)} MiB after the warm-up (${mib(warm.rss)} → ${mib(last.rss)} MiB).`,
  '',
  '| time | VM memory MiB | Envoy RSS MiB | requests allowed | denied | logins | sessions refreshed |',
  '|---|---|---|---|---|---|---|',
  ...samples.filter((_, i) => i % every === 0 || i === samples.length - 1)
    .map((s) => `| ${s.s} s | ${mib(s.vmMemory)} | ${mib(s.rss)} | ${s.allowed} | ${s.denied} | ${s.logins} | ${s.refreshed} |`),
  '',
];
await writeFile(args.report, `${lines.join('\n')}\n`);
console.log(lines.slice(6, 9 + criteria.length).join('\n'));
console.log(`soak: report written to ${args.report}`);
process.exit(passed ? 0 : 1);
