// Real Keycloak with refresh-token rotation on (issue 14): the realm's "Revoke Refresh Token" with
// no reuse, so a refresh token works exactly once. Through an Envoy with two workers, a burst of
// requests carrying a session that is due for refresh must cause one refresh, and sign nobody out.
// Then Keycloak's SSO session lifetimes (max lifespan, idle timeout) ending gatehouse sessions at
// their next refresh, each in a realm copy of its own. The realm is a copy of the demo realm made for this file through Keycloak's admin API (the run's
// Keycloak is shared), and removed after.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, envoyStats,
} from '../lib/harness.mjs';
import {
  startKeycloak, startGatewayFor, realmClient, createRealmCopy, deleteRealm,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-rotating';
const LIFESPAN = 30;

let kc;
let envoy;

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  const realm = await createRealmCopy(kc, REALM, { revokeRefreshToken: true, refreshTokenMaxReuse: 0, accessTokenLifespan: LIFESPAN });
  envoy = await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: realm.issuer,
        cluster: 'idp',
        clientId: 'gateway',
        clientSecret: realmClient('gateway').secret,
        audiences: ['gateway', 'api'],
      },
      // Refresh once the access token has less than 25 s left: 5 s after sign-in.
      session: { keys: ['e2e-rotation-cookie-key-0123456789abcdef'], secure: false, refresh: true, refreshBeforeSeconds: LIFESPAN - 5 },
    },
  });
});

after(async () => {
  await deleteRealm(kc, REALM);
  await stopAll();
});

test('a burst on two workers with a session due for refresh: one refresh, every request served, nobody signed out', async () => {
  const { response, jar } = await browse(`${envoy.url}/echo`, { username: 'alice', password: 'alice' });
  assert.equal(response.status, 200);
  const cookie = jar.header(`${envoy.url}/echo`);
  const before = await envoyStats(envoy, 'gatehouse.sessions');
  await sleep(6_000);

  // 24 requests at once, each on its own connection (Envoy spreads connections over its workers).
  const burst = await Promise.all(Array.from({ length: 24 }, () => http(`${envoy.url}/echo`, {
    headers: { cookie, connection: 'close' },
  })));
  const statuses = burst.map((r) => r.status);
  assert.deepEqual([...new Set(statuses)], [200], `every request served: ${statuses.join(',')}`);
  for (const r of burst) assert.equal(r.json.headers['x-auth-request-email'], 'alice@example.com');
  const renewed = burst.filter((r) => [].concat(r.headers['set-cookie'] ?? []).some((c) => c.startsWith('_gatehouse=')));
  assert.ok(renewed.length >= 1, 'the refreshed session goes back to the browser');

  await sleep(2_500); // counts reach Envoy once a second per worker
  const stats = await envoyStats(envoy, 'gatehouse.sessions');
  const delta = (name) => (stats[`wasmcustom.gatehouse.sessions.${name}`] ?? 0) - (before[`wasmcustom.gatehouse.sessions.${name}`] ?? 0);
  assert.equal(delta('refreshed'), 1, JSON.stringify(stats));
  assert.equal(delta('refresh_failed'), 0, JSON.stringify(stats));

  // The new session works, and so does the old cookie for a while (tabs still sending it).
  jar.store(`${envoy.url}/echo`, renewed[0].headers['set-cookie']);
  const next = await http(`${envoy.url}/echo`, { headers: { cookie: jar.header(`${envoy.url}/echo`) } });
  assert.equal(next.status, 200);
  const old = await http(`${envoy.url}/echo`, { headers: { cookie } });
  assert.equal(old.status, 200);
});

/**
 * A copy of the demo realm named `name` with the realm settings `overrides` (removed when test `t`
 * ends), and a gateway for it whose sessions refresh `refreshBeforeSeconds` before their access
 * token ends.
 */
async function gatewayOnRealmCopy(t, name, overrides, refreshBeforeSeconds) {
  const realm = await createRealmCopy(kc, name, overrides);
  t.after(() => deleteRealm(kc, name));
  const gw = await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: realm.issuer, cluster: 'idp', clientId: 'gateway',
        clientSecret: realmClient('gateway').secret, audiences: ['gateway', 'api'],
      },
      session: {
        keys: [`e2e-${name}-cookie-key-0123456789abcdef`], secure: false, refresh: true, refreshBeforeSeconds,
      },
    },
  });
  return { realm, gw };
}

