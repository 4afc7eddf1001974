// Several providers (issue 18, `providers`): one gatehouse for two Keycloak realms, each with its
// own discovery, keys and client — a copy of the demo realm, `demo-partners` (its own keys, user
// ids and client secret), serves host localhost; realm `demo` lists no hosts and serves the rest
// (127.0.0.1). Both hosts reach the same Envoy. Bearer tokens are checked by the realm their `iss`
// names, on the hosts that realm serves; a third realm's tokens, which gatehouse is not
// configured for, are refused everywhere.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, freePort, startEcho, startEnvoy, passwordToken,
} from '../lib/harness.mjs';
import { waitForSignIn } from '../lib/envoy.mjs';
import {
  startKeycloak, realmFile, realmClient, createRealmCopy, deleteRealm, keycloakUrls,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const PARTNERS = 'demo-partners';
const UNLISTED = 'demo-unlisted';
const PARTNERS_SECRET = 'partners-gateway-secret-0123456789';

let kc;
let demo;
let partners;
let unlisted;
let port;
let hostA; // http://127.0.0.1:port — realm demo
let hostB; // http://localhost:port — realm demo-partners

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  demo = keycloakUrls(kc.url, 'demo');
  port = await freePort();
  hostA = `http://127.0.0.1:${port}`;
  hostB = `http://localhost:${port}`;
  const clients = realmFile('demo').clients.map((c) => (c.clientId !== 'gateway' ? c : {
    ...c, secret: PARTNERS_SECRET, redirectUris: [`${hostB}/oauth2/callback`],
  }));
  partners = await createRealmCopy(kc, PARTNERS, { clients });
  unlisted = await createRealmCopy(kc, UNLISTED);
  const echo = await startEcho();
  const provider = (issuer, secret, hosts) => ({
    issuer, cluster: 'idp', clientId: 'gateway', clientSecret: secret, audiences: ['gateway', 'api'], hosts,
  });
  const envoy = await startEnvoy({
    listenPort: port,
    idpPort: kc.port,
    echoPort: echo.port,
    wasmPath: WASM,
    concurrency: 2,
    filterConfig: {
      providers: [
        provider(demo.issuer, realmClient('gateway').secret, undefined),
        provider(partners.issuer, PARTNERS_SECRET, ['localhost']),
      ],
      session: { keys: ['e2e-providers-cookie-key-0123456789abcd'], secure: false },
      rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
    },
  });
  assert.equal(envoy.listenPort, port);
  await waitForSignIn(hostA);
  await waitForSignIn(hostB);
});

after(async () => {
  await deleteRealm(kc, PARTNERS);
  await deleteRealm(kc, UNLISTED);
  await stopAll();
});

async function signIn(origin, username, path = '/echo') {
  const r = await browse(`${origin}${path}`, { username, password: username });
  assert.equal(r.response?.status, 200, `${username} at ${origin}: ${JSON.stringify(r.history)}`);
  return r;
}

const realmsVisited = (history) => [...new Set(history
  .map((h) => new URL(h.url))
  .filter((u) => u.origin === kc.url)
  .map((u) => u.pathname.match(/^\/realms\/([^/]+)\//)?.[1]))];

test('each host signs in at its own realm, with that realm\'s client', async () => {
  const atA = await signIn(hostA, 'alice');
  const atB = await signIn(hostB, 'alice');
  assert.deepEqual(realmsVisited(atA.history), ['demo']);
  assert.deepEqual(realmsVisited(atB.history), [PARTNERS], 'the code was redeemed with the partners client secret');
  const [a, b] = [atA.response.json.headers, atB.response.json.headers];
  assert.equal(a['x-auth-request-preferred-username'], 'alice');
  assert.equal(b['x-auth-request-preferred-username'], 'alice');
  assert.notEqual(a['x-auth-request-user'], b['x-auth-request-user'], 'two realms, two users');
  // Each realm's rules: alice is in admins in both.
  const admin = await http(`${hostB}/admin/x`, { headers: { cookie: atB.jar.header(`${hostB}/admin/x`) } });
  assert.equal(admin.status, 200);
  const bob = await signIn(hostB, 'bob');
  const refused = await http(`${hostB}/admin/x`, { headers: { cookie: bob.jar.header(`${hostB}/admin/x`) } });
  assert.equal(refused.status, 403);
});

test('a session of one realm is no session on the other realm\'s host', async () => {
  const atA = await signIn(hostA, 'alice');
  const cookie = atA.jar.header(`${hostA}/echo`);
  assert.equal((await http(`${hostA}/echo`, { headers: { cookie } })).status, 200);
  const there = await http(`${hostB}/echo`, { headers: { cookie } });
  assert.equal(there.status, 401);
  const page = await http(`${hostB}/echo`, { headers: { cookie, accept: 'text/html' } });
  assert.equal(page.status, 302);
  assert.ok(page.headers.location.startsWith(`${partners.authorization}?`), page.headers.location);
});

test('bearer tokens pass by the realm their iss names, on the hosts it serves; an unconfigured realm\'s nowhere', async () => {
  const token = async (urls) => {
    const r = await passwordToken({
      idpPort: kc.port, tokenUrl: urls.token, username: 'alice', password: 'alice', clientSecret: realmClient('api').secret,
    });
    assert.ok(r.access_token, JSON.stringify(r));
    return r.access_token;
  };
  const [ofDemo, ofPartners, ofUnlisted] = [await token(demo), await token(partners), await token(unlisted)];
  for (const [origin, partnersThere] of [[hostA, 401], [hostB, 200]]) {
    for (const [what, t, want] of [['demo', ofDemo, 200], ['partners', ofPartners, partnersThere], ['unlisted', ofUnlisted, 401]]) {
      // eslint-disable-next-line no-await-in-loop
      const r = await http(`${origin}/echo`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(r.status, want, `${what} at ${origin}: ${r.body}`);
      if (want === 401) assert.match(r.headers['www-authenticate'], /error="invalid_token"/);
    }
  }
});

test('sign-out goes to the logout of the host\'s realm', async () => {
  const atB = await signIn(hostB, 'alice');
  const out = await http(`${hostB}/oauth2/sign_out`, {
    headers: { cookie: atB.jar.header(`${hostB}/oauth2/sign_out`), 'sec-fetch-site': 'same-origin' },
  });
  assert.equal(out.status, 302);
  const to = new URL(out.headers.location);
  assert.equal(to.origin + to.pathname, partners.logout);
  assert.ok(to.searchParams.get('id_token_hint'), 'the partners ID token as the hint');
  const atA = await http(`${hostA}/oauth2/sign_out`, { headers: { 'sec-fetch-site': 'same-origin' } });
  assert.equal(new URL(atA.headers.location).pathname, new URL(demo.logout).pathname);
});
