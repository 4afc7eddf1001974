// Real Keycloak: the pinned server distribution `make deps` unpacks into .tools/ and builds once
// (`kc.sh build`), with the realms users import (examples/keycloak/*.json) in a database `make
// deps` prepared from them (wasm-test/keycloak/prepare.mjs). Each start copies that database into
// the run directory, so tests that change the realm (keys, settings) change only their copy.
//
// One Keycloak serves a whole `make test` run: wasm-test/run-e2e.mjs starts it and passes its
// address in GATEHOUSE_KEYCLOAK_URL; startKeycloak() then hands that one out. A test file run
// alone starts its own.

import {
  cpSync, existsSync, mkdirSync, readFileSync, readdirSync,
} from 'node:fs';
import { join } from 'node:path';

import {
  REPO_ROOT, runDirectory, startProcess,
} from './processes.mjs';
import { assertPortFree, checkPort, freePort } from './ports.mjs';
import { http, waitHttp } from './http.mjs';
import { startEcho } from './echo.mjs';
import { BIG_USER } from './realm.mjs';
import { startEnvoy, waitForSignIn, waitOnAllWorkers } from './envoy.mjs';

export const KEYCLOAK_VERSION = '26.7.3';
export const KEYCLOAK_HOME = join(REPO_ROOT, '.tools', `keycloak-${KEYCLOAK_VERSION}`);
/** The database with the imported realms, made by wasm-test/keycloak/prepare.mjs. */
export const KEYCLOAK_DB = join(REPO_ROOT, '.tools', 'keycloak-db');
/**
 * The realm files imported, in the repository (the ones users import): every
 * examples/keycloak/*.json, demo-realm.json first — `demo` (gatehouse's realm) and `corp`, the
 * corporate directory `demo` brokers as identity provider `corp`. The order is only realmFile()'s:
 * `--import-realm` reads the import directory itself, and Keycloak uses the broker's URLs only at
 * sign-in, so neither realm needs the other at import.
 */
