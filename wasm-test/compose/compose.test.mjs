// examples/docker-compose.yaml run for real (issue 17, `make compose`, part of `make test`):
// `docker compose up` on the example as it is, with only its images swapped (images.yaml) for
// ones built here, because no image registry can be reached. Then what a person does: alice signs
// in on Keycloak's page and sees the echo headers, bob gets the 403 on /admin/, role-app decides
// by the role header, a token from the `api` client works, signing out ends the Keycloak session.
// The stack comes down clean (no container, network or volume left) whatever happened.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

import {
  REPO_ROOT, KEYCLOAK_VERSION, docker, engine, buildImages, leftovers,
} from './docker.mjs';
import { http } from '../lib/http.mjs';
import { CookieJar, browse } from '../lib/browser.mjs';
import { assertPortFree } from '../lib/ports.mjs';

const PROJECT = 'gatehouse-example'; // the file's own `name:`
const FILES = ['-f', join(REPO_ROOT, 'examples', 'docker-compose.yaml'), '-f', join(REPO_ROOT, 'wasm-test', 'compose', 'images.yaml')];
const GATEWAY = 'http://127.0.0.1:8080';
const KEYCLOAK = 'http://127.0.0.1:8180';
const ISSUER = `${KEYCLOAK}/realms/demo`;
const HTML = { accept: 'text/html,application/xhtml+xml' };

let eng;
let upAt;
const timings = {};

const compose = (args, opts) => docker(['compose', ...FILES, ...args], opts);

async function until(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // eslint-disable-next-line no-await-in-loop
    if (await fn().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s\n${compose(['logs', '--tail', '40'], { ok: () => true }).stdout}`);
    await new Promise((r) => { setTimeout(r, 1000); }); // eslint-disable-line no-await-in-loop
  }
}

before(async () => {
  for (const port of [8080, 8180, 8081, 8082, 9901]) await assertPortFree(port, `the example's port ${port}`); // eslint-disable-line no-await-in-loop
  let t = Date.now();
  eng = await engine();
  timings.engine = Date.now() - t;
  const version = docker(['compose', 'version', '--short'], { ok: () => true });
  assert.equal(version.status, 0, `docker compose is missing (make compose builds it into $DOCKER_CONFIG/cli-plugins): ${version.stderr}`);
  t = Date.now();
  buildImages();
  timings.images = Date.now() - t;
  compose(['down', '--volumes', '--remove-orphans'], { ok: () => true }); // a run killed before its cleanup
  upAt = Date.now();
  compose(['up', '--detach']);
  // Keycloak imports both realms on its first start; gatehouse retries discovery meanwhile.
  await until('Keycloak with the demo realm', async () => (await http(`${ISSUER}/.well-known/openid-configuration`, { timeoutMs: 2000 })).json?.issuer === ISSUER, 240_000);
  await until('the gateway sending browsers to Keycloak', async () => {
    const r = await http(`${GATEWAY}/echo`, { headers: HTML, timeoutMs: 2000 });
    return r.status === 302 && r.headers.location.startsWith(`${ISSUER}/protocol/openid-connect/auth?`);
  }, 60_000);
  timings.firstStart = Date.now() - upAt;
  process.stderr.write(`compose: engine ${timings.engine} ms, images ${timings.images} ms, first start (up to the first login redirect) ${timings.firstStart} ms\n`);
});

after(async () => {
  try {
    if (eng) {
      const down = compose(['down', '--volumes', '--remove-orphans'], { ok: () => true, timeoutMs: 120_000 });
      const left = leftovers(PROJECT);
      assert.equal(down.status, 0, `docker compose down: ${down.stderr}`);
      assert.deepEqual(left, { containers: [], networks: [], volumes: [] }, 'the stack left something behind');
    }
  } finally {
    await eng?.stop();
  }
});

const signIn = (path, user, jar = new CookieJar()) => browse(`${GATEWAY}${path}`, { jar, username: user, password: user }).then((r) => ({ ...r, jar }));

test('alice signs in on Keycloak\'s own page and sees the echo headers', async () => {
  const { response, history } = await signIn('/echo', 'alice');
  assert.equal(response.status, 200, JSON.stringify(history));
  assert.ok(history.some((h) => h.method === 'POST' && h.url.startsWith(`${ISSUER}/login-actions/authenticate`)), 'the password went to Keycloak\'s form');
  const h = response.json.headers;
  assert.equal(h['x-auth-request-email'], 'alice@example.com');
  assert.equal(h['x-auth-request-preferred-username'], 'alice');
  assert.equal(h['x-auth-request-groups'], '/admins');
  assert.ok(h['x-auth-request-roles'].split(',').includes('backendaccess'), h['x-auth-request-roles']);
  assert.ok(!(h.cookie ?? '').includes('_gatehouse'), 'no cookie of gatehouse\'s reaches the service');
});

test('bob is signed in but gets the 403 on /admin/; alice does not', async () => {
  const bob = await signIn('/admin/', 'bob');
  assert.equal(bob.response.status, 403);
  const alice = await signIn('/admin/', 'alice');
  assert.equal(alice.response.status, 200);
});

test('role-app decides by the role header: alice may approve, bob may not', async () => {
  const alice = await signIn('/payments/approve', 'alice');
  assert.equal(alice.response.status, 200);
  assert.deepEqual(alice.response.json, { approved: true, by: 'alice' });
  const bob = await signIn('/payments/approve', 'bob');
  assert.equal(bob.response.status, 403);
  assert.equal(bob.response.json.approved, false);
});

