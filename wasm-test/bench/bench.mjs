#!/usr/bin/env node
// Issue 5 benchmark: gatehouse against no filter and Envoy's native jwt_authn and oauth2 filters,
// in real Envoy.
//
//   node wasm-test/bench/bench.mjs [--duration 5] [--rounds 3] [--out wasm-test/bench/RESULTS.md]
//     [--pool 20000] [--connections 16] [--threads 2] [--wasm <path>] [--compare <path>]
//
// --compare: another gatehouse module (an earlier build, say) measured in the same rounds, as
// cases b~, c~, d-RS256~ and g~ beside b, c, d-RS256 and g: before/after ratios from one run.
//
// Every Envoy runs with ONE worker (--concurrency 1) and answers inside itself (route
// `direct_response` 200), so only the HTTP filters differ. Load comes from wrk (fixed duration);
// the cases are interleaved and repeated, and each result is a ratio to the no-filter run of the
// same round. All processes are started by the harness and stopped by PID; wrk runs are bounded
// by -d plus a kill timeout.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, writeFile, rm } from 'node:fs/promises';
import { readFileSync, statSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { dirname, join, resolve, relative } from 'node:path';
import { parseArgs } from 'node:util';

import {
  freePort, startEcho, startEnvoy, stopAll, http, browse, CookieJar, waitFor, envoyStats,
  REPO_ROOT, WASM_TEST_DIR, envoyBin,
} from '../lib/harness.mjs';
import { OAUTH2_PROXY_VERSION } from '../lib/oauth2proxy.mjs';
import { rssKiB } from '../lib/processes.mjs';
import { downBehaviour, startSeedStacks } from './seeds.mjs';
import { directResponse, withoutAccessLog } from './envoy-configs.mjs';
import { wrk as wrkRun } from './wrk.mjs';
import { ratioChart } from './chart.mjs';
import { generateKeys, signJwt, publicJwks } from '../lib/keys.mjs';
import { KEYCLOAK_VERSION, startKeycloak } from '../lib/keycloak.mjs';
import { keysProxy } from '../lib/tokens.mjs';

const { values: opt } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string', default: join(WASM_TEST_DIR, 'bench', 'RESULTS.md') },
    pool: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '16' },
    threads: { type: 'string', default: '2' },
    wasm: { type: 'string', default: join(REPO_ROOT, 'target', 'wasm32-wasip1', 'release', 'gatehouse.wasm') },
    noop: { type: 'string', default: join(REPO_ROOT, 'target', 'noop', 'wasm32-wasip1', 'release', 'noop_filter.wasm') },
    only: { type: 'string' },
    compare: { type: 'string' },
  },
});
const DURATION = Number(opt.duration);
const ROUNDS = Number(opt.rounds);
const POOL = Number(opt.pool);
const CONNS = Number(opt.connections);
const THREADS = Number(opt.threads);
const WASM = resolve(opt.wasm);
const NOOP = resolve(opt.noop);
const COMPARE = opt.compare ? resolve(opt.compare) : null;
// --only a,b,g: run just these cases (for quick comparisons while working; the baseline always runs).
const ONLY = opt.only ? new Set(['a', ...opt.only.split(',')]) : null;
for (const [k, v] of Object.entries({ DURATION, ROUNDS, POOL, CONNS, THREADS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k.toLowerCase()} must be a positive integer`);
}
const LUA = join(WASM_TEST_DIR, 'bench', 'tokens.lua');
const COOKIE_KEY = 'bench-cookie-key-0123456789abcdef0123456789';
const ALGS = ['RS256', 'ES256', 'EdDSA'];
const started = Date.now();
const log = (m) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${m}\n`);

/** wrk with this run's connections, threads and (default) duration. */
const wrk = (url, o = {}) => wrkRun(url, { connections: CONNS, threads: THREADS, duration: DURATION, ...o });

// --- Envoy configurations -------------------------------------------------------------------------

function jwtAuthnFilter({ issuer, jwks, cache }) {
  const signing = { keys: publicJwks(jwks).keys.filter((k) => (k.use ?? 'sig') === 'sig') };
  return {
    name: 'envoy.filters.http.jwt_authn',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
      providers: {
        idp: {
          issuer,
          audiences: ['api'],
          local_jwks: { inline_string: JSON.stringify(signing) },
          ...(cache ? { jwt_cache_config: { jwt_cache_size: 1000 } } : {}),
        },
      },
      rules: [{ match: { prefix: '/' }, requires: { provider_name: 'idp' } }],
    },
  };
}

function oauth2Filter({ idpPort, listenPort }) {
  const oidc = `http://127.0.0.1:${idpPort}/realms/demo/protocol/openid-connect`;
  return {
    name: 'envoy.filters.http.oauth2',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2',
      config: {
        token_endpoint: { cluster: 'idp', uri: `${oidc}/token`, timeout: '5s' },
        authorization_endpoint: `${oidc}/auth`,
        redirect_uri: `http://127.0.0.1:${listenPort}/oauth2/callback`,
        redirect_path_matcher: { path: { exact: '/oauth2/callback' } },
        signout_path: { path: { exact: '/signout' } },
        credentials: { client_id: 'gateway', token_secret: { name: 'oauth2-token' }, hmac_secret: { name: 'oauth2-hmac' } },
        auth_scopes: ['openid'],
        auth_type: 'BASIC_AUTH',
      },
    },
  };
}

/** Static secrets for the native oauth2 filter. */
function withOauth2Secrets(customize) {
  return (b) => {
    const out = customize(b);
    out.static_resources.secrets = [
      { name: 'oauth2-token', generic_secret: { secret: { inline_string: 'gateway-secret' } } },
      { name: 'oauth2-hmac', generic_secret: { secret: { inline_string: 'bench-hmac-secret-0123456789abcdef' } } },
    ];
    return out;
  };
}

// --- start-up, memory, logins ----------------------------------------------------------------------