const REALM_DIR = join(REPO_ROOT, 'examples', 'keycloak');
export const REALM_FILES = readdirSync(REALM_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort((a, b) => (b === 'demo-realm.json') - (a === 'demo-realm.json') || a.localeCompare(b))
  .map((f) => join(REALM_DIR, f));
/** How long creating or deleting a realm through the admin API may take. */
const ADMIN_SLOW_MS = 60_000;
/** Keycloak's bootstrap admin, for the admin API (demo and tests only). */
export const KEYCLOAK_ADMIN = { username: 'admin', password: 'admin' };

/** Endpoint URLs of a realm on the Keycloak at `origin`. */
export function keycloakUrls(origin, realm = 'demo') {
  const issuer = `${origin}/realms/${realm}`;
  const oidc = `${issuer}/protocol/openid-connect`;
  return {
    origin,
    issuer,
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorization: `${oidc}/auth`,
    token: `${oidc}/token`,
    certs: `${oidc}/certs`,
    userinfo: `${oidc}/userinfo`,
    logout: `${oidc}/logout`,
    admin: `${origin}/admin/realms/${realm}`,
  };
}

function startOptions({ port, managementPort, db }) {
  return [
    'start', '--optimized',
    // One node: no JGroups cluster discovery (it would bind on every interface and wait for peers).
    '--cache=local',
    '--http-enabled=true', '--http-host=127.0.0.1', `--http-port=${port}`,
    `--http-management-port=${managementPort}`,
    '--hostname-strict=false',
    `--db-url=jdbc:h2:file:${join(db, 'keycloakdb')};NON_KEYWORDS=VALUE`,
  ];
}

/** Checks that `make deps` installed Keycloak and prepared its database. */
export function assertKeycloakInstalled() {
  for (const [path, what] of [[join(KEYCLOAK_HOME, 'bin', 'kc.sh'), 'the Keycloak distribution'],
    [join(KEYCLOAK_DB, 'keycloakdb.mv.db'), 'the prepared Keycloak database']]) {
    if (!existsSync(path)) throw new Error(`${what} is missing (${path}): run make deps`);
  }
}

/**
 * Starts Keycloak as a child process on free 127.0.0.1 ports.
 * @param {object} [options]
 * @param {number} [options.port] default: a free port
 * @param {string} [options.db] database directory to use as it is (default: a copy of the prepared one)
 * @param {string[]} [options.extraArgs] more `kc.sh start` options (`--import-realm` to prepare a database)
 * @param {number} [options.timeoutMs] readiness timeout
 * @param {boolean} [options.shared] hand out the run's shared Keycloak if there is one (default true)
 * @param {string} [options.hostname] a public URL (`--hostname`, with back-channel URLs on the
 *   host it is called by: `--hostname-backchannel-dynamic=true`), as the Istio install steps
 *   set it; `issuer` is then on that URL and `urls` stay the local ones
 * @returns {Promise<{pid, port, db, url, issuer, urls, logFiles, exit, stop, log, shared}>}
 */
export async function startKeycloak({
  port, db, extraArgs = [], timeoutMs = 120_000, shared = true, hostname,
} = {}) {
  const sharedUrl = process.env.GATEHOUSE_KEYCLOAK_URL;
  if (shared && sharedUrl && port === undefined && db === undefined && hostname === undefined) {
    const urls = keycloakUrls(sharedUrl);
    return {
      shared: true, port: Number(new URL(sharedUrl).port), url: sharedUrl, issuer: urls.issuer, urls,
      pid: undefined, logFiles: [], stop: async () => {}, log: () => '',
    };
  }
  if (db === undefined) assertKeycloakInstalled();
  const p = port === undefined ? await freePort() : checkPort(port, 'port');
  await assertPortFree(p, 'Keycloak port');
  const managementPort = await freePort();
  let dbDir = db;
  if (dbDir === undefined) {
    dbDir = join(runDirectory(), `keycloak-db-${p}`);
    mkdirSync(dbDir, { recursive: true });
    cpSync(KEYCLOAK_DB, dbDir, { recursive: true });
  }
  const urls = keycloakUrls(`http://127.0.0.1:${p}`);
  const issuer = hostname ? keycloakUrls(hostname).issuer : urls.issuer;
  const hostnameArgs = hostname ? [`--hostname=${hostname}`, '--hostname-backchannel-dynamic=true'] : [];
  const handle = await startProcess({
    name: `keycloak:${p}`,
    command: join(KEYCLOAK_HOME, 'bin', 'kc.sh'),
    args: [...startOptions({ port: p, managementPort, db: dbDir }), ...hostnameArgs, ...extraArgs],
    env: {
      KC_BOOTSTRAP_ADMIN_USERNAME: KEYCLOAK_ADMIN.username,
      KC_BOOTSTRAP_ADMIN_PASSWORD: KEYCLOAK_ADMIN.password,
    },
    logFile: join(runDirectory(), `keycloak-${p}.log`),
    timeoutMs,
    stopTimeoutMs: 20_000,
    killGroup: true,
    ready: () => waitHttp(urls.discovery, (r) => r.status === 200 && r.json?.issuer === issuer, 2_000),
  });
  return {
    ...handle, shared: false, port: p, db: dbDir, url: urls.origin, issuer, urls,
  };
}

/**
 * Sends `signal` to a Keycloak this test started (never the run's shared one), to its whole
 * process group — kc.sh and the java it runs: SIGSTOP hangs it (connections are accepted by the
 * kernel and never answered), SIGCONT resumes it, SIGKILL kills it (then wait for `kc.exit`).
 * Start it again on the same port and database with startKeycloak({port: kc.port, db: kc.db}).
 */
export function signalKeycloak(kc, signal) {
  if (kc.shared || !kc.pid) throw new Error('signalKeycloak: only a Keycloak started with { shared: false }');
  process.kill(-kc.pid, signal);
}

/** An access token of Keycloak's bootstrap admin (master realm, `admin-cli`). */
export async function adminToken(kc) {
  const r = await http(`${kc.url}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', ...KEYCLOAK_ADMIN }).toString(),
  });
  if (r.status !== 200 || !r.json?.access_token) throw new Error(`Keycloak admin token: ${r.status} ${r.body.slice(0, 200)}`);
  return r.json.access_token;
}

/** A call to Keycloak's admin API of a realm (`path` after /admin/realms/<realm>). */
export async function adminApi(kc, method, path, body, realm = 'demo') {
  const token = await adminToken(kc);
  const r = await http(`${keycloakUrls(kc.url, realm).admin}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status >= 300) throw new Error(`Keycloak admin ${method} ${path}: ${r.status} ${r.body.slice(0, 300)}`);
  return r.json;
}

/** A client of a realm file (its `clientId`, `secret`, ...), as users import it. */
export function realmClient(clientId, realm = 'demo') {
  const client = realmFile(realm).clients.find((c) => c.clientId === clientId);
  if (!client) throw new Error(`no client ${clientId} in realm file ${realm}`);
  return client;
}

/**
 * Sets attributes of a client through the admin API, e.g. `{'access.token.lifespan': '6'}` for
 * that client's own access-token lifetime (in a Keycloak or realm copy of a test's own).
 */
export async function setClientAttributes(kc, clientId, attributes, realm = 'demo') {
  const [client] = await adminApi(kc, 'GET', `/clients?clientId=${encodeURIComponent(clientId)}`, undefined, realm);
  if (!client) throw new Error(`Keycloak: no client ${clientId} in realm ${realm}`);
  await adminApi(kc, 'PUT', `/clients/${client.id}`, { ...client, attributes: { ...client.attributes, ...attributes } }, realm);
}

/** The realm files' contents, for what tests expect (users, clients, secrets). */
export function realmFile(name = 'demo') {
  const file = REALM_FILES.find((f) => JSON.parse(readFileSync(f, 'utf8')).realm === name);
  if (!file) throw new Error(`no realm file for realm ${name}`);
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** The URL settings of an OpenID Connect identity provider (a broker) that name its server. */
const BROKER_URL_KEYS = ['issuer', 'authorizationUrl', 'tokenUrl', 'jwksUrl', 'logoutUrl', 'userInfoUrl', 'tokenIntrospectionUrl'];

/**
 * Points identity provider `alias` of `realm` at the Keycloak `kc` itself: the realm files name
 * the brokered realm at http://127.0.0.1:8180 (`make demo`, docker-compose), test Keycloaks run on
 * free ports. Rewrites, through the admin API, the origin of the provider's issuer in each of its
 * URL settings (BROKER_URL_KEYS) to `kc.url`; everything else stays (the client secret too: the
 * admin API shows it masked and keeps the stored one when given the mask back).
 * Returns an async function that puts the provider back as it was — call it in `after`, since the
 * run's Keycloak is shared by every test file.
 */
export async function pointBrokerAt(kc, alias, realm = 'demo') {
  const path = `/identity-provider/instances/${encodeURIComponent(alias)}`;
  const before = await adminApi(kc, 'GET', path, undefined, realm);
  const from = new URL(before.config.issuer).origin;
  const config = { ...before.config };
  for (const key of BROKER_URL_KEYS) {
    if (config[key] === from || config[key]?.startsWith(`${from}/`)) config[key] = kc.url + config[key].slice(from.length);
  }
  await adminApi(kc, 'PUT', path, { ...before, config }, realm);
  return async () => { await adminApi(kc, 'PUT', path, before, realm); };
}

/**
 * Deletes the users of `realm` that were brokered from identity provider `alias` (those linked to
 * it, e.g. carol of realm corp signed in to demo through `corp`); returns their usernames.
 */
export async function deleteBrokeredUsers(kc, alias, realm = 'demo') {
  const users = await adminApi(kc, 'GET', `/users?idpAlias=${encodeURIComponent(alias)}&briefRepresentation=true&max=1000`, undefined, realm);
  for (const u of users) {
    // eslint-disable-next-line no-await-in-loop
    await adminApi(kc, 'DELETE', `/users/${u.id}`, undefined, realm);
  }
  return users.map((u) => u.username);
}

/**
 * A gateway in front of Keycloak: the echo service and an Envoy with gatehouse (`wasmPath`, two
 * workers) whose `idp` cluster reaches `kc`, ready once gatehouse has what it needs from
 * Keycloak: page navigations go to its login (with a `session`), or requests without a token get
 * 401 rather than 503 (keys loaded; bearer tokens only). `extraArgs` go to Envoy's command line
 * (e.g. `['--file-flush-interval-msec', '200']` to have its logs on disk in time for a failure).
 */
export async function startGatewayFor(kc, {
  wasmPath, filterConfig, concurrency = 2, extraArgs = [],
}) {
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const envoy = await startEnvoy({
    idpPort: kc.port, echoPort, wasmPath, concurrency, filterConfig, extraArgs,
  });
  if (filterConfig.session) {
    await waitForSignIn(envoy.url);
  } else {
    // A request without a token gets 401 before the keys arrive; a malformed token gets 503
    // until they have (gatehouse cannot tell yet) and 401 after.
    await waitOnAllWorkers(`${envoy.url}/echo`, { authorization: 'Bearer a.b.c' }, 401, 30_000, 'holding the keys');
  }
  return envoy;
}

/**
 * A copy of a realm file's realm under another name, made through the admin API (a test that
 * changes keys or settings does it there, not in the realm other test files share), with
 * `overrides` of its top-level settings. Returns its URLs.
 */
export async function createRealmCopy(kc, name, overrides = {}, from = 'demo') {
  await deleteRealm(kc, name);
  const token = await adminToken(kc);
  const r = await http(`${kc.url}/admin/realms`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...realmFile(from), ...overrides, realm: name }),
    // Creating a realm (its keys, flows, clients; 300 groups for the big user) takes Keycloak
    // seconds, more on a busy machine.
    timeoutMs: ADMIN_SLOW_MS,
  });
  if (r.status !== 201) throw new Error(`Keycloak: creating realm ${name}: ${r.status} ${r.body.slice(0, 300)}`);
  return keycloakUrls(kc.url, name);
}

