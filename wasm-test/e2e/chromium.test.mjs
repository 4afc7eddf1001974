// Browser single sign-on in a real browser: headless Chromium (Debian's `chromium`, driven by
// playwright-core) through real Envoy with gatehouse, real Keycloak (its own login and logout pages) and the echo
// upstream. What the scripted client in browser.test.mjs cannot show: that a browser's own cookie,
// redirect, SameSite and form handling get through the login, the callback and the sign-out.
//
// Each test runs in a fresh browser context (its own cookies), in a browser started with a fresh
// temporary profile. On a failure the message carries the browser's HTTP exchanges and the tail
// of Envoy's log, and the harness keeps the run's logs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';

import { chromium } from 'playwright-core';

import {
  freePort, startEcho, startEnvoy, stopAll, http, keepLogs, noteSecret,
} from '../lib/harness.mjs';
import {
  startKeycloak, createRealmWithBigUser, deleteRealm,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-browser';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const COOKIE_KEY = 'chromium-e2e-cookie-key-0123456789abcdef';

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const ACTION_TIMEOUT_MS = 15_000; // every Playwright wait and navigation
const TEST_TIMEOUT_MS = 60_000;

let kc;
let idpPort;
let gateway;
let envoy;
let browser;

const HTML = { accept: 'text/html,application/xhtml+xml' };

const onIdp = (url) => new URL(url).port === String(idpPort);
const onGateway = (url) => new URL(url).origin === gateway;

/** A URL for failure messages: query parameter names only (codes and tokens stay out of logs). */
function redact(url) {
  const u = new URL(url);
  const names = [...u.searchParams.keys()];
  return `${u.origin}${u.pathname}${names.length ? `?${names.map((n) => `${n}=…`).join('&')}` : ''}`;
}

/** A fresh browser context whose HTTP exchanges are recorded for failure messages. */
async function newContext() {
  const context = await browser.newContext();
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
  const exchanges = [];
  context.on('response', async (res) => {
    const req = res.request();
    let cookies = '';
    try {
      const setCookie = (await res.headersArray()).filter((h) => h.name.toLowerCase() === 'set-cookie');
      cookies = setCookie.map((h) => h.value.split('=')[0]).join(',');
    } catch { /* response gone */ }
    const location = res.headers().location;
    exchanges.push(`${req.method()} ${redact(req.url())} -> ${res.status()}`
      + `${location ? ` location=${redact(new URL(location, req.url()).href)}` : ''}`
      + `${cookies ? ` set-cookie=${cookies}` : ''}`);
  });
  context.on('requestfailed', (req) => {
    exchanges.push(`${req.method()} ${redact(req.url())} FAILED ${req.failure()?.errorText ?? ''}`);
  });
  const page = await context.newPage();
  return { context, page, exchanges };
}

/**
 * Run `fn(ctx)` in a fresh context; on failure add the exchanges and Envoy's log to the error and
 * keep the run's logs (not for a known failure: `knownFailure`).
 */
async function inBrowser(fn, { knownFailure = false } = {}) {
  const ctx = await newContext();
  try {
    await fn(ctx);
  } catch (err) {
    if (!knownFailure) keepLogs();
    let url = '';
    try { url = redact(ctx.page.url()); } catch { /* closed */ }
    await new Promise((r) => { setTimeout(r, 500); }); // Envoy flushes its logs every 200 ms here
    const envoyLog = envoy.log().split('\n')
      .filter((l) => /^-----|^access:|\]\[wasm\]|\]\[(warning|error|critical)\]/.test(l))
      .slice(-80);
    err.message += `\n--- page: ${url}\n--- browser HTTP exchanges:\n  ${ctx.exchanges.join('\n  ')}`
      + `\n--- Envoy log (access log and wasm lines, tail):\n${envoyLog.join('\n')}`;
    throw err;
  } finally {
    // The browser's cookies never went through http(): note them for the log scan of stopAll().
    for (const c of await ctx.context.cookies().catch(() => [])) noteSecret(c.value, `browser cookie ${c.name}`);
    await ctx.context.close().catch(() => {});
  }
}

/** Wait until the page is the IdP's login form. */
async function expectLoginPage(page) {
  await page.waitForSelector('#kc-form-login');
  assert.ok(onIdp(page.url()), `expected the IdP's login page, at ${redact(page.url())}`);
  for (const sel of ['#username', '#password', '#kc-login']) assert.ok(await page.isVisible(sel), sel);
}

/**
 * Type the credentials into the IdP's form, submit, and wait for the next page the gateway shows
 * (the callback's redirect target, or the callback itself when it fails).
 */
async function signIn(page, username, password) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([
    page.waitForURL((u) => onGateway(u.href), { waitUntil: 'load' }),
    page.click('#kc-login'),
  ]);
}

