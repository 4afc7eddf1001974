// Email domains (issue 18, `email`): on real Keycloak, through real Envoy — only identities whose
// email is in the allowed domains, and verified (unless switched off), pass; by token and by
// browser session alike. In a copy of the demo realm where bob's email is not verified.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, CookieJar, passwordToken,
} from '../lib/harness.mjs';
import {
  startKeycloak, startGatewayFor, createRealmCopy, deleteRealm, realmFile,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'email-domains';
let kc;
let realm;
const gateways = {};

const gatewayConfig = (email) => ({
  provider: { issuer: realm.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'] },
  session: { keys: ['e2e-email-cookie-key-0123456789abcdefgh'], secure: false },
  email,
});

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  const users = realmFile('demo').users.map((u) => (u.username === 'bob' ? { ...u, emailVerified: false } : u));
  realm = await createRealmCopy(kc, REALM, { users });
  for (const [name, email] of Object.entries({
    exact: { domains: ['example.com'] },
    subdomains: { domains: ['*.example.com'] },
    unverifiedOk: { domains: ['example.com'], requireVerified: false },
  })) {
    gateways[name] = (await startGatewayFor(kc, { wasmPath: WASM, filterConfig: gatewayConfig(email) })).url; // eslint-disable-line no-await-in-loop
  }
});

after(async () => {
  await stopAll();
  if (kc) await deleteRealm(kc, REALM);
});

const token = async (user) => (await passwordToken({ tokenUrl: realm.token, username: user, password: user })).access_token;
const asBearer = async (gw, user) => http(`${gateways[gw]}/echo`, { headers: { authorization: `Bearer ${await token(user)}` } });

test('a verified email in the domain passes; an unverified one is refused', async () => {
  const alice = await asBearer('exact', 'alice');
  assert.equal(alice.status, 200, alice.body);
  assert.equal(alice.json.headers['x-auth-request-email'], 'alice@example.com');
  const bob = await asBearer('exact', 'bob');
  assert.equal(bob.status, 403);
  assert.equal(bob.json.reason, 'email_unverified');
});

test('example.com is not *.example.com: the exact domain only unless subdomains are asked for', async () => {
  const alice = await asBearer('subdomains', 'alice');
  assert.equal(alice.status, 403);
  assert.equal(alice.json.reason, 'email_domain');
});

test('requireVerified: false lets an unverified email in the domain through', async () => {
  assert.equal((await asBearer('unverifiedOk', 'bob')).status, 200);
});

test('browser sessions are held to the same rule, after Keycloak\'s login', async () => {
  const ok = await browse(`${gateways.exact}/echo`, { jar: new CookieJar(), username: 'alice', password: 'alice' });
  assert.equal(ok.response.status, 200);
  const refused = await browse(`${gateways.exact}/echo`, { jar: new CookieJar(), username: 'bob', password: 'bob' });
  assert.equal(refused.response.status, 403);
  assert.match(refused.response.body, /email_unverified/);
  const outside = await browse(`${gateways.subdomains}/echo`, { jar: new CookieJar(), username: 'alice', password: 'alice' });
  assert.equal(outside.response.status, 403);
});
