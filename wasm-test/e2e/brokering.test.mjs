// Identity brokering (seed 000, issue 14): realm `demo` brokers realm `corp` — the corporate
// directory, standing in for Entra ID — over OpenID Connect as identity provider `corp`
// (examples/keycloak/corp-realm.json and demo-realm.json). In headless Chromium, through real
// Envoy with gatehouse and real Keycloak: `login.extraParams.kc_idp_hint = "corp"` sends the
// browser from the gateway straight to corp's login page; carol signs in there and comes back as a
// user of `demo`, created on her first sign-in without any form, with the realm role `corp-user`
// the provider's hardcoded-role mapper grants — which gatehouse passes on and enforces.
//
// The realm files name corp at http://127.0.0.1:8180; this file points the provider at the test
// Keycloak's port (pointBrokerAt) and puts it back in `after`, where it also deletes the users
// brokered into `demo`: the run's Keycloak is shared by every test file.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';

import { chromium } from 'playwright-core';

import {
  stopAll, http, keepLogs, noteSecret, passwordToken,
} from '../lib/harness.mjs';
import {
  startKeycloak, startGatewayFor, adminApi, realmFile, pointBrokerAt, deleteBrokeredUsers,
} from '../lib/keycloak.mjs';
import { CORP } from '../lib/realm.mjs';

const WASM = process.env.WASM;
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const ACTION_TIMEOUT_MS = 15_000;
const TEST_TIMEOUT_MS = 60_000;
const HTML = { accept: 'text/html,application/xhtml+xml' };

const CAROL = CORP.user;
const secretOf = (clientId) => realmFile('demo').clients.find((c) => c.clientId === clientId).secret;

let kc;
let restoreBroker;
let hinted; // gateway with login.extraParams.kc_idp_hint = corp
let plain; // the same configuration without it
let browser;

/** A URL for failure messages: query parameter names only (codes and tokens stay out of logs). */
function redact(url) {
  const u = new URL(url);
  const names = [...u.searchParams.keys()];
  return `${u.origin}${u.pathname}${names.length ? `?${names.map((n) => `${n}=…`).join('&')}` : ''}`;
}

const onKeycloak = (url) => new URL(url).origin === kc.url;
const realmOf = (url) => (onKeycloak(url) ? new URL(url).pathname.match(/^\/realms\/([^/]+)\//)?.[1] : undefined);
const isSessionCookie = (name) => name === '_gatehouse' || /^_gatehouse\.\d+$/.test(name);

function gatehouseConfig(login) {
  return {
    provider: {
      issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: secretOf('gateway'), audiences: ['gateway', 'api'],
    },
    session: { keys: ['e2e-brokering-cookie-key-0123456789abcdef'], secure: false },
    ...(login ? { login } : {}),
    // The default claimHeaders pass sub, email, preferred_username, groups and the roles
    // (realm_access.roles, resource_access.gateway.roles) on as x-auth-request-*.
    rules: [{ name: 'corp-only', match: { paths: [{ prefix: '/corp/' }] }, require: { roles: ['corp-user'] } }],
  };
}

/**
 * Run `fn(ctx)` in a fresh browser context; `ctx.documents` lists the HTML documents the browser
 * was served (`{status, url, realm}`, realm when on Keycloak). A failure gets the browser's
 * exchanges added and keeps the run's logs.
 */
async function inBrowser(fn) {
  const context = await browser.newContext();
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
  const exchanges = [];
  const documents = [];
  context.on('response', (res) => {
    const req = res.request();
    const location = res.headers().location;
    exchanges.push(`${req.method()} ${redact(req.url())} -> ${res.status()}`
      + `${location ? ` location=${redact(new URL(location, req.url()).href)}` : ''}`);
    if (req.resourceType() === 'document' && res.status() < 300) {
      documents.push({ status: res.status(), url: req.url(), realm: realmOf(req.url()) });
    }
  });
  const page = await context.newPage();
  try {
    await fn({ context, page, documents });
  } catch (err) {
    keepLogs();
    let url = '';
    try { url = redact(page.url()); } catch { /* closed */ }
    err.message += `\n--- page: ${url}\n--- browser HTTP exchanges:\n  ${exchanges.join('\n  ')}`;
    throw err;
  } finally {
    for (const c of await context.cookies().catch(() => [])) noteSecret(c.value, `browser cookie ${c.name}`);
    await context.close().catch(() => {});
  }
}

/** Wait for a Keycloak login form and check it is realm `realm`'s. */
async function expectLoginPage(page, realm) {
  await page.waitForSelector('#kc-form-login');
  assert.equal(realmOf(page.url()), realm, `expected realm ${realm}'s login page, at ${redact(page.url())}`);
  for (const sel of ['#username', '#password', '#kc-login']) assert.ok(await page.isVisible(sel), sel);
}

/**
 * Fill and submit the login form, and check that the browser is back on `gateway` — not on a
 * page Keycloak shows after the login (a profile review, an account-linking question, an error).
 */
async function signIn(page, gateway, username, password) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([
    page.waitForURL((u) => u.origin === gateway || u.pathname.includes('/login-actions/'), { waitUntil: 'load' }),
    page.click('#kc-login'),
  ]);
  if (new URL(page.url()).origin !== gateway) {
    const text = await page.evaluate(() => document.body?.innerText ?? '').catch(() => '');
    assert.fail(`expected the gateway after signing in, Keycloak shows ${redact(page.url())}: ${text.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
}

/** The echo's JSON answer as the browser shows it. */
async function echoJson(page) {
  return JSON.parse(await page.evaluate(() => (document.querySelector('pre') ?? document.body).textContent));
}

async function demoUser(username) {
  const users = await adminApi(kc, 'GET', `/users?username=${encodeURIComponent(username)}&exact=true`);
  return users[0];
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium (make deps)`);
  kc = await startKeycloak();
  // A run's Keycloak is shared: start from a demo realm without brokered users.
  await deleteBrokeredUsers(kc, 'corp');
  restoreBroker = await pointBrokerAt(kc, 'corp');
  const extraArgs = ['--file-flush-interval-msec', '200'];
  hinted = (await startGatewayFor(kc, { wasmPath: WASM, extraArgs, filterConfig: gatehouseConfig({ extraParams: { kc_idp_hint: 'corp' } }) })).url;
  plain = (await startGatewayFor(kc, { wasmPath: WASM, extraArgs, filterConfig: gatehouseConfig() })).url;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, `--explicitly-allowed-ports=${[kc.port, new URL(hinted).port, new URL(plain).port].join(',')}`],
    timeout: 30_000,
  });
}, { timeout: 120_000 });

