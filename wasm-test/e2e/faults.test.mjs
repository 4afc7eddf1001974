// Issue 6 (3): faults at the provider and at the gateway, through real Envoy with two workers.
// gatehouse's own calls to the provider (discovery, keys, token endpoint) go through a fault
// proxy (lib/faultproxy.mjs) that can be down, slow, or answer badly; browsers and the test's
// token requests reach the IdP directly. Each case checks the outcome the README documents
// (Troubleshooting): new sign-ins get an error page (503 when the provider cannot be reached,
// 502 when its answer is unusable), existing sessions and tokens signed with cached keys keep
// working, the last good keys stay, and everything recovers by itself. Last, Envoy's logs and
// stats show that no Wasm VM failed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import {
  freePort, startIdp, startEcho, startEnvoy, stopAll, stopProcess, http, CookieJar, browse, passwordToken,
  waitFor, envoyStats, runDirectory,
} from '../lib/harness.mjs';
import { writeKeysFile, signJwt, publicJwks, generateKeys } from '../lib/keys.mjs';
import { startFaultProxy, faults } from '../lib/faultproxy.mjs';

const WASM = process.env.WASM;
const HTML = { accept: 'text/html,application/xhtml+xml' };
const TOKEN = /\/protocol\/openid-connect\/token$/;
const CERTS = /\/protocol\/openid-connect\/certs$/;
const DISCOVERY = /\/\.well-known\/openid-configuration$/;
const REFRESH_SECONDS = 10; // keys.refreshIntervalSeconds below (its minimum)
const COOKIE_KEY = 'e2e-faults-cookie-key-0123456789abcdef';

let idpPort;
let idp;
let issuer;
let proxyPort;
let proxy;
let echoPort;
let envoy;
let gateway;
let idpKeys; // the IdP's own keys (it signs ID and access tokens with them)
let jwks; // the keys the provider publishes now (the test signs tokens with them too)
const envoyLogs = [];

const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

const filterConfig = () => ({
  provider: {
    issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'],
  },
  session: { keys: [COOKIE_KEY], secure: false },
  publicPaths: [{ prefix: '/public/' }],
  timeouts: { calloutMs: 500 },
  keys: { refreshIntervalSeconds: REFRESH_SECONDS, unknownKidMinIntervalSeconds: 1, retryMaxSeconds: 1 },
});

async function startGateway(listenPort) {
  envoy = await startEnvoy({
    listenPort, idpPort: proxyPort, echoPort, wasmPath: WASM, concurrency: 2, filterConfig: filterConfig(),
  });
  gateway = envoy.url;
  envoyLogs.push(...envoy.logFiles);
}

function claims(extra = {}) {
  return {
    iss: issuer, sub: 'alice-sub', aud: 'account', azp: 'api', typ: 'Bearer', exp: now() + 300, iat: now(),
    jti: `t-${Math.random()}`, email: 'alice@example.com', preferred_username: 'alice', ...extra,
  };
}

const bearer = (token, path = '/echo') => http(`${gateway}${path}`, { headers: { authorization: `Bearer ${token}` } });
const withSession = (jar, path = '/echo') => http(`${gateway}${path}`, { headers: { cookie: jar.header(`${gateway}${path}`) } });

/** Several requests at once, so that both workers answer (connections land on either). */
async function allAnswer(make, status, n = 6) {
  const results = await Promise.all(Array.from({ length: n }, make));
  return results.every((r) => r.status === status);
}

/** Walks to the IdP and logs alice in, stopping before the callback. */
async function toCallback() {
  const jar = new CookieJar();
  const start = await browse(`${gateway}/echo`, { jar, stopAt: (u) => u.port === String(idpPort) });
  assert.ok(start.stopped, `the gateway sends the browser to the IdP (ended at ${start.url})`);
  const atIdp = await browse(start.url, { jar, username: 'alice', password: 'alice', stopAt: (u) => u.pathname === '/oauth2/callback' });
  assert.ok(atIdp.stopped, atIdp.url);
  return { cb: atIdp.url, jar };
}

async function callback({ cb, jar }) {
  const r = await http(cb, { headers: { ...HTML, cookie: jar.header(cb) } });
  jar.store(cb, r.headers['set-cookie']);
  return r;
}

/** A whole login; returns the jar holding the session. */
async function login() {
  const attempt = await toCallback();
  const r = await callback(attempt);
  assert.equal(r.status, 302, r.body);
  return attempt.jar;
}

