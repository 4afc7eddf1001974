// Issue 15 (2): gatehouse beside the stack it replaces — Envoy's ext_authz in front of oauth2-proxy
// v7.15.6 as seeds 002 (cookie sessions) and 000 (Redis sessions) run it, configured as istiod
// renders an `envoyExtAuthzHttp` provider (lib/oauth2proxy.mjs) — on the same real Keycloak and
// the same echo upstream. gatehouse is configured as seed 002's oauth2-proxy: every path but
// /public/ needs a session or a bearer token, and group /admins.
//
// One table of requests, sent through the three gateways after real logins on each. For each
// request the decision class (pass, 302 to Keycloak, 401, 403, 5xx) is asserted for gatehouse and
// for oauth2-proxy, and for passed requests the identity headers at the upstream are compared.
// Where the classes differ the row says why; the README's migration section lists the same
// differences.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  startEcho, startEnvoy, stopAll, http, browse, CookieJar, passwordToken, waitForSignIn, onStopAll,
} from '../lib/harness.mjs';
import {
  createRealmCopy, deleteRealm, realmClient, setClientAttributes, startKeycloak,
} from '../lib/keycloak.mjs';
import { faults, startFaultProxy } from '../lib/faultproxy.mjs';
import { startOauth2ProxyStack, startRedis } from '../lib/oauth2proxy.mjs';

const WASM = process.env.WASM;
const REALM = 'demo-compat';
const API_TOKEN_SECONDS = 3; // the api client's access tokens here, so one can expire in the test
const IDENTITY = ['x-auth-request-user', 'x-auth-request-email', 'x-auth-request-preferred-username', 'x-auth-request-groups'];
const HTML = { accept: 'text/html,application/xhtml+xml' };
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

let kc;
let realm;
let proxy; // between every gateway and Keycloak: can make Keycloak unreachable for all of them
/** {name, kind: 'gatehouse'|'oauth2-proxy', redis, url, alice: CookieJar, bob: response} */
const stacks = [];

function gatehouseConfig(issuer) {
  const gateway = realmClient('gateway');
  return {
    provider: {
      issuer, cluster: 'idp', clientId: gateway.clientId, clientSecret: gateway.secret, audiences: ['gateway', 'api'],
    },
    session: { keys: ['e2e-compat-cookie-key-0123456789abcdef'], secure: false, lifetimeSeconds: 12 * 3600 },
    publicPaths: [{ prefix: '/public/' }],
    // As oauth2-proxy (go-oidc checks `exp` with no allowance); gatehouse's default is 30 s.
    tokens: { leewaySeconds: 0 },
    // oauth2-proxy's --allowed-group=/admins, on every path it checks.
    rules: [{ name: 'admins', match: { paths: [{ prefix: '/' }] }, require: { groups: ['/admins'] } }],
  };
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  kc = await startKeycloak();
  realm = await createRealmCopy(kc, REALM);
  await setClientAttributes(kc, 'api', { 'access.token.lifespan': String(API_TOKEN_SECONDS) }, REALM);
  proxy = await startFaultProxy({ targetPort: kc.port });
  onStopAll(() => proxy.close());
  const echo = await startEcho();
  const gh = await startEnvoy({
    idpPort: proxy.port, echoPort: echo.port, wasmPath: WASM, concurrency: 2, filterConfig: gatehouseConfig(realm.issuer),
  });
  await waitForSignIn(gh.url);
  const redis = await startRedis();
  const cookie = await startOauth2ProxyStack({ kc, realm, idpPort: proxy.port, echoPort: echo.port });
  const redisStack = await startOauth2ProxyStack({ kc, realm, idpPort: proxy.port, echoPort: echo.port, redis });
  stacks.push(
    { name: 'gatehouse', kind: 'gatehouse', url: gh.url },
    { name: 'oauth2-proxy, cookie sessions', kind: 'oauth2-proxy', url: cookie.url },
    { name: 'oauth2-proxy, Redis sessions', kind: 'oauth2-proxy', redis: true, url: redisStack.url },
  );
  for (const s of stacks) {
    // eslint-disable-next-line no-await-in-loop
    const alice = await browse(`${s.url}/echo`, { username: 'alice', password: 'alice' });
    assert.equal(alice.response?.status, 200, `${s.name}: alice signs in (${alice.url})`);
    s.alice = alice.jar;
    s.cookieBytes = alice.jar.list().filter((c) => /^(_gatehouse|_oauth2_proxy)(\.\d+)?$/.test(c.name))
      .reduce((n, c) => n + c.name.length + 1 + c.value.length, 0);
    // eslint-disable-next-line no-await-in-loop
    s.bob = (await browse(`${s.url}/echo`, { username: 'bob', password: 'bob' })).response;
  }
});