/** Assert that the page is `path` on the gateway (not a failed callback). */
async function expectGatewayPage(page, path) {
  const u = new URL(page.url());
  if (u.pathname !== path) {
    const text = await page.evaluate(() => document.body?.innerText ?? '').catch(() => '');
    assert.fail(`expected ${path} on the gateway, got ${redact(u.href)}: ${text.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
}

/** gatehouse's session cookie, or one of its chunks (`_gatehouse=chunks.N`, `_gatehouse.0`...). */
const isSessionCookie = (name) => name === '_gatehouse' || /^_gatehouse\.\d+$/.test(name);

/** The echo's JSON answer as shown by the browser (the document's text). */
async function echoJson(page) {
  const text = await page.evaluate(() => (document.querySelector('pre') ?? document.body).textContent);
  return { text, json: JSON.parse(text) };
}

async function cookieNames(context) {
  return (await context.cookies(gateway)).map((c) => c.name);
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium (make deps)`);
  // Real Keycloak, in a copy of the demo realm with carol added (her 300 groups make the session
  // big enough to need chunked cookies); alice and bob are the realm file's.
  kc = await startKeycloak();
  idpPort = kc.port;
  const { issuer } = await createRealmWithBigUser(kc, REALM);
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  envoy = await startEnvoy({
    idpPort,
    echoPort,
    wasmPath: WASM,
    concurrency: 2,
    extraArgs: ['--file-flush-interval-msec', '200'], // logs on disk in time for a failure message
    filterConfig: {
      provider: {
        issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'],
      },
      session: { keys: [COOKIE_KEY], secure: false },
      publicPaths: [{ prefix: '/public/' }, { exact: '/healthz' }],
      rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
    },
  });
  gateway = envoy.url;
  // Ready when discovery is loaded: a page navigation is sent to the IdP.
  const deadline = Date.now() + 20_000;
  for (;;) {
    // eslint-disable-next-line no-await-in-loop
    const r = await http(`${gateway}/echo`, { headers: HTML });
    if (r.status === 302) break;
    if (Date.now() > deadline) throw new Error(`gatehouse not ready: ${r.status} ${r.body.slice(0, 300)}`);
    // eslint-disable-next-line no-await-in-loop
    await new Promise((res) => { setTimeout(res, 100); });
  }
  // Playwright makes (and removes) a fresh temporary profile directory for a launched browser.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, `--explicitly-allowed-ports=${idpPort},${envoy.listenPort}`],
    timeout: 30_000,
  });
}, { timeout: 120_000 });

after(async () => {
  if (kc) await deleteRealm(kc, REALM);
  try {
    if (browser) await Promise.race([browser.close(), new Promise((r) => { setTimeout(r, 10_000); })]);
  } finally {
    await stopAll();
  }
}, { timeout: 60_000 });

test('alice signs in at the IdP, sees the echo with her identity, signs out, and must sign in again', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ context, page }) => {
  // An unauthenticated page navigation goes to the IdP's login form.
  await page.goto(`${gateway}/echo`);
  await expectLoginPage(page);
  const authorize = new URL(page.url());
  assert.equal(authorize.pathname.startsWith(`/realms/${REALM}/`), true, authorize.pathname);

  await signIn(page, 'alice', 'alice');
  await expectGatewayPage(page, '/echo');
  const { text, json } = await echoJson(page);
  assert.ok(text.includes('"x-auth-request-email":"alice@example.com"'), text);
  assert.equal(json.path, '/echo');
  assert.equal(json.headers['x-auth-request-preferred-username'], 'alice');
  assert.equal(json.headers['x-auth-request-groups'], '/admins');
  assert.ok(json.headers['x-auth-request-roles'].split(',').includes('backendaccess'), json.headers['x-auth-request-roles']);
  assert.ok(!(json.headers.cookie ?? '').includes('_gatehouse'), 'the upstream does not get the session cookie');
  assert.ok((await cookieNames(context)).some(isSessionCookie), String(await cookieNames(context)));

  // The session cookie carries her to other pages without the IdP.
  const admin = await page.goto(`${gateway}/admin/`);
  assert.equal(admin.status(), 200);
  assert.equal(JSON.parse(await admin.text()).headers['x-auth-request-email'], 'alice@example.com');

  // Sign-out: gatehouse's cookie goes, the IdP's logout ends the IdP session.
  await page.goto(`${gateway}/oauth2/sign_out`);
  await page.waitForURL((u) => onIdp(u.href));
  const title = page.locator('#kc-page-title');
  await title.filter({ hasText: /Logging out|You are logged out/ }).waitFor();
  if (await page.isVisible('#kc-logout')) {
    await Promise.all([page.waitForLoadState('load'), page.click('#kc-logout')]);
  }
  await title.filter({ hasText: 'You are logged out' }).waitFor();
  assert.ok(onIdp(page.url()), redact(page.url()));
  const left = await cookieNames(context);
  assert.ok(!left.some(isSessionCookie), `session cookies left: ${left}`);

  // Signed out for real: the next page navigation asks for the password again.
  await page.goto(`${gateway}/echo`);
  await expectLoginPage(page);
}));

