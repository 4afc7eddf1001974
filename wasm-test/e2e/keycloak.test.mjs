// Real Keycloak (issue 14): the realm users import (examples/keycloak/demo-realm.json), its own
// login page, its own tokens, through real Envoy with gatehouse. What only real Keycloak shows:
// the roles, group paths and audiences it actually puts in its tokens, PKCE S256 required by the
// `gateway` client, and RP-initiated logout ending its SSO session.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, CookieJar, browse,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor, realmFile } from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const HTML = { accept: 'text/html,application/xhtml+xml' };
const realm = realmFile('demo');
const secretOf = (clientId) => realm.clients.find((c) => c.clientId === clientId).secret;

let kc;
let gateway;

async function signIn(path, username, jar = new CookieJar()) {
  const r = await browse(`${gateway}${path}`, { jar, username, password: username });
  return { ...r, jar };
}

async function clientCredentials(clientId) {
  const r = await http(kc.urls.token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: secretOf(clientId) }).toString(),
  });
  assert.equal(r.status, 200, r.body);
  return r.json.access_token;
}

const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  const envoy = await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: secretOf('gateway'), audiences: ['gateway', 'api'],
      },
      session: { keys: ['e2e-keycloak-cookie-key-0123456789abcdef'], secure: false },
      publicPaths: [{ prefix: '/public/' }],
      rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
    },
  });
  gateway = envoy.url;
});

after(stopAll);

test('alice signs in on Keycloak\'s own page, with PKCE S256, and the upstream gets what Keycloak says of her', async () => {
  const first = await http(`${gateway}/echo?x=1`, { headers: HTML });
  assert.equal(first.status, 302);
  const auth = new URL(first.headers.location);
  assert.equal(auth.origin + auth.pathname, kc.urls.authorization);
  assert.equal(auth.searchParams.get('code_challenge_method'), 'S256', 'the gateway client requires PKCE S256');

  const { response, history } = await signIn('/echo?x=1', 'alice');
  assert.equal(response.status, 200, JSON.stringify(history));
  assert.ok(history.some((h) => h.method === 'POST' && h.url.startsWith(`${kc.issuer}/login-actions/authenticate`)),
    'the password went to Keycloak\'s own form');
  assert.equal(response.json.path, '/echo?x=1');
  const h = response.json.headers;
  assert.equal(h['x-auth-request-email'], 'alice@example.com');
  assert.equal(h['x-auth-request-preferred-username'], 'alice');
  // Keycloak's group mapper with full.path sends the group path.
  assert.equal(h['x-auth-request-groups'], '/admins');
  // The realm role the realm file grants; Keycloak adds its default roles only when the realm
  // has them (this one's roles are exactly what the file says).
  assert.ok(h['x-auth-request-roles'].split(',').includes('backendaccess'), h['x-auth-request-roles']);
  assert.match(h['x-auth-request-user'], /^[0-9a-f-]{36}$/, 'the sub is Keycloak\'s user id');
});

test('a wrong password stays on Keycloak\'s page: no session, nothing reaches the upstream', async () => {
  const jar = new CookieJar();
  const r = await browse(`${gateway}/echo`, { jar, username: 'alice', password: 'not-alices' });
  assert.equal(r.loginFailed, true);
  assert.ok(r.url.startsWith(`${kc.issuer}/`), r.url);
  assert.ok(!jar.list().some((c) => /^_gatehouse(\.\d+)?$/.test(c.name)), 'no session cookie');
  const next = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(next.status, 401);
});

test('bob is signed in but refused on /admin/ (no admins group), and allowed elsewhere', async () => {
  const { jar, response } = await signIn('/echo', 'bob');
  assert.equal(response.status, 200);
  assert.equal(response.json.headers['x-auth-request-groups'], undefined, 'bob is in no group');
  const admin = await http(`${gateway}/admin/x`, { headers: { cookie: jar.header(`${gateway}/admin/x`) } });
  assert.equal(admin.status, 403);
  assert.equal(admin.json.reason, 'group_required');
  const alice = await signIn('/admin/x', 'alice');
  assert.equal(alice.response.status, 200);
});

test('a client-credentials token of the api client is accepted as a bearer token, with its audience and service-account user', async () => {
  const token = await clientCredentials('api');
  const claims = payload(token);
  assert.equal(claims.iss, kc.issuer);
  assert.equal(claims.azp, 'api');
  const r = await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.headers['x-auth-request-preferred-username'], 'service-account-api');
  assert.equal(r.json.headers.authorization, undefined, 'the token is not passed on by default');
  // The same token, one byte changed in its signature: refused.
  const sig = token.split('.')[2];
  const bad = `${token.slice(0, token.length - sig.length)}${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
  const refused = await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${bad}` } });
  assert.equal(refused.status, 401);
});

test('signing out ends the Keycloak session: the next page asks for the password again', async () => {
  const { jar } = await signIn('/echo', 'alice');
  // A browser without Keycloak's cookies is asked for the password; with them (a new gateway
  // session in the same browser), Keycloak signs it in without one (SSO).
  const fresh = await browse(`${gateway}/echo`, { jar: new CookieJar(), username: undefined });
  assert.match(fresh.response.body, /id="kc-form-login"/);
  const again = await browse(`${gateway}/echo?again`, { jar: withoutGatehouse(jar), username: undefined });
  assert.equal(again.response?.status, 200, 'Keycloak\'s SSO cookie signs a new gateway session in without a password');
  assert.equal(again.response.json.headers['x-auth-request-email'], 'alice@example.com');

  // The sign-out form's own POST, then Keycloak's logout endpoint with id_token_hint.
  const form = await http(`${gateway}/oauth2/sign_out`, { headers: { ...HTML, cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  const action = form.body.match(/action="([^"]+)"/)[1].replaceAll('&amp;', '&');
  const out = await http(`${gateway}${action}`, { method: 'POST', headers: { cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(out.status, 302);
  jar.store(`${gateway}/oauth2/sign_out`, out.headers['set-cookie']);
  const loc = new URL(out.headers.location);
  assert.equal(loc.origin + loc.pathname, kc.urls.logout);
  const ended = await browse(loc.href, { jar, username: undefined });
  assert.ok([200, 302].includes(ended.history.at(-1).status), JSON.stringify(ended.history));

  // Keycloak's session is gone: the next page goes through Keycloak's login form again.
  const next = await browse(`${gateway}/echo`, { jar, username: undefined });
  assert.ok(next.url.startsWith(`${kc.issuer}/`), `stopped at ${next.url}`);
  assert.match(next.response.body, /id="kc-form-login"/, 'Keycloak asks for the password');
});

/** A copy of a jar without gatehouse's cookies: the same browser, before it signed in at the gateway. */
function withoutGatehouse(jar) {
  const copy = new CookieJar();
  for (const c of jar.list()) {
    if (!c.name.startsWith('_gatehouse')) copy.store(`http://${c.host}${c.path}`, `${c.name}=${c.value}; Path=${c.path}`);
  }
  return copy;
}
