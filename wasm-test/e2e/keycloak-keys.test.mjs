// Key rotation on real Keycloak (issue 14), through its admin API as an operator does it: a new
// RSA key provider with a higher priority (new tokens carry its kid), the old one made passive
// (it still verifies, signs nothing), then removed. gatehouse takes new tokens after one key-set
// fetch on the kid it does not know, keeps old tokens while their key is published, and refuses
// them once it is gone (at its next key refresh, keys.refreshIntervalSeconds). In a copy of the
// demo realm made for this file.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { stopAll, http } from '../lib/harness.mjs';
import {
  startKeycloak, startGatewayFor, realmClient, createRealmCopy, deleteRealm, adminApi,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-keys';
const REFRESH = 10;
const KEY_PROVIDER = 'org.keycloak.keys.KeyProvider';

let kc;
let realm;
let gateway;
const api = realmClient('api');

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const kidOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString()).kid;

async function serviceToken() {
  const r = await http(realm.token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'api', client_secret: api.secret }).toString(),
  });
  assert.equal(r.status, 200, r.body);
  return r.json.access_token;
}

const through = async (token) => (await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${token}` } })).status;

async function rsaProviders() {
  const all = await adminApi(kc, 'GET', `/components?type=${KEY_PROVIDER}`, undefined, REALM);
  return all.filter((c) => c.providerId === 'rsa-generated');
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  realm = await createRealmCopy(kc, REALM);
  gateway = (await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: { issuer: realm.issuer, cluster: 'idp', audiences: ['api', 'gateway'] },
      keys: { refreshIntervalSeconds: REFRESH },
    },
  })).url;
});

after(async () => {
  await deleteRealm(kc, REALM);
  await stopAll();
});

test('a key rotated in Keycloak: new tokens accepted after one kid-miss fetch, old ones until their key is removed', { timeout: 90_000 }, async () => {
  const old = await serviceToken();
  assert.equal(await through(old), 200);
  const [first] = await rsaProviders();
  assert.ok(first, 'the realm has its generated RSA key');

  // A new key with a higher priority: Keycloak signs with it from now on.
  const realmId = (await adminApi(kc, 'GET', '', undefined, REALM)).id;
  await adminApi(kc, 'POST', '/components', {
    name: 'rsa-rotated', providerId: 'rsa-generated', providerType: KEY_PROVIDER, parentId: realmId,
    config: { priority: ['500'], keySize: ['2048'], algorithm: ['RS256'], active: ['true'], enabled: ['true'] },
  }, REALM);
  const fresh = await serviceToken();
  assert.notEqual(kidOf(fresh), kidOf(old), 'signed with the new key');
  assert.equal(await through(fresh), 200, 'accepted after fetching the key set for its kid');
  assert.equal(await through(old), 200, 'the old key is still published');

  // The old key passive: it verifies but signs nothing.
  await adminApi(kc, 'PUT', `/components/${first.id}`, { ...first, config: { ...first.config, active: ['false'] } }, REALM);
  assert.equal(kidOf(await serviceToken()), kidOf(fresh));
  assert.equal(await through(old), 200, 'a passive key still verifies');

  // Removed: once gatehouse refreshes its keys, tokens signed with it are refused.
  await adminApi(kc, 'DELETE', `/components/${first.id}`, undefined, REALM);
  const certs = await http(realm.certs);
  assert.ok(!certs.json.keys.some((k) => k.kid === kidOf(old)), 'Keycloak no longer publishes the old key');
  const deadline = Date.now() + (REFRESH + 10) * 1000;
  let status = await through(old);
  while (status === 200 && Date.now() < deadline) {
    await sleep(500);
    status = await through(old);
  }
  assert.equal(status, 401, `an old token after its key was removed (waited up to ${REFRESH + 10} s)`);
  assert.equal(await through(fresh), 200, 'the new key keeps working');
  assert.equal(await through(await serviceToken()), 200);
});
