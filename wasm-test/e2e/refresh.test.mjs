// Session refresh end to end: with `session.refresh`, gatehouse keeps the refresh token
// (encrypted in the cookie) and refreshes the session by callout before the access token expires.
// The IdP issues 6-second access tokens here.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';

import {
  freePort, startIdp, startEcho, startEnvoy, stopAll, http, CookieJar, browse, waitFor, runDirectory,
} from '../lib/harness.mjs';
import { writeKeysFile } from '../lib/keys.mjs';

const WASM = process.env.WASM;
const HTML = { accept: 'text/html' };
const TTL = 6;
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

let idp;
let idpPort;
let keysFile;
let gateway;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  keysFile = join(await mkdtemp(join(runDirectory(), 'refresh-')), 'keys.json');
  await writeKeysFile(keysFile);
  idpPort = await freePort();
  idp = await startIdp({ port: idpPort, keysFile, accessTokenTtl: TTL });
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const envoy = await startEnvoy({
    idpPort, echoPort, wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: `http://127.0.0.1:${idpPort}/realms/demo`, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret',
      },
      session: { keys: ['e2e-refresh-cookie-key-0123456789abcdef'], secure: false, refresh: true, refreshBeforeSeconds: 2 },
    },
  });
  gateway = envoy.url;
  await waitFor(async () => (await http(`${gateway}/echo`, { headers: HTML })).status === 302, { timeoutMs: 20000, what: 'discovery' });
});

after(stopAll);

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

  // The provider forgets the session (a restart here; in Keycloak an admin sign-out or a revoked
  // token): the next refresh is refused and the browser goes back to login.
  await idp.stop();
  idp = await startIdp({ port: idpPort, keysFile, accessTokenTtl: TTL });
  await sleep((TTL - 2) * 1000 + 500);
  const page = await http(`${gateway}/echo?again`, { headers: { ...HTML, cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(page.status, 302, page.body);
  assert.equal(page.headers.location, '/echo?again');
  assert.ok([].concat(page.headers['set-cookie']).some((c) => /^_gatehouse=;.*Max-Age=0/.test(c)));
  jar.store(`${gateway}/echo`, page.headers['set-cookie']);
  const next = await http(`${gateway}/echo?again`, { headers: { ...HTML, cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(next.status, 302);
  assert.equal(new URL(next.headers.location).port, String(idpPort), 'to the login page');
});

test('while the provider is down, a session due for refresh keeps working', async () => {
  const jar = new CookieJar();
  const login = await browse(`${gateway}/echo`, { jar, username: 'bob', password: 'bob' });
  assert.equal(login.response.status, 200);
  await idp.stop();
  try {
    await sleep((TTL - 2) * 1000 + 500);
    const r = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
    assert.equal(r.status, 200);
    assert.equal(r.json.headers['x-auth-request-email'], 'bob@example.com');
  } finally {
    idp = await startIdp({ port: idpPort, keysFile, accessTokenTtl: TTL });
  }
});
