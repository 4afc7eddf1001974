// Browser single sign-on end to end, driven by a scripted HTTP client (no JavaScript): the OIDC
// code flow through real Envoy with gatehouse and real Keycloak (its own login form), then the session cookie.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';

import {
  stopAll, http, CookieJar, browse,
} from '../lib/harness.mjs';
import {
  startKeycloak, startGatewayFor, createRealmWithBigUser, deleteRealm,
} from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
const COOKIE_KEY = 'e2e-cookie-key-0123456789abcdef-current';
const RETIRED_KEY = 'e2e-cookie-key-0123456789abcdef-retired';

const REALM = 'demo-scripted';
let kc;
let idpPort;
let gateway;
let issuer;

const HTML = { accept: 'text/html,application/xhtml+xml' };

/** A session cookie sealed the way gatehouse seals it (src/session.rs), for forged-cookie tests. */
function seal(key, purpose, payload) {
  const kid = createHash('sha256').update(`gatehouse-kid|${key}`).digest().subarray(0, 4).toString('hex');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const mac = createHmac('sha256', key).update(`gatehouse|v1|${purpose}|${kid}|${body}`).digest('base64url');
  return `v1.${kid}.${body}.${mac}`;
}

const now = () => Math.floor(Date.now() / 1000);
const isIdp = (url) => new URL(url).port === String(idpPort);
const isCallback = (url) => new URL(url).pathname === '/oauth2/callback';

async function login(path, username, jar = new CookieJar()) {
  const r = await browse(`${gateway}${path}`, { jar, username, password: username });
  return { ...r, jar };
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  // Real Keycloak, in a copy of the demo realm with carol (300 groups) added for the chunked-cookie case.
  kc = await startKeycloak();
  idpPort = kc.port;
  ({ issuer } = await createRealmWithBigUser(kc, REALM));
  const envoy = await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'],
      },
      session: { keys: [COOKIE_KEY], secure: false },
      login: { postLogoutRedirectUri: 'http://127.0.0.1:8080/public/bye' },
      publicPaths: [{ prefix: '/public/' }],
      rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
    },
  });
  gateway = envoy.url;
});

after(async () => {
  if (kc) await deleteRealm(kc, REALM);
  await stopAll();
});

