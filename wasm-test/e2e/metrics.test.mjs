// gatehouse's metrics in Envoy's stats: a known sequence of requests, then the exact counts.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  stopAll, http, browse, CookieJar, envoyStats, passwordToken,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor } from '../lib/keycloak.mjs';

const WASM = process.env.WASM;
let envoy;
let idpPort;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  const kc = await startKeycloak();
  idpPort = kc.port;
  envoy = await startGatewayFor(kc, {
    wasmPath: WASM,
    filterConfig: {
      provider: { issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'] },
      session: { keys: ['e2e-metrics-cookie-key-0123456789abcdef'], secure: false },
      publicPaths: [{ prefix: '/public/' }],
      rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
    },
  });
});

after(stopAll);

const wasm = async () => {
  const all = await envoyStats(envoy, '^wasmcustom\\.gatehouse\\.');
  return Object.fromEntries(Object.entries(all).map(([k, v]) => [k.replace('wasmcustom.gatehouse.', ''), v]));
};

// Each worker hands its counts to Envoy once a second (on its tick). Settled: two reads more than
// a tick apart agree.
const settled = async () => {
  let prev = JSON.stringify(await wasm());
  for (let i = 0; i < 10; i += 1) {
    await new Promise((r) => { setTimeout(r, 1300); });
    const cur = JSON.stringify(await wasm());
    if (cur === prev) return JSON.parse(cur);
    prev = cur;
  }
  throw new Error('gatehouse metrics did not settle');
};

test('counters show exactly what the flows did', async () => {
  const before = await settled();
  const token = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
  const bob = (await passwordToken({ idpPort, username: 'bob', password: 'bob' })).access_token;
  const bearer = (t) => ({ authorization: `Bearer ${t}` });
  // One connection per request: each may land on either worker; the counts are Envoy-wide.
  assert.equal((await http(`${envoy.url}/public/x`)).status, 200);
  assert.equal((await http(`${envoy.url}/echo`)).status, 401);
  assert.equal((await http(`${envoy.url}/echo`, { headers: bearer('garbage') })).status, 401);
  assert.equal((await http(`${envoy.url}/admin/`, { headers: bearer(bob) })).status, 403);
  const jar = new CookieJar();
  const login = await browse(`${envoy.url}/echo`, { jar, username: 'alice', password: 'alice' });
  assert.equal(login.response.status, 200);
  const out = await http(`${envoy.url}/oauth2/sign_out`, { headers: { 'sec-fetch-site': 'same-origin', cookie: jar.header(`${envoy.url}/oauth2/sign_out`) } });
  assert.equal(out.status, 302);
  const bad = await http(`${envoy.url}/oauth2/callback?state=x&code=y`, { headers: { accept: 'text/html' } });
  assert.equal(bad.status, 400);
  // The same token several times: verified once per worker at most, then from the cache.
  for (let i = 0; i < 6; i += 1) assert.equal((await http(`${envoy.url}/echo`, { headers: bearer(token) })).status, 200);

  const after = await settled();
  const delta = (name) => (after[name] ?? 0) - (before[name] ?? 0);
  // /stats shows the full names; the reason also becomes a tag (stats_tags in the bootstrap).
  assert.equal(delta('requests.public'), 1);
  assert.equal(delta('requests.denied.unauthenticated'), 1);
  assert.equal(delta('requests.denied.invalid_token'), 1);
  assert.equal(delta('requests.denied.group_required'), 1);
  assert.equal(delta('logins.started'), 1);
  assert.equal(delta('logins.completed'), 1);
  assert.equal(delta('logins.failed'), 1);
  assert.equal(delta('logouts'), 1);
  assert.equal(delta('requests.allowed'), 1 + 6, 'the login landing page and the six bearer requests');
  // garbage + bob + alice's token on each worker that saw it (1 or 2) are misses; the rest hits.
  const misses = delta('token_cache.misses');
  const hits = delta('token_cache.hits');
  assert.ok(misses >= 3 && misses <= 4, `misses ${misses}`);
  assert.equal(hits + misses, 2 + 6, `hits ${hits} + misses ${misses}`);
  assert.ok(after['discovery.fetches'] >= 1 && after['jwks.fetches'] >= 1, JSON.stringify(after));
  assert.equal(after['discovery.fetch_failures'], 0);
  assert.equal(after['jwks.fetch_failures'], 0);

  // Prometheus exposition, with the latency histogram of callouts.
  const prom = await http(`${envoy.adminUrl}/stats/prometheus`);
  assert.match(prom.body, /^# TYPE gatehouse_logins_completed counter$/m);
  assert.match(prom.body, /^gatehouse_logins_completed\{\} 1$/m);
  assert.match(prom.body, /^gatehouse_callout_ms_bucket\{le="[^"]+"\} \d+$/m);
  assert.match(prom.body, /^# TYPE gatehouse_requests_denied counter$/m);
  assert.match(prom.body, /^gatehouse_requests_denied\{reason="group_required"\} 1$/m);
  assert.match(prom.body, /^gatehouse_requests_denied\{reason="invalid_token"\} 1$/m);
});
