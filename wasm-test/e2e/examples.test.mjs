// examples/: the Keycloak realm export holds exactly the test bed's demo data, the compose file pins
// the Keycloak the tests run, and the role-based example service makes its decision from
// gatehouse's headers behind real Envoy, with tokens from real Keycloak and that realm.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import {
  REPO_ROOT, freePort, startEnvoy, stopAll, http, passwordToken, waitFor,
} from '../lib/harness.mjs';
import { startKeycloak, KEYCLOAK_VERSION } from '../lib/keycloak.mjs';
import { USERS, CLIENTS, CORP } from '../lib/realm.mjs';

const WASM = process.env.WASM;
let app;
let gateway;
let idpPort;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  const kc = await startKeycloak();
  idpPort = kc.port;
  const appPort = await freePort();
  app = spawn(process.execPath, [join(REPO_ROOT, 'examples', 'role-app', 'server.mjs'), '--port', String(appPort)], { stdio: 'ignore' });
  await waitFor(async () => (await http(`http://127.0.0.1:${appPort}/whoami`).catch(() => ({ status: 0 }))).status === 200, { what: 'role-app' });
  const envoy = await startEnvoy({
    idpPort, echoPort: appPort, wasmPath: WASM,
    filterConfig: { provider: { issuer: `http://127.0.0.1:${idpPort}/realms/demo`, cluster: 'idp', clientId: 'gateway', audiences: ['api', 'gateway'] } },
  });
  gateway = envoy.url;
  const token = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
  await waitFor(async () => (await http(`${gateway}/whoami`, { headers: { authorization: `Bearer ${token}` } })).status === 200, { timeoutMs: 20000, what: 'keys' });
});

after(async () => {
  app?.kill('SIGTERM');
  await stopAll();
});

test('the Keycloak realm export holds the demo users and clients', async () => {
  const realm = JSON.parse(await readFile(join(REPO_ROOT, 'examples', 'keycloak', 'demo-realm.json'), 'utf8'));
  assert.equal(realm.realm, 'demo');
  for (const [name, u] of Object.entries(USERS)) {
    const k = realm.users.find((x) => x.username === name);
    assert.ok(k, name);
    assert.equal(k.email, u.email);
    assert.equal(k.credentials[0].value, u.password);
    assert.deepEqual(k.groups, [...u.groups]);
    assert.deepEqual(k.realmRoles, [...u.realmRoles]);
  }
  for (const [id, c] of Object.entries(CLIENTS)) {
    const k = realm.clients.find((x) => x.clientId === id);
    assert.equal(k.secret, c.secret, id);
    assert.equal(k.standardFlowEnabled, c.grantTypes.includes('authorization_code'), id);
    assert.equal(k.directAccessGrantsEnabled, c.grantTypes.includes('password'), id);
    assert.equal(k.serviceAccountsEnabled, c.grantTypes.includes('client_credentials'), id);
    assert.deepEqual(k.redirectUris, [...c.redirectUris], id);
    const groups = k.protocolMappers.find((m) => m.protocolMapper === 'oidc-group-membership-mapper');
    assert.equal(groups.config['full.path'], 'true', `${id}: full group paths, as the test bed`);
    assert.equal(groups.config['claim.name'], 'groups');
  }
  assert.deepEqual(realm.groups.map((g) => g.path), ['/admins']);
  assert.deepEqual(realm.roles.realm.map((r) => r.name), ['backendaccess', CORP.brokeredRole]);
});

test('the corp realm export holds carol and the broker client; demo brokers it as identity provider corp', async () => {
  const readRealm = async (file) => JSON.parse(await readFile(join(REPO_ROOT, 'examples', 'keycloak', file), 'utf8'));
  const corp = await readRealm('corp-realm.json');
  const demo = await readRealm('demo-realm.json');
  assert.equal(corp.realm, CORP.realm);
  const [carol] = corp.users;
  assert.equal(corp.users.length, 1);
  assert.deepEqual(
    [carol.username, carol.credentials[0].value, carol.email, carol.emailVerified, carol.firstName, carol.lastName],
    [CORP.user.username, CORP.user.password, CORP.user.email, CORP.user.emailVerified, CORP.user.givenName, CORP.user.familyName],
  );
  const client = corp.clients.find((c) => c.clientId === CORP.brokerClient.clientId);
  assert.equal(client.secret, CORP.brokerClient.secret);
  assert.equal(client.publicClient, false);
  assert.deepEqual(client.redirectUris, [...CORP.brokerClient.redirectUris]);

  const [idp] = demo.identityProviders;
  assert.equal(demo.identityProviders.length, 1);
  assert.equal(idp.alias, CORP.idpAlias);
  assert.equal(idp.providerId, 'oidc');
  assert.equal(idp.trustEmail, true);
  assert.equal(idp.config.issuer, CORP.issuer);
  for (const key of ['authorizationUrl', 'tokenUrl', 'jwksUrl', 'logoutUrl', 'userInfoUrl']) {
    assert.ok(idp.config[key].startsWith(`${CORP.issuer}/protocol/openid-connect/`), `${key}: ${idp.config[key]}`);
  }
  assert.equal(idp.config.clientId, CORP.brokerClient.clientId);
  assert.equal(idp.config.clientSecret, CORP.brokerClient.secret);
  assert.deepEqual(demo.identityProviderMappers.map((m) => [m.identityProviderAlias, m.identityProviderMapper, m.config.role]),
    [[CORP.idpAlias, 'oidc-hardcoded-role-idp-mapper', CORP.brokeredRole]]);
});

test('the compose file runs the Keycloak version the tests run, with the realm files they import', async () => {
  const compose = await readFile(join(REPO_ROOT, 'examples', 'docker-compose.yaml'), 'utf8');
  assert.match(compose, new RegExp(`image: quay\\.io/keycloak/keycloak:${KEYCLOAK_VERSION.replaceAll('.', '\\.')}\\n`));
  for (const file of ['demo-realm.json', 'corp-realm.json']) {
    assert.ok(compose.includes(`- ./keycloak/${file}:/opt/keycloak/data/import/${file}:ro\n`), file);
  }
});

test('the role-based example approves for backendaccess only, from headers it can trust', async () => {
  const alice = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
  const bob = (await passwordToken({ idpPort, username: 'bob', password: 'bob' })).access_token;
  const ok = await http(`${gateway}/payments/approve`, { headers: { authorization: `Bearer ${alice}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json, { approved: true, by: 'alice' });
  const no = await http(`${gateway}/payments/approve`, { headers: { authorization: `Bearer ${bob}` } });
  assert.equal(no.status, 403);
  assert.equal(no.json.approved, false);
  // Bob claiming the role himself changes nothing: gatehouse replaces the header.
  const spoof = await http(`${gateway}/payments/approve`, { headers: { authorization: `Bearer ${bob}`, 'x-auth-request-roles': 'backendaccess' } });
  assert.equal(spoof.status, 403);
  assert.equal((await http(`${gateway}/payments/approve`)).status, 401, 'no token never reaches the app');
});
