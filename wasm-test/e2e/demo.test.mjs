// `make demo` as a newcomer runs it: demo.mjs on its fixed ports (gateway 8080, Keycloak 8180,
// echo 8081, Envoy admin 9901) with real Keycloak, the banner's commands, a browser sign-in on
// Keycloak's page, bob's 403, carol brokered from realm corp by the button on demo's login page,
// Keycloak's admin console, and Ctrl-C stopping everything.
// Keycloak's database is a copy in this run's directory, not the demo's own.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { rmSync } from 'node:fs';

import {
  http, browse, CookieJar, assertPortFree, runDirectory, WASM_TEST_DIR, stopAll,
} from '../lib/harness.mjs';

const WASM = process.env.WASM;

test('make demo: Keycloak on 8180 with the demo realm, sign-in through the gateway on 8080, Ctrl-C stops it all', { timeout: 150_000 }, async (t) => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  for (const [port, what] of [[8080, 'gateway'], [8180, 'Keycloak'], [8081, 'echo'], [9901, 'Envoy admin']]) {
    await assertPortFree(port, `the demo's ${what} port (is a make demo running?)`);
  }
  const db = join(runDirectory(), 'demo-keycloak-db');
  const demo = spawn(process.execPath, [join(WASM_TEST_DIR, 'demo.mjs'), '--keycloak-db', db, WASM], {
    cwd: WASM_TEST_DIR, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GATEHOUSE_KEYCLOAK_URL: '' },
  });
  let out = '';
  demo.stdout.on('data', (b) => { out += b; });
  demo.stderr.on('data', (b) => { out += b; });
  const exited = new Promise((resolve) => { demo.once('exit', (code, signal) => resolve({ code, signal })); });
  t.after(async () => {
    if (demo.exitCode === null) demo.kill('SIGKILL');
    // The demo keeps its logs for the person who ran it; this test leaves nothing behind.
    const logs = out.match(/^Logs: (.+)$/m)?.[1];
    if (logs && logs.includes('gatehouse-test-')) rmSync(logs, { recursive: true, force: true });
    await stopAll();
  });
  const deadline = Date.now() + 120_000;
  while (!out.includes('gatehouse demo is running')) {
    assert.ok(demo.exitCode === null, `demo exited early:\n${out}`);
    assert.ok(Date.now() < deadline, `demo not up in 120 s:\n${out}`);
    await new Promise((r) => { setTimeout(r, 200); });
  }
  assert.match(out, /admin console http:\/\/127\.0\.0\.1:8180\/admin\//);

  // The banner's token command, then the gateway.
  const token = await http('http://127.0.0.1:8180/realms/demo/protocol/openid-connect/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=password&client_id=api&client_secret=api-secret&username=alice&password=alice&scope=openid',
  });
  assert.equal(token.status, 200, token.body);
  const echo = await http('http://127.0.0.1:8080/echo', { headers: { authorization: `Bearer ${token.json.access_token}` } });
  assert.equal(echo.status, 200);
  assert.equal(echo.json.headers['x-auth-request-groups'], '/admins');
  assert.equal(echo.json.headers['x-auth-request-roles'], 'backendaccess', 'what the README shows');
  assert.equal((await http('http://127.0.0.1:8080/echo')).status, 401);
  assert.equal((await http('http://127.0.0.1:8080/public/hello')).status, 200);

  const alice = await browse('http://127.0.0.1:8080/echo', { username: 'alice', password: 'alice' });
  assert.equal(alice.response.status, 200);
  assert.ok(alice.history.some((h) => h.url.startsWith('http://127.0.0.1:8180/realms/demo/login-actions/')), 'Keycloak\'s own form');
  // Signing out ends Keycloak's session and comes back to the app (login.postLogoutRedirectUri).
  const signOut = alice.jar.header('http://127.0.0.1:8080/oauth2/sign_out');
  const form = await http('http://127.0.0.1:8080/oauth2/sign_out', { headers: { accept: 'text/html', cookie: signOut } });
  const action = form.body.match(/action="([^"]+)"/)[1].replaceAll('&amp;', '&');
  const out302 = await http(`http://127.0.0.1:8080${action}`, { method: 'POST', headers: { cookie: signOut } });
  assert.equal(out302.status, 302);
  alice.jar.store('http://127.0.0.1:8080/oauth2/sign_out', out302.headers['set-cookie']);
  const back = await browse(out302.headers.location, { jar: alice.jar });
  assert.ok(back.history.some((h) => h.url === 'http://127.0.0.1:8080/'), `sign-out returns to the app: ${back.history.map((h) => h.url).join(' ')}`);
  assert.match(back.response.body, /id="kc-form-login"/, 'and Keycloak asks for the password again');
  const bob = await browse('http://127.0.0.1:8080/admin/', { username: 'bob', password: 'bob' });
  assert.equal(bob.response.status, 403);
  // Brokering: the corp button on demo's login page, carol's password on corp's, no other form.
  const jar = new CookieJar();
  const atLogin = await browse('http://127.0.0.1:8080/echo', { jar });
  assert.match(atLogin.url, /^http:\/\/127\.0\.0\.1:8180\/realms\/demo\//, 'demo\'s login page');
  const link = /href="([^"]*\/broker\/corp\/login[^"]*)"/.exec(atLogin.response.body);
  assert.ok(link, 'a corp button on demo\'s login page');
  const viaCorp = await browse(new URL(link[1].replace(/&amp;/g, '&'), atLogin.url).href, { jar, username: 'carol', password: 'carol' });
  assert.ok(viaCorp.history.some((h) => h.url.startsWith('http://127.0.0.1:8180/realms/corp/')), 'corp\'s login page');
  assert.equal(viaCorp.response?.status, 200, `ended at ${viaCorp.url}`);
  assert.equal(viaCorp.response.json.headers['x-auth-request-email'], 'carol@corp.example');
  assert.ok(viaCorp.response.json.headers['x-auth-request-roles'].split(',').includes('corp-user'), 'the broker mapper\'s role');
  assert.match(out, /realm corp/, 'the banner names the corp realm');

  const adminConsole = await http('http://127.0.0.1:8180/admin/master/console/');
  assert.equal(adminConsole.status, 200);

  demo.kill('SIGINT');
  const { code } = await exited;
  assert.equal(code, 130, 'Ctrl-C ends the demo');
  for (const port of [8080, 8180, 8081, 9901]) await assertPortFree(port, `port ${port} after Ctrl-C`);
});
