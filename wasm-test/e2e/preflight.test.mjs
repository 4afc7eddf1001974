// CORS preflights (issue 18, `preflightPaths`): through real Envoy with gatehouse on real
// Keycloak, a browser's preflight to a configured path reaches the upstream unauthenticated and
// unchanged; everything else there — the actual request, an OPTIONS that is no preflight, a
// preflight elsewhere or one some server reads as another method — is authenticated as usual.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { stopAll, http, passwordToken } from '../lib/harness.mjs';
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
      session: { keys: ['e2e-preflight-cookie-key-0123456789abcdef'], secure: false },
      preflightPaths: [{ prefix: '/api/' }],
    },
  })).url;
});

after(stopAll);

const PREFLIGHT = {
  origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type',
};

test('a preflight to a preflight path reaches the upstream unauthenticated and unchanged', async () => {
  const r = await http(`${gateway}/api/orders?x=1`, { method: 'OPTIONS', headers: { ...PREFLIGHT, 'x-auth-request-user': 'admin' } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.method, 'OPTIONS');
  assert.equal(r.json.path, '/api/orders?x=1');
  assert.equal(r.json.headers.origin, 'https://app.example');
  assert.equal(r.json.headers['access-control-request-method'], 'POST');
  assert.equal(r.json.headers['access-control-request-headers'], 'authorization, content-type');
  assert.equal(r.json.headers['x-auth-request-user'], undefined, 'a client-sent identity header is still removed');
});

test('everything else on that path is authenticated: the actual request, an OPTIONS that is no preflight, an overridden method', async () => {
  assert.equal((await http(`${gateway}/api/orders`, { method: 'POST', headers: { origin: 'https://app.example' }, body: '{}' })).status, 401);
  assert.equal((await http(`${gateway}/api/orders`, { method: 'OPTIONS', headers: { origin: 'https://app.example' } })).status, 401);
  assert.equal((await http(`${gateway}/api/orders`, { method: 'OPTIONS', headers: { 'access-control-request-method': 'POST' } })).status, 401);
  assert.equal((await http(`${gateway}/api/orders`, { method: 'OPTIONS', headers: { ...PREFLIGHT, 'x-http-method-override': 'DELETE' } })).status, 401);
  assert.equal((await http(`${gateway}/api/orders?_method=DELETE`, { method: 'OPTIONS', headers: PREFLIGHT })).status, 401);
  const { access_token: token } = await passwordToken({ tokenUrl: kc.urls.token, username: 'alice', password: 'alice' });
  const post = await http(`${gateway}/api/orders`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{}' });
  assert.equal(post.status, 200);
  assert.equal(post.json.headers['x-auth-request-preferred-username'], 'alice');
});

test('a preflight outside the preflight paths, or reading as one outside, is authenticated', async () => {
  assert.equal((await http(`${gateway}/admin/`, { method: 'OPTIONS', headers: PREFLIGHT })).status, 401);
  assert.equal((await http(`${gateway}/`, { method: 'OPTIONS', headers: PREFLIGHT, rawPath: '/api/../admin/' })).status, 401);
  assert.equal((await http(`${gateway}/apix`, { method: 'OPTIONS', headers: PREFLIGHT })).status, 401);
});
