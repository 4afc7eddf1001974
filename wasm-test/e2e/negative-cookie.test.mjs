// Issue 6 (1): session-cookie attacks through real Envoy. Each forged or replayed cookie must be no
// session: an API call gets 401 (a page navigation would be sent to sign in), the upstream is never
// reached, and no session cookie is set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  startEcho, startEnvoy, stopAll, http, browse, CookieJar, waitFor,
} from '../lib/harness.mjs';
import { startKeycloak, createRealmWithBigUser, deleteRealm } from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const KEY_OLD = 'e2e-cookie-old-key-0123456789abcdef0123456789';
const KEY_NEW = 'e2e-cookie-new-key-0123456789abcdef0123456789';
const REALM = 'demo-cookies';
let kc;
let issuer;
let idpPort;
let echoPort;
let gateway;
let session; // alice's small session: `_gatehouse=<value>`
let chunked; // carol's chunked session: [[name, value], ...]

const config = (keys) => ({
  provider: { issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret' },
  session: { keys, secure: false },
});

async function signIn(url, username) {
  const jar = new CookieJar();
  const r = await browse(url, { jar, username, password: username });
  assert.equal(r.response.status, 200, `${username} signs in`);
  return jar.list().filter((c) => c.name.startsWith('_gatehouse')).map((c) => [c.name, c.value]);
}

/** An API call with this Cookie header: 200 from the upstream, or gatehouse's 401. */
async function apiCall(cookie, { base = gateway, host } = {}) {
  const headers = { cookie, accept: 'application/json' };
  if (host) headers.host = host;
  return http(`${base}/echo`, { headers });
}

function assertNoSession(r, what) {
  assert.equal(r.status, 401, `${what}: ${r.status} ${r.body.slice(0, 100)}`);
  assert.equal(r.json?.path, undefined, `${what}: the upstream was not reached`);
  assert.equal(r.headers['x-envoy-upstream-service-time'], undefined, what);
  for (const c of r.headers['set-cookie'] ?? []) {
    assert.match(c, /Max-Age=0/, `${what}: a cookie may only be cleared, never set: ${c.split('=')[0]}`);
  }
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  // Real Keycloak, in a realm copy with carol (300 groups: a chunked session).
  kc = await startKeycloak();
  idpPort = kc.port;
  ({ issuer } = await createRealmWithBigUser(kc, REALM));
  echoPort = (await startEcho()).port;
  // The old key signs here; the second Envoy below has rotated it out.
  const envoy = await startEnvoy({ idpPort, echoPort, wasmPath: WASM, filterConfig: config([KEY_OLD]) });
  gateway = envoy.url;
  await waitFor(async () => (await http(`${gateway}/`, { headers: { accept: 'text/html' } })).status === 302, { timeoutMs: 20000, what: 'discovery' });
  const [[name, value]] = await signIn(`${gateway}/echo`, 'alice');
  session = `${name}=${value}`;
  chunked = await signIn(`${gateway}/echo`, 'carol');
  assert.ok(chunked.length >= 3, 'carol has a chunked session');
});

after(async () => {
  if (kc) await deleteRealm(kc, REALM);
  await stopAll();
});

test('the control: the session works', async () => {
  const r = await apiCall(session);
  assert.equal(r.status, 200);
  assert.equal(r.json.headers['x-auth-request-email'], 'alice@example.com');
});

test('every byte of the cookie value tampered', async () => {
  const value = session.slice(session.indexOf('=') + 1);
  const name = session.slice(0, session.indexOf('='));
  for (let i = 0; i < value.length; i += 1) {
    // Replace the byte by another base64url character (a byte the cookie grammar allows).
    const c = value[i] === 'A' ? 'B' : 'A';
    assertNoSession(await apiCall(`${name}=${value.slice(0, i)}${c}${value.slice(i + 1)}`), `byte ${i}`);
  }
});

test('truncated cookies, and extra bytes after it', async () => {
  for (const cut of [1, 2, 10, 43, 44, Math.floor(session.length / 2), session.length - 20]) {
    assertNoSession(await apiCall(session.slice(0, session.length - cut)), `cut ${cut}`);
  }
  assertNoSession(await apiCall(`${session}A`), 'one byte more');
  assertNoSession(await apiCall(`${session}.AAAA`), 'one segment more');
});