test('Keycloak\'s SSO session max lifespan ends the gatehouse session at its next refresh', { timeout: 90_000 }, async (t) => {
  // The gatehouse session itself would last 12 hours; refresh 5 s before the access token ends.
  const { realm: short, gw } = await gatewayOnRealmCopy(t, 'demo-short-sso', { ssoSessionMaxLifespan: 12, ssoSessionIdleTimeout: 12, accessTokenLifespan: 10 }, 5);
  const { response, jar } = await browse(`${gw.url}/echo`, { username: 'alice', password: 'alice' });
  assert.equal(response.status, 200);
  const cookie = jar.header(`${gw.url}/echo`);
  // Within the SSO session: refreshes work (access token of 10 s, refreshed from 5 s on).
  await sleep(6_000);
  const within = await http(`${gw.url}/echo`, { headers: { cookie } });
  assert.equal(within.status, 200, 'refreshed while Keycloak\'s session lives');
  jar.store(`${gw.url}/echo`, within.headers['set-cookie']);
  // Past Keycloak's 12 s maximum: the next refresh is refused and the session ends.
  await sleep(9_000);
  const api = await http(`${gw.url}/echo`, { headers: { cookie: jar.header(`${gw.url}/echo`) } });
  assert.equal(api.status, 401, `an API call after Keycloak ended the session: ${api.status} ${api.body}`);
  const cleared = [].concat(api.headers['set-cookie'] ?? []);
  assert.ok(cleared.some((c) => c.startsWith('_gatehouse=') && /Max-Age=0/i.test(c)), 'the session cookie is cleared');
  const page = await http(`${gw.url}/echo`, { headers: { accept: 'text/html', cookie: jar.header(`${gw.url}/echo`) } });
  assert.equal(page.status, 302);
  assert.ok(page.headers.location.startsWith(short.issuer) || page.headers.location.startsWith('/'), page.headers.location);
});

test('Keycloak\'s SSO session idle timeout: a session in use outlives it, an idle one ends at its next request', { timeout: 90_000 }, async (t) => {
  // Idle 10 s, access tokens of 6 s refreshed from 3 s on: each refresh resets Keycloak's idle
  // clock (its refresh tokens expire with it, at 10 s).
  const { gw } = await gatewayOnRealmCopy(t, 'demo-idle-sso', { ssoSessionIdleTimeout: 10, ssoSessionMaxLifespan: 3600, accessTokenLifespan: 6 }, 3);
  const url = `${gw.url}/echo`;
  const active = await browse(url, { username: 'alice', password: 'alice' });
  const resting = await browse(url, { username: 'alice', password: 'alice' });
  assert.equal(active.response.status, 200);
  assert.equal(resting.response.status, 200);
  const start = Date.now();
  let refreshed = 0;
  for (let i = 1; i <= 4; i += 1) {
    // eslint-disable-next-line no-await-in-loop
    await sleep(Math.max(0, i * 4_000 - (Date.now() - start)));
    // eslint-disable-next-line no-await-in-loop
    const r = await http(url, { headers: { cookie: active.jar.header(url) } });
    assert.equal(r.status, 200, `in use, ${((Date.now() - start) / 1000).toFixed(0)} s after sign-in`);
    if ([].concat(r.headers['set-cookie'] ?? []).some((c) => /^_gatehouse=v1\./.test(c))) refreshed += 1;
    active.jar.store(url, r.headers['set-cookie']);
  }
  assert.ok(refreshed >= 3, `the session in use was refreshed along the way (${refreshed} times)`);
  assert.ok(Date.now() - start > 14_000, 'past the idle timeout');
  const r = await http(url, { headers: { cookie: resting.jar.header(url) } });
  assert.equal(r.status, 401, `the idle session, past Keycloak's idle timeout: ${r.status} ${r.body}`);
  assert.ok([].concat(r.headers['set-cookie'] ?? []).some((c) => c.startsWith('_gatehouse=') && /Max-Age=0/i.test(c)), 'its cookie is cleared');
});
