// The endpoints people wire in (issue 18, `login.userinfoPath`, `startPath`, `authPath`), on real
// Keycloak through real Envoy: userinfo is the session's identity as JSON for a single-page app;
// start begins a login towards `?rd=` under the open-redirect rules; auth is 200 with the identity
// headers, or 401 / 403, for a subrequest. Without credentials none of them redirects, and none
// reaches the upstream.

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
      rules: [{ name: 'auth-admins', match: { paths: [{ prefix: '/oauth2/auth' }], hosts: ['admins.test'] }, require: { groups: ['admins'] } }],
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

test('/oauth2/start?rd= signs in and lands on rd; a foreign rd lands on /', async () => {
  const jar = new CookieJar();
  const login = await browse(`${gateway}/oauth2/start?rd=${encodeURIComponent('/deep/page?x=1')}`, { jar, username: 'alice', password: 'alice' });
  assert.equal(login.response.status, 200);
  assert.equal(new URL(login.url).pathname, '/deep/page');
  assert.equal(login.response.json.path, '/deep/page?x=1', 'the echo upstream, after the login');
  assert.equal(login.response.json.headers['x-auth-request-preferred-username'], 'alice');
  // Signed in already: start still starts a login (Keycloak's SSO answers at once), towards rd.
  const again = await browse(`${gateway}/oauth2/start?rd=${encodeURIComponent(`${gateway}/second`)}`, { jar });
  assert.equal(again.response.status, 200);
  assert.equal(again.response.json.path, '/second', 'an absolute rd on this host');
  for (const rd of ['https://evil.example/', '//evil.example/', '/\\evil.example', 'javascript:alert(1)']) {
    const r = await browse(`${gateway}/oauth2/start?rd=${encodeURIComponent(rd)}`, { jar }); // eslint-disable-line no-await-in-loop
    assert.equal(new URL(r.url).origin, new URL(gateway).origin, rd);
    assert.equal(r.response.json.path, '/', rd);
  }
  // Not GET or HEAD: 405, and nothing starts.
  const post = await http(`${gateway}/oauth2/start?rd=%2F`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET, HEAD');
  assert.equal(post.headers['set-cookie'], undefined);
});

test('/oauth2/auth: 200 with the identity headers for a session or a token, 401 without, 403 where a rule refuses', async () => {
  const jar = new CookieJar();
  await browse(`${gateway}/echo`, { jar, username: 'bob', password: 'bob' });
  const cookie = jar.header(`${gateway}/oauth2/auth`);
  assert.ok(cookie);
  const r = await http(`${gateway}/oauth2/auth`, { headers: { cookie } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.headers['x-auth-request-preferred-username'], 'bob');
  assert.equal(r.headers['x-auth-request-email'], 'bob@example.com');
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.body, '', 'answered by gatehouse, not the upstream');
  const { access_token: token } = await passwordToken({ tokenUrl: kc.urls.token, username: 'alice', password: 'alice' });
  const t = await http(`${gateway}/oauth2/auth`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(t.status, 200);
  assert.equal(t.headers['x-auth-request-preferred-username'], 'alice');
  for (const headers of [{}, { accept: 'text/html', 'sec-fetch-mode': 'navigate' }, { cookie: '_gatehouse=forged' }, { authorization: `Bearer ${token.slice(0, -3)}AAA` }]) {
    const n = await http(`${gateway}/oauth2/auth`, { headers }); // eslint-disable-line no-await-in-loop
    assert.equal(n.status, 401, JSON.stringify(headers));
    assert.equal(n.headers.location, undefined);
    assert.equal(n.headers['x-auth-request-email'], undefined);
  }
  // A rule on the auth path (here on one host): bob is refused, alice is not.
  const { access_token: bobToken } = await passwordToken({ tokenUrl: kc.urls.token, username: 'bob', password: 'bob' });
  const bobAdmins = await http(`${gateway}/oauth2/auth`, { headers: { authorization: `Bearer ${bobToken}`, host: 'admins.test' } });
  assert.equal(bobAdmins.status, 403);
  assert.equal(bobAdmins.headers['x-auth-request-email'], undefined);
  const aliceAdmins = await http(`${gateway}/oauth2/auth`, { headers: { authorization: `Bearer ${token}`, host: 'admins.test' } });
  assert.equal(aliceAdmins.status, 200);
});
