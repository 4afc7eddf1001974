// Token relay (issue 18, `session.relayAccessToken`), on real Keycloak through real Envoy: a
// browser signs in at gatehouse, and the service behind it verifies JWTs itself — as seed 003's
// `RequestAuthentication` (with a `requestPrincipals` AuthorizationPolicy) makes the workload's
// sidecar do. The workload here is an Envoy with the `jwt_authn` filter as istiod renders it: the
// realm's keys inline (istiod fetches the JWKS and inlines it), a token required except on
// `/public/`, the token forwarded. The realm is a copy of the demo realm with 30-second access
// tokens, so that a refresh comes within the test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, freePort, startEcho, startEnvoy, passwordToken,
} from '../lib/harness.mjs';
import { waitForSignIn } from '../lib/envoy.mjs';
import {
  startKeycloak, realmClient, createRealmCopy, deleteRealm,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-relay';
const LIFESPAN = 30;

let kc;
let realm;
let gateway; // relays the access token
let plain; // the same, without relaying
let workload;

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

/** The workload's sidecar: `jwt_authn` as istiod renders a RequestAuthentication, before echo. */
async function startWorkload(jwks) {
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  return startEnvoy({
    idpPort: kc.port,
    echoPort,
    customize: (b) => {
      const hcm = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      hcm.http_filters.unshift({
        name: 'envoy.filters.http.jwt_authn',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
          providers: {
            'origins-0': { issuer: realm.issuer, local_jwks: { inline_string: JSON.stringify(jwks) }, forward: true, payload_in_metadata: realm.issuer },
          },
          rules: [
            { match: { prefix: '/public/' } },
            { match: { prefix: '/' }, requires: { provider_name: 'origins-0' } },
          ],
        },
      });
    },
  });
}

async function gatewayTo(upstreamPort, relayAccessToken) {
  const envoy = await startEnvoy({
    idpPort: kc.port,
    echoPort: upstreamPort,
    wasmPath: WASM,
    concurrency: 2,
    filterConfig: {
      provider: {
        issuer: realm.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: realmClient('gateway').secret, audiences: ['gateway', 'api'],
      },
      publicPaths: [{ prefix: '/public/' }],
      // Refresh once the access token has less than 25 s left: 5 s after sign-in.
      session: {
        keys: ['e2e-relay-cookie-key-0123456789abcdef012'], secure: false, refresh: true, refreshBeforeSeconds: LIFESPAN - 5, relayAccessToken,
      },
    },
  });
  await waitForSignIn(envoy.url);
  return envoy;
}

/** The session cookie's size as the browser sends it: every chunk, name and value. */
const sessionBytes = (cookieHeader) => cookieHeader.split('; ').filter((c) => c.startsWith('_gatehouse=') || c.startsWith('_gatehouse.')).join('; ').length;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  realm = await createRealmCopy(kc, REALM, { accessTokenLifespan: LIFESPAN });
  const jwks = (await http(realm.certs)).json;
  assert.ok(jwks.keys.length > 0);
  workload = await startWorkload(jwks);
  gateway = await gatewayTo(workload.listenPort, ['authorization', 'x-forwarded-access-token']);
  plain = await gatewayTo(workload.listenPort, []);
});

after(async () => {
  await deleteRealm(kc, REALM);
  await stopAll();
});

test('behind browser sign-in, the workload verifies the relayed access token itself; without relaying it refuses', async (t) => {
  const { response, jar } = await browse(`${gateway.url}/echo`, { username: 'alice', password: 'alice' });
  assert.equal(response.status, 200, response.body);
  const h = response.json.headers;
  assert.match(h.authorization, /^Bearer ey/);
  assert.equal(h['x-forwarded-access-token'], h.authorization.slice('Bearer '.length));
  const claims = payload(h['x-forwarded-access-token']);
  assert.equal(claims.iss, realm.issuer);
  assert.equal(claims.preferred_username, 'alice');
  assert.equal(h['x-auth-request-preferred-username'], 'alice', 'the claim headers as before');

  const other = await browse(`${plain.url}/echo`, { username: 'alice', password: 'alice' });
  assert.equal(other.response.status, 401, 'without relaying, the workload has no token to verify');
  assert.match(other.response.body, /Jwt is missing/);

  const withToken = sessionBytes(jar.header(`${gateway.url}/echo`));
  const without = sessionBytes(other.jar.header(`${plain.url}/echo`));
  t.diagnostic(`session cookie: ${withToken} bytes relaying the access token, ${without} bytes without (access token ${h['x-forwarded-access-token'].length} bytes)`);
  assert.ok(withToken > without + h['x-forwarded-access-token'].length, 'the cookie carries the token, encrypted');
  assert.ok(!jar.header(`${gateway.url}/echo`).includes(h['x-forwarded-access-token'].split('.')[1]), 'never in the clear');
});

test('the relayed token is kept fresh by refresh: a new token before the old one ends', { timeout: 60_000 }, async () => {
  const { response, jar } = await browse(`${gateway.url}/echo`, { username: 'alice', password: 'alice' });
  assert.equal(response.status, 200);
  const first = payload(response.json.headers['x-forwarded-access-token']);
  await sleep(6_000);
  const next = await http(`${gateway.url}/echo`, { headers: { cookie: jar.header(`${gateway.url}/echo`) } });
  assert.equal(next.status, 200, next.body);
  const second = payload(next.json.headers['x-forwarded-access-token']);
  assert.ok(second.iat > first.iat, `a new token: iat ${first.iat} → ${second.iat}`);
  assert.ok(second.exp > first.exp);
  assert.equal(second.sid, first.sid, 'of the same Keycloak session');
  jar.store(`${gateway.url}/echo`, next.headers['set-cookie']);
  // Past the first token's end, the session still relays a valid one (the workload accepts it).
  await sleep((first.exp - Math.floor(Date.now() / 1000) + 1) * 1000);
  const later = await http(`${gateway.url}/echo`, { headers: { cookie: jar.header(`${gateway.url}/echo`) } });
  assert.equal(later.status, 200, later.body);
  assert.ok(payload(later.json.headers['x-forwarded-access-token']).exp * 1000 > Date.now());
});

test('a client\'s own X-Forwarded-Access-Token never reaches the workload', async () => {
  const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.';
  const pub = await http(`${gateway.url}/public/x`, { headers: { 'x-forwarded-access-token': forged, x_forwarded_access_token: forged } });
  assert.equal(pub.status, 200);
  assert.equal(pub.json.headers['x-forwarded-access-token'], undefined);
  assert.equal(pub.json.headers.x_forwarded_access_token, undefined);
  const { jar } = await browse(`${gateway.url}/echo`, { username: 'bob', password: 'bob' });
  const r = await http(`${gateway.url}/echo`, { headers: { cookie: jar.header(`${gateway.url}/echo`), 'x-forwarded-access-token': forged } });
  assert.equal(r.status, 200);
  assert.equal(payload(r.json.headers['x-forwarded-access-token']).preferred_username, 'bob');
});

test('a bearer token passes to the workload as it came, in both headers', async () => {
  const { access_token: token } = await passwordToken({
    tokenUrl: realm.token, username: 'alice', password: 'alice', clientId: 'api', clientSecret: realmClient('api').secret,
  });
  const r = await http(`${gateway.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.headers.authorization, `Bearer ${token}`);
  assert.equal(r.json.headers['x-forwarded-access-token'], token);
  // Without relaying, gatehouse keeps the token from the upstream (tokens.forwardAuthorization).
  const p = await http(`${plain.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(p.status, 401);
});