function assertErrorPage(r, status, text) {
  assert.equal(r.status, status, r.body.slice(0, 300));
  assert.match(r.headers['content-type'], /text\/html/);
  assert.match(r.body, text);
  assert.match(r.body, /Try again/);
  assert.equal(r.headers['x-envoy-upstream-service-time'], undefined, 'the upstream was not reached');
  assert.ok(![].concat(r.headers['set-cookie'] ?? []).some((c) => /^_gatehouse=v1\./.test(c)), 'no session cookie');
}

async function counter(name) {
  const st = await envoyStats(envoy, `gatehouse\\.${name.replace(/\./g, '\\.')}$`);
  return Object.values(st).reduce((a, b) => a + b, 0);
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  const dir = await mkdtemp(join(runDirectory(), 'faults-'));
  const keysFile = join(dir, 'keys.json');
  idpKeys = await writeKeysFile(keysFile, { algs: ['RS256'], encryptionKey: false });
  jwks = idpKeys;
  idpPort = await freePort();
  idp = await startIdp({ port: idpPort, keysFile });
  issuer = idp.issuer;
  echoPort = (await startEcho()).port;
  proxyPort = await freePort(); // nothing listens there yet: the provider is down at start
  await startGateway();
});

after(async () => {
  await proxy?.close();
  await stopAll();
});

test('provider down at start: protected requests get 503 with Retry-After, public paths work, and it recovers by itself', async () => {
  const token = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
  const api = await bearer(token);
  assert.equal(api.status, 503, api.body);
  assert.equal(api.headers['retry-after'], '5');
  assert.equal(api.headers['x-envoy-upstream-service-time'], undefined);
  const page = await http(`${gateway}/echo`, { headers: HTML });
  assert.equal(page.status, 503, 'a browser cannot be sent to a provider whose discovery is unknown');
  assert.equal((await http(`${gateway}/public/x`)).status, 200);

  const t0 = Date.now();
  proxy = await startFaultProxy({ targetPort: idpPort, port: proxyPort });
  await waitFor(() => allAnswer(() => bearer(token), 200), { timeoutMs: 10000, intervalMs: 200, what: 'gatehouse to load the keys once the provider is up' });
  const recovered = Date.now() - t0;
  assert.equal((await http(`${gateway}/echo`, { headers: HTML })).status, 302);
  console.log(`# provider up after a down start: both workers serving in ${recovered} ms (retries back off to keys.retryMaxSeconds = 1 s)`);
  assert.ok(await counter('discovery.fetch_failures') + await counter('jwks.fetch_failures') >= 1);
});