after(async () => {
  if (kc) await deleteRealm(kc, REALM);
  await stopAll();
});

/** The decision class of an answer. */
function classOf(r) {
  if (r.status === 200 && typeof r.json?.path === 'string') return 'pass';
  if (r.status === 302 && (r.headers.location ?? '').startsWith(realm.authorization)) return '302 to Keycloak';
  if (r.status >= 500) return '5xx';
  return String(r.status);
}

const token = async (username) => (await passwordToken({ tokenUrl: realm.token, username, password: username })).access_token;
const withSession = (s, path = '/echo', headers = {}) => http(`${s.url}${path}`, { headers: { cookie: s.alice.header(`${s.url}${path}`), ...headers } });

/**
 * Each row: what is sent (`send(stack)` → the answer), the class wanted from gatehouse and from
 * oauth2-proxy (`redis` where its Redis sessions differ from its cookie sessions), `why` where
 * they differ, `identity` when the upstream must see the same identity
 * headers through every stack, `check(stack, answer)` for more.
 */
const ROWS = [
  {
    name: 'page navigation without a session',
    send: (s) => http(`${s.url}/echo`, { headers: HTML }),
    gatehouse: '302 to Keycloak',
    oauth2: '302 to Keycloak',
  },
  {
    name: 'XHR (Accept: application/json) without a session',
    send: (s) => http(`${s.url}/echo`, { headers: { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' } }),
    gatehouse: '401',
    oauth2: '302 to Keycloak',
    why: 'ext_authz sends oauth2-proxy only the headers of includeRequestHeadersInCheck (authorization, cookie), so it cannot tell an XHR from a page and redirects it; gatehouse answers API calls 401 with WWW-Authenticate (a script cannot follow a redirect to a login page)',
  },
  {
    name: 'API call (Accept: */*) without credentials',
    send: (s) => http(`${s.url}/echo`, { headers: { accept: '*/*' } }),
    gatehouse: '401',
    oauth2: '302 to Keycloak',
    why: 'as above: only page navigations are sent to the login',
  },
  {
    name: 'public path without credentials',
    send: (s) => http(`${s.url}/public/hello`),
    gatehouse: 'pass',
    oauth2: 'pass',
    check: (s, r) => { for (const h of IDENTITY) assert.equal(r.json.headers[h], undefined, `${s.name}: no ${h}`); },
  },
  {
    name: 'public path with a client-sent X-Auth-Request-Email',
    send: (s) => http(`${s.url}/public/hello`, { headers: { 'x-auth-request-email': 'ceo@evil.example' } }),
    gatehouse: 'pass',
    oauth2: 'pass',
    check: (s, r) => {
      // Deliberate: gatehouse removes identity headers from every request, checked or public.
      if (s.kind === 'gatehouse') assert.equal(r.json.headers['x-auth-request-email'], undefined, 'gatehouse strips it');
      else assert.equal(r.json.headers['x-auth-request-email'], 'ceo@evil.example', 'ext_authz is not run on public paths, so the forged header reaches the service');
    },
  },
  {
    name: "alice's session, page",
    send: (s) => withSession(s, '/echo', HTML),
    gatehouse: 'pass',
    oauth2: 'pass',
    identity: true,
    check: (s, r) => {
      const cookie = r.json.headers.cookie ?? '';
      // gatehouse keeps its cookie from the service; ext_authz passes oauth2-proxy's on.
      if (s.kind === 'gatehouse') assert.doesNotMatch(cookie, /_gatehouse/);
      else assert.match(cookie, /_oauth2_proxy=/);
    },
  },
  {
    name: "alice's session, XHR to /admin/",
    send: (s) => withSession(s, '/admin/users', { accept: 'application/json' }),
    gatehouse: 'pass',
    oauth2: 'pass',
    identity: true,
  },
  {
    name: "alice's session with client-sent X-Auth-Request-Groups and -Email",
    send: (s) => withSession(s, '/echo', { 'x-auth-request-groups': '/root', 'x-auth-request-email': 'ceo@evil.example' }),
    gatehouse: 'pass',
    oauth2: 'pass',
    identity: true,
    check: (s, r) => assert.equal(r.json.headers['x-auth-request-groups'], '/admins', `${s.name}: the forged value is replaced`),
  },
  {
    name: 'bob signs in (no group): the page he lands on',
    send: async (s) => s.bob,
    gatehouse: '403',
    oauth2: '403',
  },
  {
    name: "alice's bearer token (client api)",
    send: async (s) => http(`${s.url}/echo`, { headers: { authorization: `Bearer ${await token('alice')}` } }),
    gatehouse: 'pass',
    oauth2: 'pass',
    identity: true,
  },
  {
    name: "bob's bearer token",
    send: async (s) => http(`${s.url}/echo`, { headers: { authorization: `Bearer ${await token('bob')}` } }),
    gatehouse: '403',
    oauth2: '403',
  },
  {
    name: "alice's bearer token, expired",
    send: async (s) => {
      const t = await token('alice');
      await sleep((API_TOKEN_SECONDS + 1) * 1000);
      return http(`${s.url}/echo`, { headers: { authorization: `Bearer ${t}` } });
    },
    gatehouse: '401',
    oauth2: '302 to Keycloak',
    why: 'oauth2-proxy drops a bearer token it cannot verify and treats the request as having no session (a redirect, see the XHR row); gatehouse answers 401 with error="invalid_token" (RFC 6750)',
  },
  {
    name: "alice's bearer token, signature altered",
    send: async (s) => {
      const t = await token('alice');
      return http(`${s.url}/echo`, { headers: { authorization: `Bearer ${t.slice(0, -6)}AAAAAA` } });
    },
    gatehouse: '401',
    oauth2: '302 to Keycloak',
    why: 'as for the expired token',
  },
  {
    name: 'session cookie altered, page navigation',
    send: (s) => {
      const cookie = s.alice.list().filter((c) => /^(_gatehouse|_oauth2_proxy)/.test(c.name))
        .map((c) => `${c.name}=${c.value.slice(0, -8)}AAAAAAAA`).join('; ');
      return http(`${s.url}/echo`, { headers: { ...HTML, cookie } });
    },
    gatehouse: '302 to Keycloak',
    oauth2: '302 to Keycloak',
  },
  {
    name: "alice's session while Keycloak cannot be reached",
    send: async (s) => {
      proxy.set('down', /./, faults.reset());
      try { return await withSession(s, '/echo', HTML); } finally { proxy.clear('down'); }
    },
    gatehouse: 'pass',
    oauth2: 'pass',
    identity: true,
  },
  {
    name: 'a sign-in whose code is redeemed while Keycloak cannot be reached',
    send: async (s) => {
      const jar = new CookieJar();
      const atCallback = await browse(`${s.url}/echo`, {
        jar, username: 'alice', password: 'alice', stopAt: (u) => u.pathname === '/oauth2/callback',
      });
      assert.ok(atCallback.stopped, atCallback.url);
      proxy.set('down', /./, faults.reset());
      try {
        return await http(atCallback.url, { headers: { ...HTML, cookie: jar.header(atCallback.url) } });
      } finally { proxy.clear('down'); }
    },
    gatehouse: '5xx',
    oauth2: '403',
    why: 'oauth2-proxy fails the callback with a 500; Envoy\'s ext_authz takes an authorization server\'s 5xx as an error and denies with statusOnError (403 by default, empty body); gatehouse shows its "Sign-in unavailable" page (503, Retry-After) with a link to try again',
    check: (s, r) => {
      if (s.kind === 'gatehouse') {
        assert.equal(r.status, 503);
        assert.match(r.body, /Sign-in unavailable/);
        assert.equal(r.headers['retry-after'], '5');
      } else {
        assert.equal(r.body, '', 'Envoy\'s denial, not oauth2-proxy\'s page');
      }
    },
  },
  {
    name: 'after sign-out, the old session cookie',
    send: async (s) => {
      const before = s.alice.header(`${s.url}/echo`);
      await signOut(s);
      return http(`${s.url}/echo`, { headers: { ...HTML, cookie: before } });
    },
    // Stateless cookie sessions cannot be revoked: a copy of the cookie works until it expires.
    gatehouse: 'pass',
    oauth2: 'pass',
    redis: '302 to Keycloak',
    why: 'a Redis session lives on the server, so sign-out deletes it and a copy of its cookie stops working; gatehouse\'s sessions, like oauth2-proxy\'s cookie sessions, are sealed in the cookie and end at their expiry (the browser\'s copy is cleared)',
    check: (s) => assert.ok(!s.alice.list().some((c) => /^(_gatehouse|_oauth2_proxy)/.test(c.name)), `${s.name}: the browser's cookie was cleared`),
  },
  {
    name: 'after sign-out, the next sign-in',
    send: (s) => browse(`${s.url}/echo`, { jar: s.alice }).then((r) => r.response),
    // The answer is Keycloak's login form (gatehouse) or, through SSO, the page itself.
    gatehouse: '200 Keycloak login form',
    oauth2: 'pass',
    why: 'oauth2-proxy\'s /oauth2/sign_out clears its cookie only (unless --backend-logout-url is set); gatehouse\'s sign-out also ends the Keycloak session (RP-initiated logout), so the next sign-in asks for the password',
  },
  {
    name: 'a sign-out link followed from another site (no Origin, no Sec-Fetch-Site)',
    send: async (s) => {
      const jar = new CookieJar();
      const r = await browse(`${s.url}/echo`, { jar, username: 'alice', password: 'alice' });
      assert.equal(r.response?.status, 200);
      const url = `${s.url}/oauth2/sign_out`;
      return http(url, { headers: { ...HTML, cookie: jar.header(url) } });
    },
    gatehouse: '200 sign-out confirmation',
    oauth2: '302',
    why: 'gatehouse signs out only when this site asks (Sec-Fetch-Site or Origin); anything else gets a confirmation form, so another page cannot sign users out (logout CSRF); oauth2-proxy signs out on any GET',
  },
];

/** The user's sign-out as each stack offers it. */
async function signOut(s) {
  const url = `${s.url}/oauth2/sign_out`;
  if (s.kind === 'gatehouse') {
    const r = await http(url, { method: 'POST', headers: { origin: s.url, cookie: s.alice.header(url) } });
    assert.equal(r.status, 302);
    s.alice.store(url, r.headers['set-cookie']);
    await browse(new URL(r.headers.location, url).href, { jar: s.alice, stopAt: (u) => u.origin === s.url });
  } else {
    const r = await http(url, { headers: { cookie: s.alice.header(url) } });
    assert.equal(r.status, 302);
    s.alice.store(url, r.headers['set-cookie']);
  }
}

function classOfRow(r) {
  if (r?.status === 200 && /id="kc-form-login"/.test(r.body)) return '200 Keycloak login form';
  if (r?.status === 200 && /<form[^>]+method="post"/i.test(r.body) && /sign out/i.test(r.body)) return '200 sign-out confirmation';
  return classOf(r);
}

const table = [];

for (const row of ROWS) {
  test(`compat: ${row.name}`, { timeout: 60_000 }, async () => {
    const answers = [];
    for (const s of stacks) {
      // eslint-disable-next-line no-await-in-loop
      answers.push([s, await row.send(s)]);
    }
    const got = answers.map(([s, r]) => [s, classOfRow(r), r]);
    table.push([row.name, ...got.map(([, c]) => c)]);
    if (row.gatehouse !== row.oauth2 || (row.redis && row.redis !== row.gatehouse)) assert.ok(row.why, 'a difference needs its reason');
    for (const [s, c, r] of got) {
      const want = s.kind === 'gatehouse' ? row.gatehouse : ((s.redis && row.redis) || row.oauth2);
      assert.equal(c, want, `${s.name}: ${r?.status} ${r?.headers?.location ?? ''} ${(r?.body ?? '').slice(0, 120)}`);
      row.check?.(s, r);
    }
    if (row.identity) {
      const [[, , base], ...others] = got;
      for (const [s, , r] of others) {
        for (const h of IDENTITY) assert.equal(r.json.headers[h], base.json.headers[h], `${s.name}: ${h} as through gatehouse`);
      }
      assert.equal(base.json.headers['x-auth-request-email'], 'alice@example.com');
    }
  });
}

test('compat: the session cookie alice gets from each', () => {
  const sizes = stacks.map((s) => [s.name, s.cookieBytes]);
  console.log(`# session cookie (name=value, every chunk): ${sizes.map(([n, b]) => `${n} ${b} bytes`).join(', ')}`);
  const [gh, cookie] = sizes.map(([, b]) => b);
  assert.ok(gh > 0 && gh < cookie, 'smaller than oauth2-proxy\'s cookie session, which holds the tokens');
});

test('compat: the table', () => {
  const lines = [`| request | ${stacks.map((s) => s.name).join(' | ')} |`, `|---|${stacks.map(() => '---').join('|')}|`,
    ...table.map((r) => `| ${r.join(' | ')} |`)];
  console.log(lines.map((l) => `# ${l}`).join('\n'));
  assert.equal(table.length, ROWS.length);
});