after(async () => {
  try {
    // Leave the shared Keycloak as this file found it: the provider's URLs back to the realm
    // file's, no brokered user in demo (carol), no session of carol's in corp.
    if (restoreBroker) await restoreBroker();
    if (kc) {
      await deleteBrokeredUsers(kc, 'corp');
      const [corpCarol] = await adminApi(kc, 'GET', '/users?username=carol&exact=true', undefined, 'corp');
      if (corpCarol) await adminApi(kc, 'POST', `/users/${corpCarol.id}/logout`, undefined, 'corp');
    }
  } finally {
    try {
      if (browser) await Promise.race([browser.close(), new Promise((r) => { setTimeout(r, 10_000); })]);
    } finally {
      await stopAll();
    }
  }
}, { timeout: 60_000 });

test('Keycloak has the broker as the realm files say, and its first broker login reviews a profile only when something is missing', async () => {
  // (examples.test.mjs checks the files themselves against lib/realm.mjs CORP.)
  const idp = await adminApi(kc, 'GET', `/identity-provider/instances/${CORP.idpAlias}`);
  assert.equal(idp.providerId, 'oidc');
  assert.equal(idp.enabled, true);
  assert.equal(idp.trustEmail, true);
  assert.equal(idp.config.issuer, `${kc.url}/realms/${CORP.realm}`, 'pointed at this Keycloak (pointBrokerAt)');
  assert.equal(idp.config.tokenUrl, `${kc.url}/realms/${CORP.realm}/protocol/openid-connect/token`);
  assert.equal(idp.config.clientId, CORP.brokerClient.clientId);
  const mappers = await adminApi(kc, 'GET', `/identity-provider/instances/${CORP.idpAlias}/mappers`);
  assert.deepEqual(mappers.map((m) => [m.identityProviderMapper, m.config.role]), [['oidc-hardcoded-role-idp-mapper', CORP.brokeredRole]]);
  // No profile review for a complete profile: the provider uses Keycloak's built-in "first broker
  // login" flow, whose "Review Profile" step shows its form only when the brokered profile lacks
  // a required attribute ("missing", Keycloak's default); carol's corp profile has them all.
  assert.equal(idp.firstBrokerLoginFlowAlias, 'first broker login');
  const steps = await adminApi(kc, 'GET', `/authentication/flows/${encodeURIComponent('first broker login')}/executions`);
  const review = steps.find((step) => step.providerId === 'idp-review-profile');
  const config = await adminApi(kc, 'GET', `/authentication/config/${review.authenticationConfig}`);
  assert.equal(config.config['update.profile.on.first.login'], 'missing');
});

