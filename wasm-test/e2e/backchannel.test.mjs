// Back-channel logout (issue 18, `login.backchannelLogoutPath`) with real Keycloak through real
// Envoy: the gateway client's back-channel logout URL points at gateway A, so Keycloak POSTs a
// logout token there whenever a user's Keycloak session ends — an admin ends it, or the user signs
// out at another client. From then on every worker of A refuses the sessions of that Keycloak
// session. Replica B (same configuration and cookie keys, which Keycloak does not call) learns at
// its next refresh, which Keycloak refuses. Both Envoys set the Wasm filter's
// `allow_on_headers_stop_iteration`, which reading the POST's body needs. In a copy of the demo
// realm with 10-second access tokens.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, formFromHtml, freePort, startEcho, startEnvoy, passwordToken,
} from '../lib/harness.mjs';
import { waitForSignIn } from '../lib/envoy.mjs';
import {
  startKeycloak, realmFile, realmClient, createRealmCopy, deleteRealm, adminApi,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-bcl';
const LIFESPAN = 10;
const REFRESH_BEFORE = 5;

let kc;
let realm;
let a;
let b;

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

async function gateway(listenPort, echoPort, { knob = true } = {}) {
  const envoy = await startEnvoy({
    listenPort,
    idpPort: kc.port,
    echoPort,
    wasmPath: WASM,
    concurrency: 2,
    filterConfig: {
      provider: {
        issuer: realm.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: realmClient('gateway').secret, audiences: ['gateway', 'api'],
      },
      session: {
        keys: ['e2e-backchannel-cookie-key-0123456789ab'], secure: false, refresh: true, refreshBeforeSeconds: REFRESH_BEFORE,
      },
      login: { backchannelLogoutPath: '/oauth2/backchannel_logout' },
    },
    customize: (boot) => {
      if (!knob) return;
      const hcm = boot.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      hcm.http_filters.find((f) => f.name === 'envoy.filters.http.wasm').typed_config.config.allow_on_headers_stop_iteration = true;
    },
  });
  await waitForSignIn(envoy.url);
  return envoy;
}

/** Status of `n` requests with `cookie`, each on a connection of its own (so both workers answer). */
async function statuses(url, cookie, n = 12) {
  const rs = await Promise.all(Array.from({ length: n }, () => http(`${url}/echo`, { headers: { cookie, connection: 'close' } })));
  return [...new Set(rs.map((r) => r.status))];
}

async function signIn(url, username) {
  const { response, jar } = await browse(`${url}/echo`, { username, password: username });
  assert.equal(response.status, 200, `${username}: ${response.status}`);
  return { jar, cookie: jar.header(`${url}/echo`) };
}

async function endKeycloakSession(username) {
  const [user] = await adminApi(kc, 'GET', `/users?username=${username}&exact=true`, undefined, REALM);
  await adminApi(kc, 'POST', `/users/${user.id}/logout`, undefined, REALM);
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  const [portA, portB] = [await freePort(), await freePort()];
  const clients = realmFile('demo').clients.map((c) => (c.clientId !== 'gateway' ? c : {
    ...c,
    frontchannelLogout: false,
    attributes: {
      ...c.attributes,
      'backchannel.logout.url': `http://127.0.0.1:${portA}/oauth2/backchannel_logout`,
      'backchannel.logout.session.required': 'true',
    },
  }));
  realm = await createRealmCopy(kc, REALM, { clients, accessTokenLifespan: LIFESPAN });
  const echo = await startEcho();
  a = await gateway(portA, echo.port);
  b = await gateway(portB, echo.port);
});

after(async () => {
  await deleteRealm(kc, REALM);
  await stopAll();
});

test('an admin ends alice\'s Keycloak session: every worker of the gateway refuses her session at once, bob\'s goes on', async () => {
  const alice = await signIn(a.url, 'alice');
  const bob = await signIn(a.url, 'bob');
  assert.deepEqual(await statuses(a.url, alice.cookie), [200]);
  await endKeycloakSession('alice');
  assert.deepEqual(await statuses(a.url, alice.cookie), [401], 'refused on every worker');
  assert.deepEqual(await statuses(a.url, bob.cookie), [200], 'another user\'s session');
  // A page navigation with the ended session goes to a login, and clears the cookie.
  const nav = await http(`${a.url}/echo`, { headers: { cookie: alice.cookie, accept: 'text/html' } });
  assert.equal(nav.status, 302);
  assert.ok([].concat(nav.headers['set-cookie']).some((c) => /^_gatehouse=;/.test(c)), nav.headers['set-cookie']);
  // Signing in again works.
  const again = await signIn(a.url, 'alice');
  assert.deepEqual(await statuses(a.url, again.cookie), [200]);
});