test('chunks reordered, missing, duplicated, or miscounted', async () => {
  const header = (pairs) => pairs.map(([n, v]) => `${n}=${v}`).join('; ');
  assert.equal((await apiCall(header(chunked))).status, 200, 'the control: carol\'s chunks');
  const head = chunked.find(([n]) => n === '_gatehouse');
  const parts = chunked.filter(([n]) => n !== '_gatehouse').sort();
  const swapped = parts.map(([n], i) => [n, parts[(i + 1) % parts.length][1]]);
  assertNoSession(await apiCall(header([head, ...swapped])), 'chunk values rotated');
  assertNoSession(await apiCall(header([head, ...parts.slice(1)])), 'first chunk missing');
  assertNoSession(await apiCall(header([head, ...parts.slice(0, -1)])), 'last chunk missing');
  assertNoSession(await apiCall(header([head, parts[0], parts[0], ...parts.slice(2)])), 'a chunk given twice, another missing');
  const n = Number(head[1].replace('chunks.', ''));
  assertNoSession(await apiCall(header([['_gatehouse', `chunks.${n - 1}`], ...parts])), 'count one too low');
  assertNoSession(await apiCall(header([['_gatehouse', `chunks.${n + 1}`], ...parts])), 'count one too high');
  assertNoSession(await apiCall(header([['_gatehouse', 'chunks.99'], ...parts])), 'count out of range');
});

test('a cookie for another site: same key, other host', async () => {
  // 127.0.0.1 and localhost reach the same Envoy with the same cookie key.
  const listen = new URL(gateway).port;
  assert.equal((await apiCall(session, { host: `127.0.0.1:${listen}` })).status, 200);
  assertNoSession(await apiCall(session, { host: `localhost:${listen}` }), 'host localhost');
  assertNoSession(await apiCall(session, { host: 'other.example' }), 'host other.example');
});

test('a cookie signed with a retired key, and one from a gateway with another key', async () => {
  // Rotation: the new key signs, the old one still verifies; then the old one is retired.
  const rotating = await startEnvoy({ idpPort, echoPort, wasmPath: WASM, filterConfig: config([KEY_NEW, KEY_OLD]) });
  const retired = await startEnvoy({ idpPort, echoPort, wasmPath: WASM, filterConfig: config([KEY_NEW]) });
  for (const e of [rotating, retired]) {
    await waitFor(async () => (await http(`${e.url}/`, { headers: { accept: 'text/html' } })).status === 302, { timeoutMs: 20000, what: 'discovery' });
  }
  // The host is part of the session: ask each gateway as the host the cookie was made for.
  const madeFor = new URL(gateway).host;
  assert.equal((await apiCall(session, { base: rotating.url, host: madeFor })).status, 200, 'old key still listed: accepted');
  assertNoSession(await apiCall(session, { base: retired.url, host: madeFor }), 'old key removed');
  // A session signed by the new key is nothing to the first gateway, which never had that key.
  const [[name, value]] = await signIn(`${retired.url}/echo`, 'bob');
  assertNoSession(await apiCall(`${name}=${value}`, { host: new URL(retired.url).host }), 'unknown key (same host, first gateway)');
});

test('session fixation: cookies planted before sign-in never become the session', async () => {
  // An attacker plants cookies in the victim's browser (e.g. from a sibling subdomain): an
  // attacker-chosen session value, stale chunks, and a login-state cookie of the attacker's own
  // sign-in attempt. The victim then signs in.
  const attacker = new CookieJar();
  const started = await browse(`${gateway}/echo?attacker`, { jar: attacker, stopAt: (u) => u.port === String(idpPort) });
  assert.ok(started.stopped);
  const attackerState = attacker.list().find((c) => c.name.startsWith('_gatehouse_st_'));
  assert.ok(attackerState, 'the attacker holds a login-state cookie of their own attempt');
  const planted = { _gatehouse: 'v1.attacker-chosen-session-value', '_gatehouse.0': 'stale-chunk', [attackerState.name]: attackerState.value };
  const victim = new CookieJar();
  victim.store(`${gateway}/`, Object.entries(planted).map(([n, v]) => `${n}=${v}; Path=/`));
  const r = await browse(`${gateway}/echo`, { jar: victim, username: 'bob', password: 'bob' });
  assert.equal(r.response.status, 200);
  assert.equal(r.response.json.headers['x-auth-request-email'], 'bob@example.com', 'the victim is signed in as themself');
  const value = victim.list().find((c) => c.name === '_gatehouse').value;
  assert.notEqual(value, planted._gatehouse, 'a fresh session value, issued at sign-in');
  assert.ok(!victim.list().some((c) => c.name === '_gatehouse.0'), 'the stale chunk is cleared');
  // The planted values are still nobody's session.
  assertNoSession(await apiCall(`_gatehouse=${planted._gatehouse}`), 'the planted session value');
  // The attacker's own attempt cannot be finished with the victim's sign-in (the victim's code
  // was bound to the victim's state, PKCE verifier and nonce), and the attacker learns nothing:
  // their state cookie, replayed with a made-up code, is refused.
  const cb = `${gateway}/oauth2/callback?code=made-up&state=${new URL(started.url).searchParams.get('state')}`;
  const replay = await http(cb, { headers: { accept: 'text/html', cookie: `${attackerState.name}=${attackerState.value}` } });
  assert.equal(replay.status, 400, replay.body.slice(0, 200));
  assert.ok(![].concat(replay.headers['set-cookie'] ?? []).some((c) => /^_gatehouse=v1\./.test(c)));
});