test('alice logs in through the IdP and lands back on the page she asked for', async () => {
  // The browser also holds other cookies for the host, on every path (a Wasm peer's callback
  // failed on exactly this).
  const other = new CookieJar();
  other.store(`${gateway}/`, ['_ga=GA1.2.345.678; Path=/', 'theme="dark"; Path=/', 'cb=1; Path=/oauth2']);
  const { response, history, jar } = await login('/echo?x=1', 'alice', other);
  assert.equal(response.status, 200, JSON.stringify(history));
  assert.equal(response.json.path, '/echo?x=1');
  const h = response.json.headers;
  assert.equal(h['x-auth-request-email'], 'alice@example.com');
  assert.equal(h['x-auth-request-preferred-username'], 'alice');
  assert.equal(h['x-auth-request-groups'], '/admins');
  assert.ok(h['x-auth-request-roles'].split(',').includes('backendaccess'), h['x-auth-request-roles']);
  assert.ok(!(h.cookie ?? '').includes('_gatehouse'), 'the upstream does not get the session cookie');
  assert.match(h.cookie, /_ga=GA1\.2\.345\.678; theme="dark"/, 'other cookies still reach the upstream, untouched');

  // The flow: 302 to the IdP's authorization endpoint with PKCE, back to the callback, 302 to the page.
  assert.equal(history[0].status, 302);
  const first = new URL(history[1].url);
  assert.ok(isIdp(first.href), first.href);
  assert.equal(first.pathname, `${new URL(issuer).pathname}/protocol/openid-connect/auth`);
  for (const p of ['state', 'nonce', 'code_challenge']) assert.ok(first.searchParams.get(p), p);
  assert.equal(first.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(first.searchParams.get('client_id'), 'gateway');
  assert.equal(first.searchParams.get('redirect_uri'), `${gateway}/oauth2/callback`);
  const callback = history.find((s) => isCallback(s.url));
  assert.equal(callback.status, 302);

  // Later requests carry only the cookie, API-style or as pages.
  const again = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(again.status, 200);
  assert.equal(again.json.headers['x-auth-request-email'], 'alice@example.com');
  const admin = await http(`${gateway}/admin/`, { headers: { cookie: jar.header(`${gateway}/admin/`) } });
  assert.equal(admin.status, 200);
  // Spoofed identity headers are still removed for cookie sessions.
  const spoof = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`), 'x-auth-request-email': 'ceo@x' } });
  assert.equal(spoof.json.headers['x-auth-request-email'], 'alice@example.com');
});

test('bob gets 403 on /admin/ with the same rules as for tokens', async () => {
  const { response, jar } = await login('/admin/', 'bob');
  assert.equal(response.status, 403);
  assert.match(response.body, /Access denied/);
  const api = await http(`${gateway}/admin/`, { headers: { cookie: jar.header(`${gateway}/admin/`) } });
  assert.equal(api.status, 403);
  assert.equal(api.json.reason, 'group_required');
  assert.equal((await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } })).status, 200);
});

test('XHR and API calls without a session get 401, never a login page', async () => {
  for (const headers of [{ accept: 'application/json' }, { ...HTML, 'x-requested-with': 'XMLHttpRequest' }, { 'sec-fetch-mode': 'cors', ...HTML }, {}]) {
    const r = await http(`${gateway}/echo`, { headers });
    assert.equal(r.status, 401, JSON.stringify(headers));
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="gatehouse"');
  }
  const post = await http(`${gateway}/echo`, { method: 'POST', headers: HTML, body: 'x' });
  assert.equal(post.status, 401);
  const nav = await http(`${gateway}/echo`, { headers: { 'sec-fetch-mode': 'navigate' } });
  assert.equal(nav.status, 302);
});

test('tampered, truncated, expired and retired-key cookies send the browser back to login', async () => {
  const { jar } = await login('/echo', 'alice');
  const value = jar.list().find((c) => c.name === '_gatehouse').value;
  // A session is sealed with its site — the host (no cookie domain here) and the cookie path —
  // and the issuer of the provider that signed the user in.
  const site = new URL(gateway).hostname;
  const scope = `${site}|/|${issuer}`;
  const good = seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x', email: 'forged@example.com' }, scope });
  // The forging helper is faithful: a cookie it seals with the current key is accepted.
  const ok = await http(`${gateway}/echo`, { headers: { cookie: `_gatehouse=${good}` } });
  assert.equal(ok.status, 200);
  assert.equal(ok.json.headers['x-auth-request-email'], 'forged@example.com');
  const flip = (s, i) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const bad = {
    'tampered payload': flip(value, 20),
    'tampered mac': flip(value, value.length - 5),
    truncated: value.slice(0, value.length - 10),
    expired: seal(COOKIE_KEY, 'session', { exp: now() - 10, claims: { sub: 'x' }, scope }),
    'retired key': seal(RETIRED_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' }, scope }),
    'login-state cookie used as session': seal(COOKIE_KEY, 'state', { exp: now() + 600, claims: { sub: 'x' }, scope }),
    'made for another site': seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' }, scope: `other.example|/|${issuer}` }),
    'made for another path': seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' }, scope: `${site}|/app|${issuer}` }),
    'made by another provider': seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' }, scope: `${site}|/|http://127.0.0.1:1/realms/other` }),
    'made before sessions named their provider': seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' }, scope: `${site}|/` }),
    'made without a site': seal(COOKIE_KEY, 'session', { exp: now() + 600, claims: { sub: 'x' } }),
    garbage: 'garbage',
  };
  for (const [name, cookie] of Object.entries(bad)) {
    const page = await http(`${gateway}/echo`, { headers: { ...HTML, cookie: `_gatehouse=${cookie}` } });
    assert.equal(page.status, 302, name);
    assert.ok(isIdp(page.headers.location), `${name}: ${page.headers.location}`);
    const setCookies = [].concat(page.headers['set-cookie'] ?? []);
    assert.ok(setCookies.some((c) => /^_gatehouse=;.*Max-Age=0/.test(c)), `${name}: the bad session cookie is cleared`);
    const api = await http(`${gateway}/echo`, { headers: { cookie: `_gatehouse=${cookie}` } });
    assert.equal(api.status, 401, name);
  }
});

/** Walks to the IdP and logs in, stopping before the callback: returns the callback URL. */
async function toCallback(path, jar) {
  const start = await browse(`${gateway}${path}`, { jar, stopAt: (u) => isIdp(u.href) });
  const atIdp = await browse(start.url, { jar, username: 'alice', password: 'alice', stopAt: (u) => isCallback(u.href) });
  assert.ok(atIdp.stopped && isCallback(atIdp.url), atIdp.url);
  return atIdp.url;
}