const sleepMs = (ms) => new Promise((r) => { setTimeout(r, ms); });

/**
 * Start-up of a fresh Envoy, median of `times` starts: milliseconds from spawning it to its first
 * 200 on `path` (polled every 2 ms, alongside the harness's own readiness check) and, for a Wasm
 * filter, from Envoy's wasm debug log: compiling the module (base VM created → first VM
 * instantiated) and the worker's VM from its creation to the first 200 (configure, key fetch);
 * and Envoy's resident memory right after that first 200 (before any load: what start-up costs).
 */
async function startupTimes(times, startOpts, { path = '/x', headers = {} } = {}) {
  const runs = [];
  for (let i = 0; i < times; i += 1) {
    const listenPort = await freePort();
    const url = `http://127.0.0.1:${listenPort}${path}`;
    const t0 = performance.now();
    let done = false;
    const poll = (async () => {
      while (!done && performance.now() - t0 < 30000) {
        const r = await http(url, { headers, timeoutMs: 1000 }).catch(() => null);
        if (r?.status === 200) return { ms: performance.now() - t0, wall: Date.now() };
        await sleepMs(2);
      }
      throw new Error(`${url} gave no 200 within 30 s`);
    })();
    const e = await startEnvoy({ ...startOpts, listenPort, componentLogLevel: 'wasm:debug' });
    let first;
    let residentKiB = NaN;
    try {
      first = await poll;
      residentKiB = rssKiB(e.pid);
    } finally {
      done = true;
      await e.stop(); // Envoy writes its log file out when it exits
    }
    {
      // "[2026-11-24 11:44:03.477][18298][debug][wasm] ... Base Wasm created" (local time)
      const lines = readFileSync(e.logFiles[1], 'utf8').split('\n');
      const at = (re, pred = () => true) => {
        for (const line of lines) {
          const m = /^\[(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)\.(\d+)\]\[(\d+)\]/.exec(line);
          if (m && re.test(line) && pred(m[8])) return { wall: new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]).getTime(), thread: m[8] };
        }
        return null;
      };
      const base = at(/Base Wasm created/);
      const firstVm = at(/Thread-Local Wasm created/);
      const workerVm = base && at(/Thread-Local Wasm created/, (t) => t !== base.thread);
      runs.push({
        first200: first.ms,
        compile: base && firstVm ? firstVm.wall - base.wall : NaN,
        vmToFirst200: workerVm ? first.wall - workerVm.wall : NaN,
        residentKiB,
      });
    }
  }
  return {
    first200: median(runs.map((r) => r.first200)),
    compile: median(runs.map((r) => r.compile)),
    vmToFirst200: median(runs.map((r) => r.vmToFirst200)),
    residentKiB: median(runs.map((r) => r.residentKiB)),
  };
}


/**
 * Code-flow logins through gatehouse for `seconds`, `parallel` at a time (each a fresh browser:
 * gateway → Keycloak's login form → Keycloak → gateway callback → gateway), and the time per login
 * split into gateway hops and Keycloak hops (client-observed), plus Keycloak's time on the token
 * endpoint that the callback hop includes (timed by the proxy in front of it, which gatehouse's
 * calls go through).
 */
async function loginRun({ url, proxy, seconds, parallel }) {
  const since = Date.now();
  const perLogin = [];
  let failures = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (performance.now() < deadline) {
      const jar = new CookieJar();
      const l0 = performance.now();
      const r = await browse(`${url}/app`, { jar, username: 'alice', password: 'alice' });
      if (r.response?.status !== 200) { failures += 1; continue; }
      const onGateway = (h) => h.url.startsWith(url);
      const sum = (hs) => hs.reduce((a, h) => a + h.ms, 0);
      perLogin.push({
        total: performance.now() - l0,
        gateway: sum(r.history.filter(onGateway)),
        gatewayHops: r.history.filter(onGateway).length,
        idp: sum(r.history.filter((h) => !onGateway(h))),
      });
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  // Token-endpoint calls through the proxy came from gatehouse.
  const tokenMs = (proxy?.requests ?? [])
    .filter((r) => r.at >= since && r.status === 200 && /\/protocol\/openid-connect\/token$/.test(r.path))
    .map((r) => r.ms);
  return {
    parallel,
    logins: perLogin.length,
    failures,
    perSecond: perLogin.length / elapsed,
    total: median(perLogin.map((x) => x.total)),
    gateway: median(perLogin.map((x) => x.gateway)),
    gatewayHops: median(perLogin.map((x) => x.gatewayHops)),
    idp: median(perLogin.map((x) => x.idp)),
    token: tokenMs.length ? median(tokenMs) : NaN,
  };
}

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : (s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2);
}

// --- main -----------------------------------------------------------------------------------------

