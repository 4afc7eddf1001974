// gatehouse's metrics in Envoy's stats: a known sequence of requests, then the exact counts.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  stopAll, http, browse, CookieJar, envoyStats, passwordToken, REPO_ROOT,
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

// The Grafana dashboard (istio/grafana/gatehouse.json; its schema is checked by make istio-go)
// names only series Envoy exports, with labels they carry or Prometheus' Kubernetes scrape adds.
test('the Grafana dashboard names only metrics and labels that exist', async () => {
  const prom = (await http(`${envoy.adminUrl}/stats/prometheus`)).body;
  const labelsOf = new Map(); // series name -> label names
  for (const line of prom.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? /.exec(line);
    if (!m) continue;
    const labels = labelsOf.get(m[1]) ?? new Set();
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(l[1]);
    labelsOf.set(m[1], labels);
  }
  const SCRAPE_LABELS = new Set(['namespace', 'pod']); // added by the Kubernetes scrape, not by Envoy
  const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'istio/grafana/gatehouse.json'), 'utf8'));
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
  assert.ok(exprs.length >= 10, `${exprs.length} queries`);
  const seen = new Set();
  for (const { panel, expr } of exprs) {
    const names = [...expr.matchAll(/\b(gatehouse_[a-z_]+)\b/g)].map((m) => m[1]);
    assert.ok(names.length > 0, `${panel}: ${expr} names no gatehouse metric`);
    const labels = new Set([...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((l) => l.trim())));
    for (const m of expr.matchAll(/\{([^}]*)\}/g)) for (const l of m[1].matchAll(/([a-zA-Z_]+)\s*=~?/g)) labels.add(l[1]);
    for (const name of names) {
      seen.add(name);
      assert.ok(labelsOf.has(name), `${panel}: ${name} is not in Envoy's /stats/prometheus`);
      for (const l of labels) {
        assert.ok(SCRAPE_LABELS.has(l) || labelsOf.get(name).has(l), `${panel}: ${name} has no label ${l}`);
      }
    }
  }
  // Every metric of the README's table has a panel.
  for (const m of ['requests_allowed', 'requests_public', 'requests_denied', 'logins_started', 'logins_completed', 'logins_failed',
    'sessions_refreshed', 'sessions_refresh_failed', 'logouts', 'token_cache_hits', 'token_cache_misses', 'discovery_fetches',
    'discovery_fetch_failures', 'jwks_fetches', 'jwks_fetch_failures', 'provider_errors_passing', 'provider_errors_configuration',
    'callout_ms_bucket', 'vm_memory_bytes']) {
    assert.ok(seen.has(`gatehouse_${m}`), `no panel shows gatehouse_${m}`);
  }
});