test('callback errors get a clear 4xx page', async () => {
  const jar = new CookieJar();
  const cb = await toCallback('/echo', jar);
  const url = new URL(cb);
  const cookie = jar.header(cb);
  const get = (u, c = cookie) => http(u, { headers: { ...HTML, cookie: c } });

  const wrongState = new URL(cb);
  wrongState.searchParams.set('state', 'A'.repeat(43));
  const cases = {
    'state mismatch': [await get(wrongState.href), 400],
    'missing state cookie': [await get(cb, ''), 400],
    'no state at all': [await get(`${gateway}/oauth2/callback?code=x`), 400],
    'missing code': [await get(`${gateway}/oauth2/callback?state=${url.searchParams.get('state')}`), 400],
    'another issuer (RFC 9207 mix-up)': [await get(`${cb.replace(/&iss=[^&]*/, '')}&iss=${encodeURIComponent('http://evil.example/realms/demo')}`), 400],
    'IdP error access_denied': [await get(`${gateway}/oauth2/callback?error=access_denied&state=${url.searchParams.get('state')}`), 403],
    'IdP error other': [await get(`${gateway}/oauth2/callback?error=temporarily_unavailable&state=x`), 400],
  };
  for (const [name, [r, status]] of Object.entries(cases)) {
    assert.equal(r.status, status, `${name}: ${r.body.slice(0, 200)}`);
    assert.match(r.headers['content-type'], /text\/html/, name);
    assert.match(r.body, /Try again/, name);
    assert.ok(![].concat(r.headers['set-cookie'] ?? []).some((c) => /^_gatehouse=v1/.test(c)), `${name}: no session`);
  }
});

test('a replayed code is refused', async () => {
  const jar = new CookieJar();
  const cb = await toCallback('/echo', jar);
  const cookie = jar.header(cb);
  const first = await http(cb, { headers: { ...HTML, cookie } });
  assert.equal(first.status, 302);
  assert.ok([].concat(first.headers['set-cookie']).some((c) => /^_gatehouse=v1/.test(c)));
  // The same code again, with the state cookie as it was (an attacker who captured both).
  const replay = await http(cb, { headers: { ...HTML, cookie } });
  assert.equal(replay.status, 400);
  assert.match(replay.body, /already used|expired/);
  assert.ok(![].concat(replay.headers['set-cookie'] ?? []).some((c) => /^_gatehouse=v1/.test(c)));
});

test('two logins interleaved in one cookie jar both succeed', async () => {
  const jar = new CookieJar();
  const a = await browse(`${gateway}/echo?tab=a`, { jar, stopAt: (u) => isIdp(u.href) });
  const b = await browse(`${gateway}/echo?tab=b`, { jar, stopAt: (u) => isIdp(u.href) });
  const states = jar.list().filter((c) => c.name.startsWith('_gatehouse_st_'));
  assert.equal(states.length, 2, 'one state cookie per attempt');
  const doneB = await browse(b.url, { jar, username: 'alice', password: 'alice' });
  const doneA = await browse(a.url, { jar, username: 'alice', password: 'alice' });
  assert.equal(doneB.response.status, 200);
  assert.equal(doneB.response.json.path, '/echo?tab=b');
  assert.equal(doneA.response.status, 200);
  assert.equal(doneA.response.json.path, '/echo?tab=a');
  assert.equal(jar.list().filter((c) => c.name.startsWith('_gatehouse_st_')).length, 0, 'state cookies are cleared');
});

test('open-redirect attempts land on the same host', async () => {
  for (const path of ['//evil.example/x', '/\\evil.example/x', '/\\/evil.example']) {
    const { response, history } = await login(path, 'alice');
    const last = history[history.length - 1];
    assert.equal(new URL(last.url).origin, gateway, `${path}: ended at ${last.url}`);
    for (const step of history) {
      const host = new URL(step.url).host;
      assert.ok(host === new URL(gateway).host || isIdp(step.url), `${path}: visited ${step.url}`);
    }
    assert.ok([200, 404].includes(response.status), `${path}: ${response.status}`);
  }
  // Encoded slashes are refused before any login starts (issue 11: escapedSlashes REJECT_REQUEST),
  // so there is no return target to abuse.
  const escaped = await http(`${gateway}/%2F%2Fevil.example/x`, { headers: HTML });
  assert.equal(escaped.status, 400);
  assert.equal(escaped.json?.reason, 'escaped_slash');
  assert.equal(escaped.headers.location, undefined);
  assert.equal(escaped.headers['set-cookie'], undefined);
});

