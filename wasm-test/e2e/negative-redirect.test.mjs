// Issue 6 (1): open-redirect attempts through real Envoy. A browser opens a crafted path on the
// gateway, signs in, and must land back on the gateway itself: hostile return targets become `/`,
// odd-but-harmless paths come back unchanged, and nothing ever points at another host.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, CookieJar,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor } from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const HTML = { accept: 'text/html,application/xhtml+xml' };
let gateway;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  const kc = await startKeycloak();
  const envoy = await startGatewayFor(kc, {
    wasmPath: WASM,
    concurrency: 1,
    filterConfig: {
      provider: { issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret' },
      session: { keys: ['e2e-redirect-cookie-key-0123456789abcdef'], secure: false },
    },
  });
  gateway = envoy.url;
});

after(stopAll);

/** Opens `rawPath` on the gateway unauthenticated, signs in, and returns where the callback sent the browser. */
async function landingAfterLogin(rawPath) {
  const first = await http(`${gateway}/`, { rawPath, headers: HTML });
  assert.equal(first.status, 302, `${rawPath}: ${first.status} ${first.body.slice(0, 120)}`);
  const toIdp = new URL(first.headers.location);
  assert.notEqual(toIdp.origin, gateway, 'the first redirect goes to the IdP');
  const jar = new CookieJar();
  jar.store(`${gateway}/`, first.headers['set-cookie']);
  const flow = await browse(toIdp.href, { jar, username: 'alice', password: 'alice' });
  const i = flow.history.findIndex((h) => new URL(h.url).pathname === '/oauth2/callback');
  assert.ok(i >= 0, `${rawPath}: the flow reached the callback`);
  assert.equal(flow.history[i].status, 302);
  const landing = flow.history[i + 1];
  assert.ok(landing, `${rawPath}: the browser went on from the callback`);
  return new URL(landing.url);
}

// Read by a browser as another host (scheme-relative, or with a backslash browsers treat as `/`).
const hostile = [
  '//evil.example/x',
  '///evil.example',
  '/\\evil.example',
  '/\\/evil.example',
  '/\\\\evil.example',
];

for (const path of hostile) {
  test(`return target ${JSON.stringify(path)} lands on / of the gateway`, async () => {
    const landing = await landingAfterLogin(path);
    assert.equal(landing.origin, gateway);
    assert.equal(`${landing.pathname}${landing.search}`, '/');
  });
}

// Paths on this host however they look: they come back as sent, never decoded into another host.
const harmless = [
  '/https:evil.example',
  '/@evil.example',
  '/x?next=https://evil.example/',
  '/xn--80ak6aa92e.com/',
];

for (const path of harmless) {
  test(`return target ${JSON.stringify(path)} comes back unchanged, on the gateway`, async () => {
    const landing = await landingAfterLogin(path);
    assert.equal(landing.origin, gateway);
    assert.equal(`${landing.pathname}${landing.search}`, path);
  });
}

// Encoded slashes (at any depth of encoding) and encoded control characters (a CR/LF header
// break) are refused on the first request (issue 11): no login starts, so nothing can carry them
// into a return target, a Location or a cookie.
const refused = [
  ['/%2F%2Fevil.example', 'escaped_slash'],
  ['/%252F%252Fevil.example', 'escaped_slash'],
  ['/%0d%0aLocation:%20http://evil.example', 'encoded_control'],
  ['/%0D%0ASet-Cookie:%20stolen=1', 'encoded_control'],
];

for (const [path, reason] of refused) {
  test(`return target ${JSON.stringify(path)} is refused before any login (400 ${reason})`, async () => {
    const r = await http(`${gateway}/`, { rawPath: path, headers: HTML });
    assert.equal(r.status, 400, `${path}: ${r.status} ${r.body.slice(0, 120)}`);
    assert.equal(r.json?.error, 'invalid_request');
    assert.equal(r.json?.reason, reason);
    assert.equal(r.headers.location, undefined);
    assert.equal(r.headers['set-cookie'], undefined, 'no login state is stored');
  });
}