test('the gateway asks demo for a login with kc_idp_hint=corp', async () => {
  const r = await http(`${hinted}/echo`, { headers: HTML });
  assert.equal(r.status, 302);
  const auth = new URL(r.headers.location);
  assert.equal(auth.origin + auth.pathname, kc.urls.authorization, 'the authorization request goes to realm demo');
  assert.equal(auth.searchParams.get('kc_idp_hint'), 'corp');
  assert.equal(auth.searchParams.get('client_id'), 'gateway');
  // Without the hint, the same request has none.
  const p = await http(`${plain}/echo`, { headers: HTML });
  assert.equal(p.status, 302);
  assert.equal(new URL(p.headers.location).searchParams.get('kc_idp_hint'), null);
});

test('with kc_idp_hint=corp the browser goes straight to corp\'s login; carol signs in there, no profile form, and the upstream sees her as demo\'s corp-user', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ context, page, documents }) => {
  assert.equal(await demoUser('carol'), undefined, 'carol is not a user of demo before her first sign-in');
  await page.goto(`${hinted}/echo?via=corp`);
  await expectLoginPage(page, 'corp');
  assert.match(await page.textContent('body'), /Corp directory/, 'corp\'s own page (its display name)');
  assert.equal(documents.filter((d) => d.realm === 'demo').length, 0, 'no page of realm demo was shown before corp\'s login');

  const before = documents.length;
  await signIn(page, hinted, 'carol', 'carol');
  const shown = documents.slice(before);
  assert.deepEqual(shown.filter((d) => d.realm), [], 'no Keycloak page (no profile review, no account linking) after corp\'s login');
  assert.equal(new URL(page.url()).pathname, '/echo');
  const echo = await echoJson(page);
  assert.equal(echo.path, '/echo?via=corp');
  const h = echo.headers;
  assert.equal(h['x-auth-request-email'], 'carol@corp.example');
  assert.equal(h['x-auth-request-preferred-username'], 'carol');
  const roles = h['x-auth-request-roles'].split(',');
  assert.ok(roles.includes('corp-user'), h['x-auth-request-roles']);
  assert.ok(!roles.includes('backendaccess'), h['x-auth-request-roles']);
  assert.ok((await context.cookies(hinted)).some((c) => isSessionCookie(c.name)), 'gatehouse session cookie set');

  // She is now a user of demo (not corp's user): created on this first sign-in from corp's
  // profile (email trusted), linked to her corp account, with the mapper's role, and nothing left to do.
  const user = await demoUser('carol');
  assert.ok(user, 'carol was created in demo');
  assert.equal(h['x-auth-request-user'], user.id, 'the sub is demo\'s user id');
  const [corpCarol] = await adminApi(kc, 'GET', '/users?username=carol&exact=true', undefined, 'corp');
  assert.notEqual(user.id, corpCarol.id);
  assert.equal(user.email, 'carol@corp.example');
  assert.equal(user.emailVerified, true);
  assert.equal(user.firstName, CAROL.givenName);
  assert.equal(user.lastName, CAROL.familyName);
  assert.deepEqual(user.requiredActions, []);
  const links = await adminApi(kc, 'GET', `/users/${user.id}/federated-identity`);
  assert.deepEqual(links.map((l) => [l.identityProvider, l.userId, l.userName]), [['corp', corpCarol.id, 'carol']]);
  const realmRoles = (await adminApi(kc, 'GET', `/users/${user.id}/role-mappings/realm`)).map((r) => r.name);
  assert.ok(realmRoles.includes('corp-user'), realmRoles);

  // The rule requiring corp-user lets her in.
  const corpPage = await page.goto(`${hinted}/corp/reports`);
  assert.equal(corpPage.status(), 200);
  assert.equal(JSON.parse(await corpPage.text()).headers['x-auth-request-email'], 'carol@corp.example');
}));

test('without kc_idp_hint the browser gets demo\'s own login page with a corp button, which leads to corp\'s login', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ page }) => {
  await page.goto(`${plain}/corp/reports`);
  await expectLoginPage(page, 'demo');
  const button = page.locator('a#social-corp');
  assert.ok(await button.isVisible(), 'the corp identity provider is offered');
  assert.equal((await button.textContent()).trim(), realmFile('demo').identityProviders[0].displayName);
  await Promise.all([page.waitForURL((u) => realmOf(u.href) === 'corp'), button.click()]);
  await expectLoginPage(page, 'corp');
  // carol again (demo knows her from the test before, or creates her now): in through the button too.
  await signIn(page, plain, 'carol', 'carol');
  assert.equal(new URL(page.url()).pathname, '/corp/reports');
  const echo = await echoJson(page);
  assert.equal(echo.headers['x-auth-request-email'], 'carol@corp.example');
  assert.ok(echo.headers['x-auth-request-roles'].split(',').includes('corp-user'), echo.headers['x-auth-request-roles']);
}));