test('logout clears the cookies and lands on the end-session endpoint', async () => {
  const { jar } = await login('/echo', 'alice');
  assert.ok(jar.list().some((c) => c.name === '_gatehouse'));
  // A cross-site page cannot sign the user out: it gets a confirmation form.
  const cross = await http(`${gateway}/oauth2/sign_out`, { headers: { ...HTML, 'sec-fetch-site': 'cross-site', cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(cross.status, 200);
  assert.match(cross.body, /<form method="post" action="\/oauth2\/sign_out\?csrf=[A-Za-z0-9_-]{43}">/);
  assert.equal(cross.headers['set-cookie'], undefined);
  assert.match(cross.headers['content-security-policy'], /(^|; )frame-ancestors 'none'(;|$)/);
  assert.match(cross.headers['content-security-policy'], /(^|; )default-src 'none'(;|$)/);
  // Neither does a request that says nothing about where it comes from (older browsers send no
  // Sec-Fetch-Site, an <img> no Origin): the same form.
  const silent = await http(`${gateway}/oauth2/sign_out`, { headers: { cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(silent.status, 200);
  assert.equal(silent.headers['set-cookie'], undefined);
  const forged = await http(`${gateway}/oauth2/sign_out?csrf=${'A'.repeat(43)}`, { method: 'POST', headers: { cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(forged.status, 200, 'a made-up token');
  assert.equal(forged.headers['set-cookie'], undefined);
  const foreignPost = await http(`${gateway}/oauth2/sign_out`, { method: 'POST', headers: { origin: 'http://evil.example', cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(foreignPost.status, 200);
  assert.equal(foreignPost.headers['set-cookie'], undefined);

  // The form's own POST (its token, no fetch metadata, as an old browser sends it) signs out.
  const action = silent.body.match(/action="([^"]+)"/)[1].replaceAll('&amp;', '&');
  const r = await http(`${gateway}${action}`, { method: 'POST', headers: { cookie: jar.header(`${gateway}/oauth2/sign_out`) } });
  assert.equal(r.status, 302);
  const loc = new URL(r.headers.location);
  assert.equal(loc.origin + loc.pathname, `${issuer}/protocol/openid-connect/logout`);
  assert.ok(loc.searchParams.get('id_token_hint')?.split('.').length === 3, 'id_token_hint');
  assert.equal(loc.searchParams.get('client_id'), 'gateway');
  assert.equal(loc.searchParams.get('post_logout_redirect_uri'), 'http://127.0.0.1:8080/public/bye');
  jar.store(`${gateway}/oauth2/sign_out`, r.headers['set-cookie']);
  assert.ok(!jar.list().some((c) => c.name.startsWith('_gatehouse')), 'all gatehouse cookies cleared');
  const after = await http(`${gateway}/echo`, { headers: { ...HTML, cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(after.status, 302);
  assert.ok(isIdp(after.headers.location));
});

test('an oversized claim set is split into chunked cookies and still works', async () => {
  const { response, jar } = await login('/echo', 'carol');
  assert.equal(response.status, 200);
  const groups = response.json.headers['x-auth-request-groups'].split(',');
  assert.equal(groups.length, 300);
  const names = jar.list().map((c) => c.name).filter((n) => n.startsWith('_gatehouse')).sort();
  const head = jar.list().find((c) => c.name === '_gatehouse').value;
  const n = Number(head.replace('chunks.', ''));
  assert.ok(head.startsWith('chunks.') && n >= 2, head);
  assert.deepEqual(names, ['_gatehouse', ...Array.from({ length: n }, (_, i) => `_gatehouse.${i}`)].sort());
  for (const c of jar.list()) assert.ok(c.value.length <= 3800, `${c.name}: ${c.value.length} bytes`);
  const again = await http(`${gateway}/echo`, { headers: { cookie: jar.header(`${gateway}/echo`) } });
  assert.equal(again.status, 200);
  assert.equal(again.json.headers['x-auth-request-groups'].split(',').length, 300);
  assert.ok(!again.json.headers.cookie?.includes('_gatehouse'), 'no chunk reaches the upstream');
  // A missing chunk is no session.
  const partial = jar.header(`${gateway}/echo`).split('; ').filter((c) => !c.startsWith('_gatehouse.1=')).join('; ');
  assert.equal((await http(`${gateway}/echo`, { headers: { cookie: partial } })).status, 401);
  // A new, small session replaces the chunks and clears the stale ones (here the head cookie is
  // gone, as when it expired, so the browser signs in again — as bob).
  // A fresh jar with only the stale chunks: the IdP's own SSO cookie would sign carol in again.
  const stale = new CookieJar();
  stale.store(`${gateway}/`, jar.list().filter((c) => c.name.startsWith('_gatehouse.')).map((c) => `${c.name}=${c.value}; Path=/`));
  const small = await login('/echo', 'bob', stale);
  assert.equal(small.response.status, 200);
  assert.equal(small.response.json.headers['x-auth-request-email'], 'bob@example.com');
  assert.deepEqual(stale.list().map((c) => c.name).filter((x) => x.startsWith('_gatehouse')), ['_gatehouse']);
});