test('token endpoint faults: unreachable, slow or 5xx → 503 page; a refusal, garbage, huge or HTML → 502 page', async () => {
  const cases = [
    ['connection dropped', faults.reset(), 503, /cannot be reached/],
    ['slower than timeouts.calloutMs', faults.delay(1500), 503, /cannot be reached/],
    ['HTTP 500', faults.status(500), 503, /cannot be reached/],
    ['HTTP 503 with an HTML body', async () => ({ status: 503, headers: { 'content-type': 'text/html' }, body: '<h1>Service Unavailable</h1>' }), 503, /cannot be reached/],
    ['HTTP 401 invalid_client', faults.status(401, { error: 'invalid_client' }), 502, /refused to complete/],
    ['garbage', faults.garbage(), 502, /could not be read/],
    ['an 8 MB body', faults.huge(8 * 1024 * 1024), 502, /could not be read/],
    ['an HTML page with 200', async () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html><body>Please sign in to the proxy</body></html>' }), 502, /could not be read/],
    ['the right JSON as text/html', faults.contentType('text/html'), 302, null],
  ];
  for (const [name, fault, status, text] of cases) {
    // eslint-disable-next-line no-await-in-loop
    const attempt = await toCallback();
    proxy.set('token', TOKEN, fault);
    try {
      // eslint-disable-next-line no-await-in-loop
      const r = await callback(attempt);
      if (status === 302) {
        assert.equal(r.status, 302, `${name}: ${r.body.slice(0, 200)}`);
      } else {
        assert.doesNotThrow(() => assertErrorPage(r, status, text), name);
        assertErrorPage(r, status, text);
      }
    } finally {
      proxy.clear('token');
    }
  }
  // Recovered: the next login completes and its session works.
  const jar = await login();
  assert.equal((await withSession(jar)).status, 200);
});

test('provider down mid-run: sessions and tokens signed with cached keys keep working, new sign-ins get 503, and it recovers', async () => {
  const jar = await login();
  const failedBefore = await counter('logins.failed');
  const jwksFailuresBefore = await counter('jwks.fetch_failures') + await counter('discovery.fetch_failures');
  const attempt = await toCallback(); // the browser reaches the IdP; the gateway will not
  await proxy.close();
  const downAt = Date.now();
  try {
    assert.equal((await withSession(jar)).status, 200, 'an existing session');
    assert.ok(await allAnswer(async () => bearer(await signJwt(jwks, claims())), 200), 'tokens never seen before, signed with a cached key');
    assertErrorPage(await callback(attempt), 503, /cannot be reached/);
    // A token naming an unknown key makes a worker try the provider: refused, the cached keys stay.
    const unknown = await signJwt(await generateKeys({ algs: ['RS256'], encryptionKey: false }), claims());
    const u = await bearer(unknown);
    assert.equal(u.status, 401);
    assert.match(u.headers['www-authenticate'], /unknown key id/);
    // Past the refresh interval the periodic fetches fail too; the last good keys still serve.
    await sleep(Math.max(0, (REFRESH_SECONDS + 2) * 1000 - (Date.now() - downAt)));
    assert.ok(await allAnswer(async () => bearer(await signJwt(jwks, claims())), 200), 'after failed refreshes');
    assert.equal((await withSession(jar)).status, 200);
    assert.ok(await counter('logins.failed') > failedBefore);
    assert.ok(await counter('jwks.fetch_failures') + await counter('discovery.fetch_failures') > jwksFailuresBefore, 'failed fetches are counted');
  } finally {
    proxy = await startFaultProxy({ targetPort: idpPort, port: proxyPort });
  }
  const again = await login();
  assert.equal((await withSession(again)).status, 200, 'sign-ins work again once the provider is back');
});

test('key-set faults (5xx, garbage, huge, HTML, too slow, dropped): the last good keys stay', async () => {
  const cases = [
    ['HTTP 500', faults.status(500)],
    ['garbage', faults.garbage()],
    ['an 8 MB body', faults.huge(8 * 1024 * 1024)],
    ['an HTML page', async () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>maintenance</html>' })],
    ['an empty key set', async () => ({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"keys":[]}' })],
    ['slower than timeouts.calloutMs', faults.delay(1500)],
    ['connection dropped', faults.reset()],
  ];
  const stranger = await generateKeys({ algs: ['RS256'], encryptionKey: false });
  for (const [name, fault] of cases) {
    proxy.set('certs', CERTS, fault);
    const since = Date.now();
    try {
      // A token naming an unknown kid makes the worker fetch the key set now (at most once a second).
      // eslint-disable-next-line no-await-in-loop
      await sleep(1100);
      // eslint-disable-next-line no-await-in-loop
      const u = await bearer(await signJwt(stranger, claims()));
      assert.equal(u.status, 401, name);
      assert.ok(proxy.hits(CERTS, since) >= 1, `${name}: the key set was asked for`);
      // eslint-disable-next-line no-await-in-loop
      assert.ok(await allAnswer(async () => bearer(await signJwt(jwks, claims())), 200), `${name}: cached keys still verify`);
    } finally {
      proxy.clear('certs');
    }
  }
});

test('keys rotated at the provider and the old key removed: new tokens accepted, old ones refused, sessions unaffected', async () => {
  const jar = await login();
  const old = jwks;
  const rotated = await generateKeys({ algs: ['RS256'], encryptionKey: false });
  proxy.set('certs', CERTS, async () => ({ status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(publicJwks(rotated)) }));
  jwks = rotated;
  await waitFor(() => allAnswer(async () => bearer(await signJwt(rotated, claims())), 200), { timeoutMs: 10000, what: 'both workers to fetch the rotated key' });
  await waitFor(() => allAnswer(async () => bearer(await signJwt(old, claims())), 401), { timeoutMs: 5000, what: 'both workers to drop the removed key' });
  assert.equal((await withSession(jar)).status, 200, 'sessions are sealed by gatehouse, not by the provider\'s keys');
});

test('discovery changed: a new jwks_uri is followed at the next refresh; a discovery naming another issuer is refused and the keys kept', async () => {
  const third = await generateKeys({ algs: ['RS256'], encryptionKey: false });
  const NEXT = /\/protocol\/openid-connect\/certs-next$/;
  proxy.set('discovery', DISCOVERY, faults.rewriteJson((doc) => ({ ...doc, jwks_uri: `${doc.jwks_uri}-next` })));
  proxy.set('certs-next', NEXT, async () => ({ status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(publicJwks(third)) }));
  proxy.set('certs', CERTS, faults.status(404, { error: 'gone' }));
  await waitFor(() => allAnswer(async () => bearer(await signJwt(third, claims())), 200), {
    timeoutMs: (REFRESH_SECONDS * 2 + 5) * 1000, intervalMs: 1000, what: 'the new jwks_uri to be followed',
  });
  jwks = third;
  assert.ok(proxy.hits(NEXT) >= 1);

  const since = Date.now();
  proxy.set('discovery', DISCOVERY, faults.rewriteJson((doc) => ({ ...doc, issuer: 'http://evil.example/realms/demo', jwks_uri: `${doc.jwks_uri}-next` })));
  proxy.set('certs-next', NEXT, faults.status(500)); // were the bad discovery taken, no keys would load
  await waitFor(async () => proxy.hits(DISCOVERY, since) >= 2, { timeoutMs: (REFRESH_SECONDS * 2 + 5) * 1000, intervalMs: 500, what: 'both workers to re-read discovery' });
  assert.ok(await allAnswer(async () => bearer(await signJwt(third, claims())), 200), 'the keys of the last good discovery stay');
  // Back to the IdP's own discovery and keys (it signs the logins below with them).
  proxy.clear();
  jwks = idpKeys;
  await waitFor(() => allAnswer(async () => bearer(await signJwt(jwks, claims())), 200), { timeoutMs: 10000, what: 'both workers to fetch the IdP\'s keys again' });
});

test('Envoy restarted: sessions and tokens keep working without a new login', async () => {
  const jar = await login();
  const token = await signJwt(jwks, claims());
  assert.equal((await bearer(token)).status, 200);
  const { listenPort } = envoy;
  await stopProcess(envoy.pid);
  await startGateway(listenPort);
  await waitFor(async () => (await bearer(token)).status === 200, { timeoutMs: 10000, what: 'the restarted gateway to load keys' });
  const r = await withSession(jar);
  assert.equal(r.status, 200);
  assert.equal(r.json.headers['x-auth-request-email'], 'alice@example.com');
});

test('clock skew between provider and gateway: within tokens.leewaySeconds (30 s) accepted, beyond refused', async () => {
  const t = now();
  const within = [
    ['provider 20 s ahead', { iat: t + 20, nbf: t + 20 }],
    ['provider 20 s behind, token just expired', { iat: t - 320, exp: t - 20 }],
  ];
  for (const [name, c] of within) {
    // eslint-disable-next-line no-await-in-loop
    assert.equal((await bearer(await signJwt(jwks, claims(c)))).status, 200, name);
  }
  const beyond = [
    ['provider 120 s ahead (iat)', { iat: t + 120 }, /issued in the future/],
    ['provider 120 s ahead (nbf)', { nbf: t + 120 }, /not yet valid/],
    ['provider 120 s behind', { iat: t - 420, exp: t - 120 }, /expired/],
  ];
  for (const [name, c, reason] of beyond) {
    // eslint-disable-next-line no-await-in-loop
    const r = await bearer(await signJwt(jwks, claims(c)));
    assert.equal(r.status, 401, name);
    assert.match(r.headers['www-authenticate'], reason, name);
  }
});

test('no Wasm VM failed: nothing trapped or panicked in any Envoy run, and the VMs are all alive', async () => {
  const st = await envoyStats(envoy, 'wasm');
  const failures = Object.entries(st).filter(([k, v]) => /fail|crash|trap/i.test(k) && !/fetch_failures|logins\.failed|refresh_failed/.test(k) && v > 0);
  assert.deepEqual(failures, [], 'Wasm failure stats');
  const active = Object.entries(st).find(([k]) => /wasm\.envoy\.wasm\.runtime\.v8\.active$/.test(k));
  assert.ok(active && active[1] >= 3, `V8 VMs alive (main + 2 workers): ${JSON.stringify(active)}`);
  await sleep(300);
  for (const file of envoyLogs) {
    // eslint-disable-next-line no-await-in-loop
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const bad of [/panicked at/, /Uncaught/, /RuntimeError/, /wasm trap/i, /Function: proxy_on_\w+ failed/]) {
      assert.doesNotMatch(text, bad, `${file}`);
    }
  }
});