test('bob is signed in but gets the 403 "Access denied" page on /admin/', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ page }) => {
  await page.goto(`${gateway}/admin/`);
  await expectLoginPage(page);
  await signIn(page, 'bob', 'bob');
  await expectGatewayPage(page, '/admin/');
  await page.waitForSelector('h1');
  assert.equal(await page.textContent('h1'), 'Access denied');
  assert.equal(await page.title(), 'Access denied');
  const again = await page.reload();
  assert.equal(again.status(), 403);
  // Elsewhere he is let through with his identity.
  await page.goto(`${gateway}/echo`);
  const { json } = await echoJson(page);
  assert.equal(json.headers['x-auth-request-email'], 'bob@example.com');
  assert.equal(json.headers['x-auth-request-groups'], undefined);
}));

test('on the 403 page bob signs in as someone else: sign-out, Keycloak\'s login, and alice gets the page', { timeout: TEST_TIMEOUT_MS }, () => inBrowser(async ({ context, page }) => {
  await page.goto(`${gateway}/admin/reports`);
  await expectLoginPage(page);
  await signIn(page, 'bob', 'bob');
  await expectGatewayPage(page, '/admin/reports');
  assert.equal(await page.textContent('.status'), '403');
  assert.match(await page.textContent('main'), /this page is for members of a group your account is not in/);
  assert.match(await page.textContent('.ref'), /^Request ID [0-9a-f-]{36}$/, 'Envoy\'s request id, for support');
  // The page is styled (its inline style applies under its own Content-Security-Policy).
  const radius = await page.evaluate(() => getComputedStyle(document.querySelector('main')).borderRadius);
  assert.equal(radius, '14px');
  // The button signs out of gatehouse and of Keycloak (this gateway sets no postLogoutRedirectUri,
  // so Keycloak shows its own page; the demo's goes back to the app, which asks for a login).
  await page.click('text=Sign in as someone else');
  await page.locator('#kc-page-title').filter({ hasText: /You are logged out/ }).waitFor();
  assert.ok(!(await cookieNames(context)).some(isSessionCookie), 'bob\'s session cookie is gone');
  await page.goto(`${gateway}/admin/reports`);
  await expectLoginPage(page); // Keycloak's session is over too: the password is asked for
  await signIn(page, 'alice', 'alice');
  await expectGatewayPage(page, '/admin/reports');
  const { json } = await echoJson(page);
  assert.equal(json.headers['x-auth-request-preferred-username'], 'alice');
}));

// carol (added to this file's realm copy) is in 300 groups: her tokens are about 17 KB each, so her session
// only fits in a browser as several cookies of at most 4 KB (chunks).
const CAROL_TODO = undefined;
test("carol's large session is stored in chunked cookies the browser sends back", {
  timeout: TEST_TIMEOUT_MS,
  todo: CAROL_TODO,
}, () => inBrowser(async ({ context, page }) => {
  await page.goto(`${gateway}/echo`);
  await expectLoginPage(page);
  await signIn(page, 'carol', 'carol');
  await expectGatewayPage(page, '/echo');
  const { json } = await echoJson(page);
  assert.equal(json.headers['x-auth-request-email'], 'carol@example.com');
  const groups = json.headers['x-auth-request-groups'].split(',');
  assert.equal(groups.length, 300);
  assert.equal(groups[0], '/teams/team-0001-platform-engineering');

  const session = (await context.cookies(gateway)).filter((c) => isSessionCookie(c.name));
  assert.ok(session.length > 2, `chunked: ${session.map((c) => c.name)}`);
  assert.match(session.find((c) => c.name === '_gatehouse')?.value ?? '', /^chunks\.\d+$/);
  for (const c of session) assert.ok(c.name.length + c.value.length <= 4096, `${c.name}: ${c.value.length} bytes`);

  // The browser sends every chunk back: the next page needs no IdP.
  const again = await page.goto(`${gateway}/echo?again=1`);
  assert.equal(again.status(), 200);
  assert.equal(JSON.parse(await again.text()).headers['x-auth-request-preferred-username'], 'carol');

  // Sign-out removes every chunk.
  await page.goto(`${gateway}/oauth2/sign_out`);
  await page.waitForURL((u) => onIdp(u.href));
  const left = (await cookieNames(context)).filter(isSessionCookie);
  assert.deepEqual(left, []);
}, { knownFailure: Boolean(CAROL_TODO) }));