test('signing out at another client (Keycloak\'s account console) ends the gateway\'s session too', async () => {
  const alice = await signIn(a.url, 'alice');
  assert.deepEqual(await statuses(a.url, alice.cookie), [200]);
  // RP-initiated logout by the `account` client, in the same browser: Keycloak asks, she confirms.
  const ask = await browse(`${realm.logout}?client_id=account`, { jar: alice.jar });
  assert.match(ask.response.body, /id="kc-logout"/, 'Keycloak\'s "Logging out" question');
  const confirm = formFromHtml(ask.response.body, ask.url);
  const out = await http(confirm.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: alice.jar.header(confirm.action) },
    body: new URLSearchParams({ ...confirm.fields, confirmLogout: 'Logout' }).toString(),
  });
  assert.equal(out.status, 200, out.body.slice(0, 200));
  assert.match(out.body, /You are logged out/);
  assert.deepEqual(await statuses(a.url, alice.cookie), [401]);
});

test('replica B, which Keycloak does not call, refuses the session at its next refresh', { timeout: 60_000 }, async (t) => {
  const alice = await signIn(a.url, 'alice');
  const t0 = Date.now();
  assert.deepEqual(await statuses(b.url, alice.cookie, 4), [200], 'the replicas share the cookie keys');
  await endKeycloakSession('alice');
  const ended = Date.now();
  assert.deepEqual(await statuses(a.url, alice.cookie), [401], 'A at once');
  // B keeps the session until it refreshes it: from LIFESPAN - REFRESH_BEFORE seconds after sign-in.
  const bound = t0 + (LIFESPAN - REFRESH_BEFORE + 3) * 1000;
  let last;
  while (Date.now() < bound + 2000) {
    last = (await http(`${b.url}/echo`, { headers: { cookie: alice.cookie } })).status; // eslint-disable-line no-await-in-loop
    if (last === 401) break;
    await sleep(250); // eslint-disable-line no-await-in-loop
  }
  assert.equal(last, 401, 'B refused it after its refresh');
  assert.ok(Date.now() <= bound + 2000);
  t.diagnostic(`replica B refused the session ${((Date.now() - ended) / 1000).toFixed(1)} s after the logout (refresh due ${LIFESPAN - REFRESH_BEFORE} s after sign-in)`);
});

test('what is not a logout token is refused and ends nothing', async () => {
  const alice = await signIn(a.url, 'alice');
  const url = `${a.url}/oauth2/backchannel_logout`;
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const { access_token: accessToken, id_token: idToken } = await passwordToken({
    tokenUrl: realm.token, username: 'alice', password: 'alice', clientId: 'api', clientSecret: realmClient('api').secret,
  });
  const cases = [
    ['GET', {}, undefined, 405],
    ['POST', { 'content-type': 'application/json' }, '{}', 400],
    ['POST', form, '', 400],
    ['POST', form, 'logout_token=not.a.token', 400],
    ['POST', form, `logout_token=${accessToken}`, 400], // Keycloak-signed, but an access token
    ['POST', form, `logout_token=${idToken}`, 400], // an ID token (another client's)
    ['POST', form, `logout_token=x&logout_token=y`, 400],
  ];
  for (const [method, headers, body, want] of cases) {
    const r = await http(url, { method, headers, body }); // eslint-disable-line no-await-in-loop
    assert.equal(r.status, want, `${method} ${body?.slice(0, 30)}: ${r.body}`);
    assert.equal(r.json?.path, undefined, 'answered by gatehouse');
  }
  assert.deepEqual(await statuses(a.url, alice.cookie), [200], 'still signed in');
});

test('without allow_on_headers_stop_iteration Envoy never hands over the logout POST\'s body: it waits, and nothing ends', async () => {
  const echo = await startEcho();
  const c = await gateway(await freePort(), echo.port, { knob: false });
  const alice = await signIn(c.url, 'alice');
  const started = Date.now();
  const r = await http(`${c.url}/oauth2/backchannel_logout`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'logout_token=x', timeoutMs: 2_000,
  }).catch((e) => ({ error: e }));
  assert.ok(r.error, `expected no answer, got ${r.status}`);
  assert.ok(Date.now() - started >= 1_900);
  assert.deepEqual(await statuses(c.url, alice.cookie, 4), [200]);
});