test('a token from the api client works, as the walk-through shows', async () => {
  const token = async (user) => {
    const r = await http(`${ISSUER}/protocol/openid-connect/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', client_id: 'api', client_secret: 'api-secret', username: user, password: user }).toString(),
    });
    assert.equal(r.status, 200, r.body);
    return r.json.access_token;
  };
  const approve = (t) => http(`${GATEWAY}/payments/approve`, { headers: t ? { authorization: `Bearer ${t}` } : {} });
  assert.equal((await approve(await token('alice'))).status, 200);
  assert.equal((await approve(await token('bob'))).status, 403);
  assert.equal((await approve()).status, 401);
  assert.equal((await approve('not-a-token')).status, 401);
});

test('signing out ends the Keycloak session: the next page asks for the password again', async () => {
  const { jar } = await signIn('/echo', 'alice');
  const form = await http(`${GATEWAY}/oauth2/sign_out`, { headers: { ...HTML, cookie: jar.header(`${GATEWAY}/oauth2/sign_out`) } });
  const action = form.body.match(/action="([^"]+)"/)[1].replaceAll('&amp;', '&');
  const out = await http(`${GATEWAY}${action}`, { method: 'POST', headers: { cookie: jar.header(`${GATEWAY}/oauth2/sign_out`) } });
  assert.equal(out.status, 302);
  jar.store(`${GATEWAY}/oauth2/sign_out`, out.headers['set-cookie']);
  const loc = new URL(out.headers.location);
  assert.equal(loc.origin + loc.pathname, `${ISSUER}/protocol/openid-connect/logout`);
  // Keycloak ends its session and returns to the app (the example's postLogoutRedirectUri),
  // which, with no session left, sends the browser to Keycloak's login form.
  const ended = await browse(loc.href, { jar, username: undefined });
  assert.ok(ended.history.some((h) => h.url === `${GATEWAY}/`), `Keycloak returns to the app: ${JSON.stringify(ended.history.map((h) => h.url))}`);
  assert.match(ended.response.body, /id="kc-form-login"/);
  const next = await browse(`${GATEWAY}/echo`, { jar, username: undefined });
  assert.ok(next.url.startsWith(`${ISSUER}/`), `stopped at ${next.url}`);
  assert.match(next.response.body, /id="kc-form-login"/, 'Keycloak asks for the password');
});

test('identity brokering: carol signs in through the corp realm\'s button and comes back as a demo user with corp-user', async () => {
  const jar = new CookieJar();
  const page = await browse(`${GATEWAY}/echo`, { jar, username: undefined });
  assert.match(page.response.body, /id="kc-form-login"/, 'demo\'s login page');
  const link = /href="([^"]*\/broker\/corp\/login[^"]*)"/.exec(page.response.body);
  assert.ok(link, 'demo\'s login page has the corp button');
  const href = new URL(link[1].replaceAll('&amp;', '&'), page.url).href;
  const r = await browse(href, { jar, username: 'carol', password: 'carol' });
  assert.ok(r.history.some((h) => h.url.startsWith(`${KEYCLOAK}/realms/corp/`)), 'the password went to corp');
  assert.equal(r.response.status, 200, JSON.stringify(r.history.map((h) => `${h.status} ${h.url}`)));
  const h = r.response.json.headers;
  assert.equal(h['x-auth-request-email'], 'carol@corp.example');
  assert.ok(h['x-auth-request-roles'].split(',').includes('corp-user'), h['x-auth-request-roles']);
});

test('the override swaps only the images, for builds of the versions the file pins', () => {
  const file = parse(readFileSync(join(REPO_ROOT, 'examples', 'docker-compose.yaml'), 'utf8'));
  const override = parse(readFileSync(join(REPO_ROOT, 'wasm-test', 'compose', 'images.yaml'), 'utf8'));
  assert.deepEqual(Object.keys(override), ['services']);
  assert.deepEqual(Object.keys(override.services).sort(), Object.keys(file.services).sort(), 'every service, no other');
  for (const [name, svc] of Object.entries(override.services)) assert.deepEqual(Object.keys(svc), ['image'], `${name}: only image`);
  const version = (image) => image.split(':').at(-1);
  // Keycloak: the very version the test bed runs; Envoy: the tag's minor; Node.js: the major.
  assert.equal(version(file.services.keycloak.image), KEYCLOAK_VERSION);
  assert.equal(version(override.services.keycloak.image), KEYCLOAK_VERSION);
  const envoy = /version: [0-9a-f]+\/(\d+\.\d+)\.\d+\//.exec(docker(['run', '--rm', override.services.envoy.image, 'envoy', '--version']).stdout);
  assert.ok(envoy, 'envoy --version in the image');
  assert.equal(`v${envoy[1]}-latest`, version(file.services.envoy.image));
  const node = docker(['run', '--rm', override.services.echo.image, 'node', '--version']).stdout.trim();
  assert.equal(node.split('.')[0], `v${version(file.services.echo.image).split('-')[0]}`);
  const kc = docker(['run', '--rm', override.services.keycloak.image, '--version']).stdout;
  assert.match(kc, new RegExp(`Keycloak ${KEYCLOAK_VERSION.replaceAll('.', '\\.')}`));
});
