// Session refresh end to end: with `session.refresh`, gatehouse keeps the refresh token
// (encrypted in the cookie) and refreshes the session by callout before the access token expires.
// Real Keycloak issues 6-second access tokens here (a copy of the demo realm made for this file);
// Envoy reaches it through the fault proxy, which can drop every call to it (provider down).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freePort, startEcho, startEnvoy, stopAll, http, CookieJar, browse, waitFor, onStopAll,
} from '../lib/harness.mjs';
import {
  startKeycloak, createRealmCopy, deleteRealm, adminApi,
} from '../lib/keycloak.mjs';
import { faults, startFaultProxy } from '../lib/faultproxy.mjs';

const WASM = process.env.WASM;
const HTML = { accept: 'text/html' };
const TTL = 6;
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

const REALM = 'demo-refresh';
let kc;
let realm;
let proxy;
let gateway;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  realm = await createRealmCopy(kc, REALM, { accessTokenLifespan: TTL });
  proxy = await startFaultProxy({ targetPort: kc.port });
  onStopAll(() => proxy.close());
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const envoy = await startEnvoy({
    idpPort: proxy.port, echoPort, wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: realm.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret',
      },
      session: { keys: ['e2e-refresh-cookie-key-0123456789abcdef'], secure: false, refresh: true, refreshBeforeSeconds: 2 },
    },
  });
  gateway = envoy.url;
  await waitFor(async () => (await http(`${gateway}/echo`, { headers: HTML })).status === 302, { timeoutMs: 20000, what: 'discovery' });
});

after(async () => {
  if (kc) await deleteRealm(kc, REALM);
  await stopAll();
});

const sessionCookie = (jar) => jar.list().find((c) => c.name === '_gatehouse')?.value;

test('a session is refreshed across the access token expiry, and a revoked refresh token ends it', async () => {
  const jar = new CookieJar();
  const login = await browse(`${gateway}/echo`, { jar, username: 'alice', password: 'alice' });
  assert.equal(login.response.status, 200);
  const first = sessionCookie(jar);
  assert.ok(first);
  // The refresh token is in the cookie only encrypted.
  const payload = JSON.parse(Buffer.from(first.split('.')[2], 'base64url'));
  assert.ok(payload.rt && payload.rexp, 'refresh token and expiry kept');
  assert.match(payload.rt, /^[0-9a-f]{8}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{40,}$/, 'kid.nonce.AES-GCM ciphertext');

  // Before the refresh window: no new cookie.
  const early = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(early.status, 200);
  assert.equal(early.headers['set-cookie'], undefined);

  // Inside the window (TTL - 2 s): the request is held, the session refreshed, a new cookie set.
  await sleep((TTL - 2) * 1000 + 500);
  const r = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(r.status, 200);
  assert.equal(r.json.headers['x-auth-request-email'], 'alice@example.com');
  const set = [].concat(r.headers['set-cookie'] ?? []);
  assert.ok(set.some((c) => /^_gatehouse=v1\./.test(c)), `a refreshed cookie: ${set}`);
  jar.store(`${gateway}/echo`, set);
  const second = sessionCookie(jar);
  assert.notEqual(second, first);
  const refreshed = JSON.parse(Buffer.from(second.split('.')[2], 'base64url'));
  assert.ok(refreshed.rexp > payload.rexp);
  // The old cookie, sent again right away (another tab), gets the new session rather than a
  // second refresh with a rotated-out token.
  const oldTab = await http(`${gateway}/echo`, { headers: { cookie: `_gatehouse=${first}` } });
  assert.equal(oldTab.status, 200);

  // An administrator signs alice out in Keycloak: the next refresh is refused and the browser goes
  // back to login.
  const [alice] = await adminApi(kc, 'GET', '/users?username=alice&exact=true', undefined, REALM);
  await adminApi(kc, 'POST', `/users/${alice.id}/logout`, undefined, REALM);
  await sleep((TTL - 2) * 1000 + 500);
  const page = await http(`${gateway}/echo?again`, { headers: { ...HTML, cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(page.status, 302, page.body);
  assert.equal(page.headers.location, '/echo?again');
  assert.ok([].concat(page.headers['set-cookie']).some((c) => /^_gatehouse=;.*Max-Age=0/.test(c)));
  jar.store(`${gateway}/echo`, page.headers['set-cookie']);
  const next = await http(`${gateway}/echo?again`, { headers: { ...HTML, cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(next.status, 302);
  assert.equal(new URL(next.headers.location).port, String(kc.port), 'to the login page');
});

test('while the provider is down, a session due for refresh keeps working', async () => {
  const jar = new CookieJar();
  const login = await browse(`${gateway}/echo`, { jar, username: 'bob', password: 'bob' });
  assert.equal(login.response.status, 200);
  proxy.set('down', /./, faults.reset()); // every call gatehouse makes to Keycloak is dropped
  try {
    await sleep((TTL - 2) * 1000 + 500);
    const r = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
    assert.equal(r.status, 200);
    assert.equal(r.json.headers['x-auth-request-email'], 'bob@example.com');
  } finally {
    proxy.clear('down');
  }
});
