// The userinfo endpoint (issue 18, `login.userinfoPath`): on real Keycloak, through real Envoy —
// after a browser sign-in, the session's identity as JSON for a single-page app; without a
// session 401 (never a login redirect, never the upstream).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, CookieJar, passwordToken,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor } from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
let kc;
let gateway;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  gateway = (await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: { issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'] },
      session: { keys: ['e2e-userinfo-cookie-key-0123456789abcdef'], secure: false },
    },
  })).url;
});

after(stopAll);

test('after signing in, /oauth2/userinfo is the session\'s identity as JSON', async () => {
  const jar = new CookieJar();
  const login = await browse(`${gateway}/echo`, { jar, username: 'alice', password: 'alice' });
  assert.equal(login.response.status, 200);
  const r = await http(`${gateway}/oauth2/userinfo`, { headers: { cookie: jar.header(`${gateway}/oauth2/userinfo`) } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.json.email, 'alice@example.com');
  assert.equal(r.json.preferredUsername, 'alice');
  assert.deepEqual(r.json.groups, ['/admins']);
  assert.ok(r.json.roles.includes('backendaccess'), JSON.stringify(r.json));
  assert.match(r.json.user, /^[0-9a-f-]{36}$/, 'the sub');
  assert.equal(r.json.path, undefined, 'answered by gatehouse, not the upstream');
});

test('without a session, /oauth2/userinfo is 401 for every kind of request, and never reaches the upstream', async () => {
  const { access_token: token } = await passwordToken({ tokenUrl: kc.urls.token, username: 'alice', password: 'alice' });
  for (const headers of [{}, { accept: 'text/html' }, { cookie: '_gatehouse=forged' }, { authorization: `Bearer ${token}` }]) {
    const r = await http(`${gateway}/oauth2/userinfo`, { headers }); // eslint-disable-line no-await-in-loop
    assert.equal(r.status, 401, JSON.stringify(headers));
    assert.equal(r.json.error, 'unauthenticated');
  }
});