/** Removes a realm if it exists. */
export async function deleteRealm(kc, name) {
  const token = await adminToken(kc);
  const r = await http(`${kc.url}/admin/realms/${encodeURIComponent(name)}`, {
    method: 'DELETE', headers: { authorization: `Bearer ${token}` }, timeoutMs: ADMIN_SLOW_MS,
  });
  if (r.status !== 204 && r.status !== 404) throw new Error(`Keycloak: deleting realm ${name}: ${r.status}`);
}

/**
 * A copy of the demo realm with carol added (lib/realm.mjs BIG_USER): 300 groups of about 40 bytes
 * each under `/teams`, so her tokens are large and her session needs chunked cookies.
 */
export async function createRealmWithBigUser(kc, name) {
  const demo = realmFile('demo');
  const teams = {
    name: 'teams',
    path: '/teams',
    subGroups: BIG_USER.groups.map((path) => ({ name: path.split('/')[2], path })),
  };
  const carol = {
    username: BIG_USER.username, enabled: true, email: BIG_USER.email, emailVerified: true,
    firstName: BIG_USER.givenName, lastName: BIG_USER.familyName,
    credentials: [{ type: 'password', value: BIG_USER.password, temporary: false }],
    groups: [...BIG_USER.groups], realmRoles: [...BIG_USER.realmRoles],
  };
  return createRealmCopy(kc, name, { groups: [...demo.groups, teams], users: [...demo.users, carol] });
}