async function main() {
  statSync(WASM);
  const moduleBytes = statSync(WASM).size;
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-bench-'));
  try {
    // Tokens are signed with keys of this run, which the proxy in front of Keycloak adds to the
    // key set Keycloak serves; sessions come from real logins on Keycloak's form.
    const jwks = await generateKeys({ encryptionKey: false });
    log(`starting Keycloak ${KEYCLOAK_VERSION}`);
    const kc = await startKeycloak();
    const proxy = await keysProxy(kc, () => publicJwks(jwks).keys);
    const idpPort = proxy.port; // Envoy's idp cluster
    const { issuer } = kc;
    const echoPort = await freePort(); // nothing listens: every route answers directly

    // Token pools (distinct tokens, one file per algorithm) and one repeated token.
    const now = Math.floor(Date.now() / 1000);
    const claims = (i) => ({
      iss: issuer, sub: `bench-user-${i}`, aud: ['account', 'api'], azp: 'api', typ: 'Bearer',
      exp: now + 3600, iat: now, jti: `bench-${i}`, email: 'bench@example.com', preferred_username: 'bench',
      groups: ['/users'], realm_access: { roles: ['backendaccess'] },
    });
    const pools = {};
    for (const alg of ALGS) {
      const t0 = Date.now();
      const lines = [];
      for (let i = 0; i < POOL; i += 1) {
        // eslint-disable-next-line no-await-in-loop
        lines.push(await signJwt(jwks, claims(`${alg}-${i}`), { alg }));
      }
      pools[alg] = join(dir, `tokens-${alg}.txt`);
      await writeFile(pools[alg], `${lines.join('\n')}\n`);
      log(`minted ${POOL} ${alg} tokens in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    }
    const sameToken = await signJwt(jwks, claims('same'), { alg: 'RS256' });

    log('starting Envoys (one worker each)');
    const none = await startEnvoy({ idpPort, echoPort, concurrency: 1, logLevel: 'warn', customize: directResponse() });
    const ghConfig = {
      provider: { issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'] },
      session: { keys: [COOKIE_KEY], secure: false },
      publicPaths: [{ prefix: '/public/' }],
    };
    const ghStart = { idpPort, echoPort, concurrency: 1, logLevel: 'warn', wasmPath: WASM, customize: directResponse(), filterConfig: ghConfig };
    const gh = await startEnvoy(ghStart);
    const noop = await startEnvoy({
      idpPort, echoPort, concurrency: 1, logLevel: 'warn', wasmPath: NOOP, filterConfig: {}, customize: directResponse(),
    });
    const jwtNoCache = await startEnvoy({
      idpPort, echoPort, concurrency: 1, logLevel: 'warn', customize: directResponse([jwtAuthnFilter({ issuer, jwks, cache: false })]),
    });
    const jwtCache = await startEnvoy({
      idpPort, echoPort, concurrency: 1, logLevel: 'warn', customize: directResponse([jwtAuthnFilter({ issuer, jwks, cache: true })]),
    });

    // Behind a real upstream: the echo service, with no filter and with gatehouse.
    const realEcho = await startEcho();
    const noneEcho = await startEnvoy({
      idpPort, echoPort: realEcho.port, concurrency: 1, logLevel: 'warn', customize: withoutAccessLog,
    });
    const ghEcho = await startEnvoy({ ...ghStart, echoPort: realEcho.port, customize: withoutAccessLog });
    log(`starting the seeds' stack: oauth2-proxy ${OAUTH2_PROXY_VERSION} behind ext_authz, with cookie and with Redis sessions`);
    const seeds = await startSeedStacks({
      kc, idpPort, echoPort, realEchoPort: realEcho.port,
    });

    // (f) Envoy's native oauth2 filter, with cookies from a real login through it. Optional: if
    // the login does not work, (f) is left out with a warning.
    let oauth2Cookie;
    let oauth2Envoy;
    try {
      const lp = await freePort();
      oauth2Envoy = await startEnvoy({
        listenPort: lp, idpPort, echoPort, concurrency: 1, logLevel: 'warn',
        customize: withOauth2Secrets(directResponse([oauth2Filter({ idpPort: kc.port, listenPort: lp })])),
      });
      const ojar = new CookieJar();
      const ol = await browse(`${oauth2Envoy.url}/app`, { jar: ojar, username: 'alice', password: 'alice' });
      oauth2Cookie = ojar.header(`${oauth2Envoy.url}/app`);
      if (ol.response?.status !== 200 || !oauth2Cookie) {
        throw new Error(`login through oauth2 ended with ${ol.response?.status}: ${ol.history.map((h) => `${h.status} ${h.url.replace(/\?.*/, '')}`).join(' -> ')}`);
      }
      log(`oauth2 cookies: ${oauth2Cookie.length} bytes in the Cookie header`);
    } catch (err) {
      log(`WARNING: (f) native oauth2 left out: ${err.message.split('\n')[0]}`);
      oauth2Cookie = undefined;
    }

    // gatehouse is ready when its keys are loaded; then sign in once for a session cookie.
    for (const e of [gh, ghEcho]) {
      await waitFor(async () => (await http(`${e.url}/x`, { headers: { authorization: `Bearer ${sameToken}` } })).status === 200,
        { timeoutMs: 30000, what: 'gatehouse to load keys' });
    }
    const jar = new CookieJar();
    const login = await browse(`${gh.url}/app`, { jar, username: 'alice', password: 'alice' });
    const cookie = jar.header(`${gh.url}/app`);
    if (login.response?.status !== 200 || !cookie) {
      throw new Error(`login failed: ${login.response?.status} ${login.history.map((h) => `${h.status} ${h.url}`).join(' -> ')}`);
    }
    log(`session cookie: ${cookie.length} bytes in the Cookie header`);

    // --compare: the other module on an Envoy of its own, with a session of its own.
    const compared = [];
    let cmpEnvoy = null;
    if (COMPARE) {
      const cmp = await startEnvoy({ ...ghStart, wasmPath: COMPARE });
      cmpEnvoy = cmp;
      await waitFor(async () => (await http(`${cmp.url}/x`, { headers: { authorization: `Bearer ${sameToken}` } })).status === 200,
        { timeoutMs: 30000, what: 'the compared module to load keys' });
      const cjar = new CookieJar();
      const clogin = await browse(`${cmp.url}/app`, { jar: cjar, username: 'alice', password: 'alice' });
      const ccookie = cjar.header(`${cmp.url}/app`);
      if (clogin.response?.status !== 200 || !ccookie) throw new Error(`login through the compared module failed: ${clogin.response?.status}`);
      const label = relative(REPO_ROOT, COMPARE);
      compared.push(
        { id: 'b~', name: `${label}, session cookie`, url: `${cmp.url}/x`, headers: { cookie: ccookie } },
        { id: 'c~', name: `${label}, same RS256 bearer (token cache)`, url: `${cmp.url}/x`, headers: { authorization: `Bearer ${sameToken}` } },
        { id: 'd-RS256~', name: `${label}, distinct RS256 bearer`, url: `${cmp.url}/x`, pool: pools.RS256 },
        { id: 'g~', name: `${label}, public path`, url: `${cmp.url}/public/x` },
      );
    }

    const bearer = { authorization: `Bearer ${sameToken}` };
    const allCases = [
      { id: 'a', name: 'no filter', url: `${none.url}/x` },
      { id: 'h', name: 'empty Proxy-Wasm filter (floor for any Wasm filter)', url: `${noop.url}/x` },
      // The same floor for the same request as b: Envoy receiving and parsing the session cookie
      // costs no filter something too, and that is not gatehouse's cost.
      { id: 'h-cookie', name: 'empty Proxy-Wasm filter, with gatehouse\'s session cookie sent', url: `${noop.url}/x`, headers: { cookie } },
      { id: 'b', name: 'gatehouse, session cookie', url: `${gh.url}/x`, headers: { cookie } },
      { id: 'c', name: 'gatehouse, same RS256 bearer (token cache)', url: `${gh.url}/x`, headers: bearer, envoy: gh },
      ...ALGS.map((alg) => ({
        id: `d-${alg}`, name: `gatehouse, distinct ${alg} bearer`, url: `${gh.url}/x`, pool: pools[alg], envoy: gh,
      })),
      { id: 'e-same', name: 'jwt_authn, same RS256 bearer, no cache', url: `${jwtNoCache.url}/x`, headers: bearer },
      { id: 'e-same-cache', name: 'jwt_authn, same RS256 bearer, jwt_cache_config', url: `${jwtCache.url}/x`, headers: bearer },
      ...ALGS.map((alg) => ({
        id: `e-${alg}`, name: `jwt_authn, distinct ${alg} bearer, no cache`, url: `${jwtNoCache.url}/x`, pool: pools[alg],
      })),
      { id: 'e-RS256-cache', name: 'jwt_authn, distinct RS256 bearer, jwt_cache_config', url: `${jwtCache.url}/x`, pool: pools.RS256 },
      ...(oauth2Cookie ? [{ id: 'f', name: 'oauth2 (native), session cookies', url: `${oauth2Envoy.url}/x`, headers: { cookie: oauth2Cookie } }] : []),
      { id: 'g', name: 'gatehouse, public path', url: `${gh.url}/public/x` },
      ...seeds.cases,
      { id: 'a-echo', name: 'no filter, echo upstream', url: `${noneEcho.url}/x` },
      { id: 'b-echo', name: 'gatehouse, session cookie, echo upstream', url: `${ghEcho.url}/x`, headers: { cookie } },
      ...seeds.echoCases,
      // Control: the token-cycling Lua script against no filter (wrk's own ceiling with a script).
      { id: 'a-lua', name: 'no filter, wrk cycling the RS256 pool (client control)', url: `${none.url}/x`, pool: pools.RS256 },
      ...compared,
    ];
    const cases = ONLY ? allCases.filter((c) => ONLY.has(c.id)) : allCases;

    // Sanity: every case answers 200 once, and a request without credentials is refused.
    for (const c of cases) {
      const headers = c.pool ? { authorization: `Bearer ${readFileSync(c.pool, 'utf8').split('\n', 1)[0]}` } : (c.headers ?? {});
      const r = await http(c.url, { headers });
      if (r.status !== 200) throw new Error(`case ${c.id} (${c.name}) answers ${r.status}: ${r.body.slice(0, 200)}`);
    }
    for (const e of [gh, jwtNoCache, ...(oauth2Cookie ? [oauth2Envoy] : [])]) {
      const r = await http(`${e.url}/x`);
      const expected = e === oauth2Envoy ? 302 : 401; // the native oauth2 filter redirects to login
      if (r.status !== expected) throw new Error(`${e.url}/x without credentials answers ${r.status}, expected ${expected}`);
    }

    const run = (c, duration) => wrk(c.url, {
      headers: c.headers, duration,
      ...(c.pool ? { script: LUA, scriptArgs: [c.pool, String(THREADS)] } : {}),
    });

    log('warm-up (1 s per case)');
    for (const c of cases) await run(c, 1);

    const results = []; // results[round][caseId] = {rps, p50, p99, ratio, ...}
    const cacheStat = async () => {
      const s = await envoyStats(gh, 'token_cache');
      const pick = (w) => Object.entries(s).filter(([k]) => k.includes(`token_cache`) && k.endsWith(w)).reduce((a, [, v]) => a + v, 0);
      return { hits: pick('hits'), misses: pick('misses') };
    };
    const cacheDelta = {}; // caseId -> {hits, misses} summed over rounds
    for (let r = 0; r < ROUNDS; r += 1) {
      // Rotate the order each round (baseline first every time, so its ratio is defined even if
      // the run is cut short); rotation spreads drift over the cases.
      const rest = cases.slice(1);
      const rot = rest.slice(r % rest.length).concat(rest.slice(0, r % rest.length));
      const round = {};
      for (const c of [cases[0], ...rot]) {
        // gatehouse hands its counts to Envoy once a second: let the last case's counts land first.
        if (c.envoy) await sleepMs(1100);
        const before = c.envoy ? await cacheStat() : null;
        // eslint-disable-next-line no-await-in-loop
        const res = await run(c, DURATION);
        if (before) {
          await sleepMs(1100);
          const after = await cacheStat();
          const d = cacheDelta[c.id] ?? { hits: 0, misses: 0 };
          d.hits += after.hits - before.hits;
          d.misses += after.misses - before.misses;
          cacheDelta[c.id] = d;
        }
        round[c.id] = res;
        log(`round ${r + 1}/${ROUNDS} ${c.id.padEnd(14)} ${res.rps.toFixed(0).padStart(6)} req/s  p50 ${res.p50.toFixed(2)} ms  p99 ${res.p99.toFixed(2)} ms${res.non2xx ? `  NON-2xx ${res.non2xx}` : ''}${res.errors ? `  ${res.errors}` : ''}`);
      }
      for (const c of cases) round[c.id].ratio = round[c.id].rps / round.a.rps;
      results.push(round);
    }

    // --- memory (after the load: token cache filled), start-up, logins ----------------------------
    const linearOf = async (e) => (await envoyStats(e, 'vm_memory_bytes').then((st) => Object.entries(st).find(([k]) => k.endsWith('gatehouse.vm_memory_bytes'))?.[1])) ?? NaN;
    const mem = {
      none: rssKiB(none.pid), noop: rssKiB(noop.pid), gh: rssKiB(gh.pid), seeds: seeds.memory(),
      ghLinear: await linearOf(gh),
      cmp: cmpEnvoy ? rssKiB(cmpEnvoy.pid) : null,
      cmpLinear: cmpEnvoy ? await linearOf(cmpEnvoy) : NaN,
    };
    log(`RSS: no filter ${mem.none} KiB, empty Wasm filter ${mem.noop} KiB, gatehouse ${mem.gh} KiB; gatehouse linear memory ${mem.ghLinear} bytes`);

    let startup = null;
    if (!ONLY || ONLY.has('startup')) {
      log('start-up: Envoy spawn to first 200, 3 fresh starts each');
      const signing = { keys: publicJwks(jwks).keys.filter((k) => (k.use ?? 'sig') === 'sig') };
      const base = { idpPort, echoPort, concurrency: 1, logLevel: 'warn', customize: directResponse() };
      startup = {
        none: await startupTimes(3, base),
        noop: await startupTimes(3, { ...base, wasmPath: NOOP, filterConfig: {} }),
        inline: await startupTimes(3, { ...ghStart, filterConfig: { provider: { ...ghConfig.provider, jwks: signing }, publicPaths: ghConfig.publicPaths } },
          { headers: bearer }),
        fetched: await startupTimes(3, ghStart, { headers: bearer }),
      };
      log(`start-up: ${JSON.stringify(startup)}`);
    }

    const logins = [];
    if (!ONLY || ONLY.has('login')) {
      for (const parallel of [1, 8]) {
        const l = await loginRun({ url: gh.url, proxy, seconds: DURATION, parallel });
        log(`logins, ${parallel} at a time: ${l.perSecond.toFixed(1)}/s (${l.failures} failed); per login ${l.total.toFixed(1)} ms, gateway hops ${l.gateway.toFixed(1)} ms, token endpoint ${l.token.toFixed(1)} ms`);
        logins.push(l);
      }
    }
    // Logins on each stack, one at a time, interleaved over the rounds (Keycloak warms up as it
    // goes): medians of the rounds' medians.
    const stackLogins = [];
    if (!ONLY || ONLY.has('login')) {
      const stacksToLogIn = [['gatehouse', gh.url], ['oauth2-proxy, cookie sessions', seeds.cookie.url], ['oauth2-proxy, Redis sessions', seeds.redisStack.url]];
      const perRoundLogins = new Map(stacksToLogIn.map(([n]) => [n, []]));
      for (let r = 0; r < ROUNDS; r += 1) {
        for (const [name, url] of stacksToLogIn) {
          perRoundLogins.get(name).push(await loginRun({ url, seconds: Math.max(2, DURATION / 2), parallel: 1 }));
        }
      }
      for (const [name, ls] of perRoundLogins) {
        const l = {
          perSecond: median(ls.map((x) => x.perSecond)), total: median(ls.map((x) => x.total)),
          gateway: median(ls.map((x) => x.gateway)), idp: median(ls.map((x) => x.idp)),
        };
        log(`logins through ${name}: per login ${l.total.toFixed(1)} ms, gateway hops ${l.gateway.toFixed(1)} ms`);
        stackLogins.push([name, l]);
      }
    }
    // Last, as it stops processes: what a signed-in user gets when a piece is down.
    const down = await downBehaviour({
      seeds, ghUrl: gh.url, ghCookie: cookie, idpProxy: proxy,
    });
    for (const [stack, what, status] of down) log(`${what} down: ${stack} answers ${status}`);

    // --- report -----------------------------------------------------------------------------------
    const f0 = (x) => x.toFixed(0);
    const f2 = (x) => x.toFixed(2);
    const rows = cases.map((c) => {
      const rs = results.map((rd) => rd[c.id]);
      const ratios = rs.map((x) => x.ratio);
      const non2xx = rs.reduce((a, x) => a + x.non2xx, 0);
      const cd = cacheDelta[c.id];
      return {
        c,
        rps: median(rs.map((x) => x.rps)),
        p50: median(rs.map((x) => x.p50)),
        p99: median(rs.map((x) => x.p99)),
        ratio: median(ratios),
        lo: Math.min(...ratios),
        hi: Math.max(...ratios),
        non2xx,
        cache: cd ? `${cd.hits}/${cd.misses}` : '',
      };
    });
    const header = '| case | path | req/s (median) | p50 ms | p99 ms | vs. no filter (median) | min–max | non-2xx | gatehouse cache hits/misses |\n|---|---|---|---|---|---|---|---|---|';
    const table = [header, ...rows.map((x) => `| ${x.c.id} | ${x.c.name} | ${f0(x.rps)} | ${f2(x.p50)} | ${f2(x.p99)} | ${f2(x.ratio)} | ${f2(x.lo)}–${f2(x.hi)} | ${x.non2xx} | ${x.cache} |`)].join('\n');
    const perRound = ['| case | ' + results.map((_, i) => `round ${i + 1} req/s (ratio)`).join(' | ') + ' |',
      '|---|' + results.map(() => '---|').join(''),
      ...cases.map((c) => `| ${c.id} | ${results.map((rd) => `${f0(rd[c.id].rps)} (${f2(rd[c.id].ratio)})`).join(' | ')} |`)].join('\n');
    const medianRatio = (id, base) => median(results.map((rd) => (rd[id] && rd[base] ? rd[id].rps / rd[base].rps : NaN)).filter(Number.isFinite));
    const target = (what, measured, goal, unit = '×', lowerIsBetter = false) => {
      if (!Number.isFinite(measured)) return `| ${what} | ${unit === '×' ? '≥' : '≤'} ${goal}${unit === '×' ? '' : ` ${unit}`} | not measured in this run | |`;
      const met = lowerIsBetter ? measured <= goal : measured >= goal;
      const by = lowerIsBetter ? `${((measured / goal - 1) * 100).toFixed(0)}% over` : `${((1 - measured / goal) * 100).toFixed(0)}% short`;
      const shown = unit === '×' ? f2(measured) : `${f0(measured)} ${unit}`;
      return `| ${what} | ${lowerIsBetter ? '≤' : '≥'} ${unit === '×' ? goal : `${goal} ${unit}`} | ${shown} | ${met ? 'met' : `missed, ${by}`} |`;
    };
    const targetsTable = (heading, lines) => [`| ${heading} | goal | measured | |`, '|---|---|---|---|', ...lines].join('\n');
    const targetTable = [
      targetsTable('target', [
        target('session cookie vs. no filter (b / a)', medianRatio('b', 'a'), 0.92),
        target('public path vs. no filter (g / a)', medianRatio('g', 'a'), 0.97),
        target('repeated bearer vs. native `jwt_authn` with cache (c / e-same-cache)', medianRatio('c', 'e-same-cache'), 1.0),
        target('distinct RS256 vs. native `jwt_authn` without cache (d-RS256 / e-RS256)', medianRatio('d-RS256', 'e-RS256'), 0.5),
        target('distinct ES256 vs. native `jwt_authn` without cache (d-ES256 / e-ES256)', medianRatio('d-ES256', 'e-ES256'), 0.3),
        target('module size', moduleBytes / 1000, 600, 'KB', true),
        target('a worker\'s VM from creation (configure) to its first 200, keys fetched from Keycloak', startup ? startup.fetched.vmToFirst200 : NaN, 50, 'ms', true),
      ]),
      '',
      `For reference, the floor any Proxy-Wasm filter pays here (h, an empty Rust SDK filter): ${f2(medianRatio('h', 'a'))} of no filter. `
        + `Against that floor: session cookie ${f2(medianRatio('b', 'h'))}, public path ${f2(medianRatio('g', 'h'))}, repeated bearer ${f2(medianRatio('c', 'h'))}. `
        + 'Ratios are medians over rounds of the per-round ratios.',
    ].join('\n');
    const startupCompile = startup ? startup.inline.compile : NaN;
    const issue19 = targetsTable('target (issue 19), ratios to the empty filter in the same round', [
      target('public path (g / h)', medianRatio('g', 'h'), 0.95),
      target('session cookie (b / h-cookie: the empty filter given the same cookie)', medianRatio('b', 'h-cookie'), 0.85),
      target('session cookie (b / h)', medianRatio('b', 'h'), 0.85),
      target('repeated bearer (c / h)', medianRatio('c', 'h'), 0.90),
      target('repeated bearer vs. native `jwt_authn` with cache (c / e-same-cache)', medianRatio('c', 'e-same-cache'), 1.0),
      target('distinct RS256 vs. native `jwt_authn` without cache (d-RS256 / e-RS256)', medianRatio('d-RS256', 'e-RS256'), 0.8),
      target('distinct ES256 vs. native `jwt_authn` without cache (d-ES256 / e-ES256)', medianRatio('d-ES256', 'e-ES256'), 0.9),
      target('module size', moduleBytes / 1000, 500, 'KB', true),
      target('Envoy compiling the module at start (inline JWKS)', startupCompile, 300, 'ms', true),
      target('resident memory over no filter, after the runs', (mem.gh - mem.none) / 1024, 40, 'MiB', true),
    ]);
    const startupText = startup
      ? [
        '| Envoy | spawn → first 200 (ms) | compiling the module (ms) | worker VM created → first 200 (ms) | resident at the first 200 |', '|---|---|---|---|---|',
        `| no filter | ${f0(startup.none.first200)} | | | ${(startup.none.residentKiB / 1024).toFixed(1)} MiB |`,
        ...[['empty Proxy-Wasm filter', startup.noop], ['gatehouse, inline JWKS (no fetch)', startup.inline],
          ['gatehouse, discovery + JWKS fetched from Keycloak', startup.fetched]]
          .map(([n, x]) => `| ${n} | ${f0(x.first200)} | ${f0(x.compile)} | ${f0(x.vmToFirst200)} | ${(x.residentKiB / 1024).toFixed(1)} MiB (+${((x.residentKiB - startup.none.residentKiB) / 1024).toFixed(1)}) |`),
        '',
        'Envoy compiles a module once (on the main thread, before the listeners open), then creates a VM per worker from it and calls `on_configure`; '
          + 'the last column is that per-worker part up to the first request served (log timestamps have millisecond resolution). '
          + 'Compile time grows with the module\'s size. Resident memory is read right after the first 200, before any load '
          + '(the memory table below is read after all the runs, with the token cache filled).',
      ].join('\n')
      : '(not measured in this run)';
    const kib = (x) => `${(x / 1024).toFixed(1)} MiB`;
    const memText = [
      '| Envoy | resident | vs. no filter |', '|---|---|---|',
      `| no filter | ${kib(mem.none)} | |`,
      `| empty Proxy-Wasm filter | ${kib(mem.noop)} | +${kib(mem.noop - mem.none)} |`,
      `| gatehouse, after the runs above (token cache filled) | ${kib(mem.gh)} | +${kib(mem.gh - mem.none)} |`,
      ...(mem.cmp ? [`| ${relative(REPO_ROOT, COMPARE)} (--compare), after its runs above | ${kib(mem.cmp)} | +${kib(mem.cmp - mem.none)} |`] : []),
      '',
      `gatehouse's own linear memory (gauge \`gatehouse.vm_memory_bytes\`, one VM): ${Number.isFinite(mem.ghLinear) ? `${(mem.ghLinear / 1048576).toFixed(1)} MiB` : 'n/a'}${mem.cmp ? `; the compared module's: ${Number.isFinite(mem.cmpLinear) ? `${(mem.cmpLinear / 1048576).toFixed(1)} MiB` : 'n/a'}` : ''}.`,
    ].join('\n');
    const loginText = logins.length
      ? [
        '| at a time | logins/s | failed | per login (median ms) | gateway hops (ms, count) | Keycloak hops (ms) | Keycloak token endpoint, timed at the proxy (ms) |',
        '|---|---|---|---|---|---|---|',
        ...logins.map((l) => `| ${l.parallel} | ${l.perSecond.toFixed(1)} | ${l.failures} | ${l.total.toFixed(1)} | ${l.gateway.toFixed(1)} (${l.gatewayHops}) | ${l.idp.toFixed(1)} | ${l.token.toFixed(1)} |`),
        '',
        'Gateway hops: the first request (redirect to Keycloak), the callback (which includes gatehouse\'s own call to Keycloak\'s token endpoint) and the landing request. '
          + 'gatehouse\'s part of a login is the gateway hops minus the token endpoint time, and includes Envoy and the loopback network.',
      ].join('\n')
      : '(not measured in this run)';
    // --- beside the stack gatehouse replaces ---------------------------------------------------
    const row = (id) => rows.find((x) => x.c.id === id);
    const has = (id) => Boolean(row(id));
    const p99Ratio = (id, base) => median(results.map((rd) => (rd[id] && rd[base] ? rd[id].p99 / rd[base].p99 : NaN)).filter(Number.isFinite));
    const rangeOf = (id, base) => {
      const rs = results.map((rd) => (rd[id] && rd[base] ? rd[id].rps / rd[base].rps : NaN)).filter(Number.isFinite);
      return { value: median(rs), lo: Math.min(...rs), hi: Math.max(...rs) };
    };
    const seedsTable = has('o-cookie') && has('o-redis') ? [
      '| gateway | req/s (median) | p50 ms | p99 ms | vs. no filter | vs. empty Wasm filter | gatehouse\'s req/s ÷ this | this p99 ÷ gatehouse\'s p99 |',
      '|---|---|---|---|---|---|---|---|',
      ...['b', 'o-cookie', 'o-redis'].map((id) => {
        const x = row(id);
        const vs = id === 'b' ? '| |' : `| ${f2(medianRatio('b', id))} | ${f2(p99Ratio(id, 'b'))} |`;
        return `| ${x.c.name} | ${f0(x.rps)} | ${f2(x.p50)} | ${f2(x.p99)} | ${f2(medianRatio(id, 'a'))} | ${f2(medianRatio(id, 'h'))} ${vs}`;
      }),
    ].join('\n') : '(not measured in this run)';
    const echoTable = has('a-echo') ? [
      '| gateway, echo service upstream | req/s (median) | p50 ms | p99 ms | vs. no filter (echo upstream) |',
      '|---|---|---|---|---|',
      ...['a-echo', 'b-echo', 'o-cookie-echo', 'o-redis-echo'].filter(has).map((id) => {
        const x = row(id);
        return `| ${x.c.name} | ${f0(x.rps)} | ${f2(x.p50)} | ${f2(x.p99)} | ${f2(medianRatio(id, 'a-echo'))} |`;
      }),
    ].join('\n') : '(not measured in this run)';
    const sm = mem.seeds;
    const stackMem = {
      gatehouse: mem.gh,
      cookie: sm.cookieEnvoy + sm.cookieProxy,
      redis: sm.redisEnvoy + sm.redisProxy + sm.redis,
    };
    const stackMemText = [
      '| gateway | processes | resident, all of them |', '|---|---|---|',
      `| gatehouse | Envoy ${kib(mem.gh)} | **${kib(stackMem.gatehouse)}** |`,
      `| oauth2-proxy, cookie sessions (seed 002) | Envoy ${kib(sm.cookieEnvoy)} + oauth2-proxy ${kib(sm.cookieProxy)} | **${kib(stackMem.cookie)}** |`,
      `| oauth2-proxy, Redis sessions (seed 000) | Envoy ${kib(sm.redisEnvoy)} + oauth2-proxy ${kib(sm.redisProxy)} + Redis ${kib(sm.redis)} | **${kib(stackMem.redis)}** |`,
    ].join('\n');
    const loginOf = (name) => stackLogins.find(([n]) => n === name)?.[1];
    const stackLoginText = stackLogins.length ? [
      '| gateway | logins/s (one at a time) | per login (median ms) | gateway hops (ms) | Keycloak hops (ms) |', '|---|---|---|---|---|',
      ...stackLogins.map(([n, l]) => `| ${n} | ${l.perSecond.toFixed(1)} | ${l.total.toFixed(1)} | ${l.gateway.toFixed(1)} | ${l.idp.toFixed(1)} |`),
    ].join('\n') : '(not measured in this run)';
    const downText = [
      '| gateway | down | a signed-in user\'s request | |', '|---|---|---|---|',
      ...down.map(([stack, what, status, note]) => `| ${stack} | ${what} | ${status} | ${note} |`),
    ].join('\n');
    const seedTargets = targetsTable('target (issue 15)', [
      target('gatehouse session vs. oauth2-proxy with cookie sessions (b / o-cookie)', medianRatio('b', 'o-cookie'), 4.5),
      target('gatehouse session vs. oauth2-proxy with Redis sessions (b / o-redis)', medianRatio('b', 'o-redis'), 5),
      target('their p99 ÷ gatehouse\'s, cookie sessions', p99Ratio('o-cookie', 'b'), 8),
      target('their p99 ÷ gatehouse\'s, Redis sessions', p99Ratio('o-redis', 'b'), 8),
      target('a login through oauth2-proxy (cookie) ÷ one through gatehouse', loginOf('oauth2-proxy, cookie sessions') && loginOf('gatehouse') ? loginOf('oauth2-proxy, cookie sessions').total / loginOf('gatehouse').total : NaN, 1),
      target('the gateway\'s part of a login: oauth2-proxy (cookie) ÷ gatehouse', loginOf('oauth2-proxy, cookie sessions') && loginOf('gatehouse') ? loginOf('oauth2-proxy, cookie sessions').gateway / loginOf('gatehouse').gateway : NaN, 1),
      target('memory: gatehouse\'s gateway ÷ Envoy + oauth2-proxy', stackMem.gatehouse / stackMem.cookie, 1, '×', true),
      target('memory: gatehouse\'s gateway ÷ Envoy + oauth2-proxy + Redis', stackMem.gatehouse / stackMem.redis, 1, '×', true),
    ]);
    const chartRows = (ids, base, kinds) => ids.filter(has).map((id) => ({ label: row(id).c.name, kind: kinds(id), ...rangeOf(id, base) }));
    const kindOf = (id) => (/^o-/.test(id) ? 'seeds' : /^(e-|f)/.test(id) ? 'native' : id === 'h' ? 'floor' : 'gatehouse');
    const svg = ratioChart([
      ['Envoy answering 200 itself: the cost of each filter', chartRows(['h', 'g', 'b', 'c', 'e-same-cache', 'f', 'o-cookie', 'o-redis'], 'a', kindOf)],
      ['Behind the echo service', chartRows(['b-echo', 'o-cookie-echo', 'o-redis-echo'], 'a-echo', kindOf)],
    ], {
      title: 'Throughput as a share of Envoy without a filter (one worker; median of rounds, bar: min–max)',
      note: `make bench, ${new Date().toISOString().slice(0, 10)}: gatehouse (blue), oauth2-proxy ${OAUTH2_PROXY_VERSION} behind ext_authz (red), Envoy's own filters (grey)`,
    });
    const chartPath = join(dirname(resolve(opt.out)), 'ratios.svg');
    await mkdir(dirname(chartPath), { recursive: true });
    await writeFile(chartPath, svg);

    const elapsed = (Date.now() - started) / 1000;
    const cmd = `node ${relative(REPO_ROOT, process.argv[1])} ${process.argv.slice(2).join(' ')}`.trim();
    const envoyVersion = await new Promise((res) => {
      execFile(envoyBin(), ['--version'], { timeout: 10000 }, (e, out) => res((out || '').trim().split('\n').pop() || 'unknown'));
    });
    const md = `# gatehouse benchmark (issue 5)

Generated by \`${cmd}\` on ${new Date().toISOString()} (${elapsed.toFixed(0)} s in all).

- Module: \`${relative(REPO_ROOT, WASM)}\`, **${moduleBytes} bytes**${COMPARE ? `; compared with \`${relative(REPO_ROOT, COMPARE)}\` (${statSync(COMPARE).size} bytes), cases marked ~` : ''}
- Envoy: ${envoyVersion}; \`--concurrency 1\` (one worker), V8 runtime, route \`direct_response\` 200, no access log
- Load: \`wrk -c${CONNS} -t${THREADS} -d${DURATION}s --latency\`, ${ROUNDS} rounds, cases interleaved (order rotated each round, baseline first), 1 s warm-up per case
- Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'} (wrk and Envoy share it)
- Distinct-token pools: ${POOL} tokens per algorithm, minted with \`signJwt\` with keys of the run that the proxy in front of Keycloak adds to its key set, cycled by \`bench/tokens.lua\` (gatehouse's token cache holds 1024 per worker, so a cycled pool this size never hits; the last column counts hits/misses during the measured runs)
- Native \`jwt_authn\`: \`local_jwks\` inline with those public keys; "jwt_cache_config" = \`jwt_cache_size: 1000\`
- Native \`oauth2\` (case f, present only if its login worked): cookies from a real login through the filter (client \`gateway\`, \`BASIC_AUTH\`), ${oauth2Cookie ? `${oauth2Cookie.length}` : '–'}-byte Cookie header; gatehouse's session cookie header: ${cookie.length} bytes
- No-filter baseline answers from \`direct_response\` (no upstream hop), so every filter's cost is a larger share than behind a real upstream

Ratios are req/s divided by the no-filter req/s of the same round; the table shows the median over rounds and the min–max. p50/p99 are medians over rounds of wrk's per-run percentiles.

${table}

## Targets (issue 5)

${targetTable}

## Targets (issue 19)

${issue19}

Where a cached request's time goes: what each host call costs (HOSTCALLS.md), the module's own time and its host calls per path inside V8 (VM.md), instructions of the pure core (INSTRUCTIONS.md), size by crate (SIZES.md).

## Beside the stack it replaces: oauth2-proxy ${OAUTH2_PROXY_VERSION} behind Envoy's ext_authz (issue 15)

![Throughput as a share of no filter](ratios.svg)

Session requests, one Envoy worker each, in the same rounds as everything above. oauth2-proxy runs as seed 002 configures it, behind an \`ext_authz\` filter configured as istiod renders an \`envoyExtAuthzHttp\` provider (\`wasm-test/lib/oauth2proxy.mjs\`).

${seedsTable}

${seedTargets}

### Behind a real upstream (the echo service)

${echoTable}

### Memory of every process each gateway needs (after the runs)

${stackMemText}

### A login on each

${stackLoginText}

### When a piece is down

${downText}

## Start-up: Envoy spawned → first 200 (one worker; median of 3 fresh starts)

${startupText}

## Memory (resident, one worker: Envoy runs one VM on the main thread and one per worker)

${memText}

## Logins (full code flow through Envoy + gatehouse against Keycloak ${KEYCLOAK_VERSION})

${loginText}

## Per round

${perRound}
`;
    await writeFile(opt.out, md);
    process.stdout.write(`${table}\n\nmodule ${moduleBytes} bytes; ${elapsed.toFixed(0)} s; written to ${opt.out}\n`);
  } finally {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch(async (err) => {
  process.stderr.write(`bench failed: ${err.stack || err}\n`);
  await stopAll();
  process.exit(1);
});