test('a wrong corp password stays on corp\'s login page with its error: no gatehouse session', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ context, page }) => {
  await page.goto(`${hinted}/echo`);
  await expectLoginPage(page, 'corp');
  await page.fill('#username', 'carol');
  await page.fill('#password', 'not-carols');
  await Promise.all([page.waitForLoadState('load'), page.click('#kc-login')]);
  // Keycloak 26's login theme (keycloak.v2) shows it under the username field.
  await page.waitForSelector('#input-error-username');
  assert.match(await page.textContent('#input-error-username'), /Invalid username or password/);
  await expectLoginPage(page, 'corp');
  const names = (await context.cookies(hinted)).map((c) => c.name);
  assert.ok(!names.some(isSessionCookie), `no session cookie: ${names}`);
  // Still signed out at the gateway: the next page goes to corp's login again.
  await page.goto(`${hinted}/echo`);
  await expectLoginPage(page, 'corp');
}));

test('the corp-user rule refuses alice (demo\'s own user) with 403, in the browser and with her bearer token', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ page }) => {
  await page.goto(`${plain}/corp/reports`);
  await expectLoginPage(page, 'demo');
  await signIn(page, plain, 'alice', 'alice');
  assert.equal(new URL(page.url()).pathname, '/corp/reports');
  await page.waitForSelector('h1');
  assert.equal(await page.textContent('h1'), 'Access denied');
  assert.equal((await page.reload()).status(), 403);
  const echo = await page.goto(`${plain}/echo`);
  assert.equal(echo.status(), 200, 'elsewhere she is let in');
  assert.ok(!JSON.parse(await echo.text()).headers['x-auth-request-roles'].split(',').includes('corp-user'));

  const { access_token: token } = await passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice' });
  const r = await http(`${hinted}/corp/reports`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 403);
  assert.deepEqual(r.json, { error: 'access_denied', reason: 'role_required', rule: 'corp-only' });
}));

test('carol signing out at the gateway ends her demo and corp sessions: the next page asks for her corp password again', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ context, page }) => {
  // The tests before left carol signed in (in other browsers): end those sessions first, so that
  // the sessions below are this browser's.
  const [corpCarol] = await adminApi(kc, 'GET', '/users?username=carol&exact=true', undefined, 'corp');
  await adminApi(kc, 'POST', `/users/${corpCarol.id}/logout`, undefined, 'corp');
  const known = await demoUser('carol');
  if (known) await adminApi(kc, 'POST', `/users/${known.id}/logout`);

  await page.goto(`${hinted}/echo`);
  await expectLoginPage(page, 'corp');
  await signIn(page, hinted, 'carol', 'carol');
  assert.equal((await echoJson(page)).headers['x-auth-request-email'], 'carol@corp.example');
  const user = await demoUser('carol');
  assert.equal((await adminApi(kc, 'GET', `/users/${user.id}/sessions`)).length, 1, 'a demo session');
  assert.equal((await adminApi(kc, 'GET', `/users/${corpCarol.id}/sessions`, undefined, 'corp')).length, 1, 'a corp session');

  await page.goto(`${hinted}/oauth2/sign_out`);
  const title = page.locator('#kc-page-title');
  await title.filter({ hasText: /Logging out|You are logged out/ }).waitFor();
  if (await page.isVisible('#kc-logout')) {
    await Promise.all([page.waitForLoadState('load'), page.click('#kc-logout')]);
  }
  await title.filter({ hasText: 'You are logged out' }).waitFor();
  const names = (await context.cookies(hinted)).map((c) => c.name);
  assert.ok(!names.some(isSessionCookie), `session cookies left: ${names}`);
  assert.deepEqual(await adminApi(kc, 'GET', `/users/${user.id}/sessions`), [], 'demo session ended');
  assert.deepEqual(await adminApi(kc, 'GET', `/users/${corpCarol.id}/sessions`, undefined, 'corp'), [], 'corp session ended (broker logout)');

  await page.goto(`${hinted}/echo`);
  await expectLoginPage(page, 'corp');
}));
