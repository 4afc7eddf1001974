// A request gatehouse holds for a callout stays held, body and all. Envoy's default never hands a
// Wasm filter the body of a request whose headers it paused; with the Wasm filter's
// `allow_on_headers_stop_iteration: true` (Envoy 1.35 and later) it does, and a filter that lets
// body data through then sends the request upstream undecided — unverified, with the headers the
// client forged. Here: a POST with a body and a bearer token whose `kid` the key set does not hold
// yet, so gatehouse holds it for a key-set fetch the fault proxy makes slow. On an Envoy with the
// knob and on one without, the service sees the request only after the decision: with the
// verified identity, or not at all. Trailers (HTTP/2) are held as the body is.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:http2';

import {
  startEcho, startEnvoy, stopAll, http, waitFor, envoyStats,
} from '../lib/harness.mjs';
import { startKeycloak } from '../lib/keycloak.mjs';
import { faults } from '../lib/faultproxy.mjs';
import { keysProxy } from '../lib/tokens.mjs';
import { generateKeys, signJwt, publicJwks } from '../lib/keys.mjs';

const WASM = process.env.WASM;
const SLOW_KEYS_MS = 1500;

let issuer;
let signing;
let served = [];
let proxy;
const gateways = {};

const now = () => Math.floor(Date.now() / 1000);
const claims = () => ({
  iss: issuer, sub: 'held-1', aud: 'api', exp: now() + 300, iat: now(), email: 'held@example.com',
});

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  const kc = await startKeycloak();
  issuer = kc.issuer;
  signing = await generateKeys({ algs: ['RS256'], encryptionKey: false });
  proxy = await keysProxy(kc, () => served);
  const echo = await startEcho();
  for (const knob of [false, true]) {
    // eslint-disable-next-line no-await-in-loop
    const envoy = await startEnvoy({
      idpPort: proxy.port,
      echoPort: echo.port,
      wasmPath: WASM,
      filterConfig: {
        provider: { issuer, cluster: 'idp', audiences: ['api'] },
        keys: { unknownKidMinIntervalSeconds: 1 },
        timeouts: { calloutMs: 5000 }, // longer than the slow key set
      },
      customize: (b) => {
        const hcm = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
        const wasm = hcm.http_filters.find((f) => f.name === 'envoy.filters.http.wasm');
        if (knob) wasm.typed_config.config.allow_on_headers_stop_iteration = true;
      },
    });
    gateways[knob ? 'knob' : 'default'] = envoy;
    // eslint-disable-next-line no-await-in-loop
    await waitFor(async () => (await http(`${envoy.url}/echo`, { headers: { authorization: 'Bearer a.b.c' } })).status === 401, { what: 'keys loaded' });
  }
});

after(stopAll);

for (const knob of ['default', 'knob']) {
  test(`${knob}: a POST held for a key fetch reaches the service only verified, with its body`, async () => {
    const envoy = gateways[knob];
    // A key the provider publishes only now, and a slow key set: the request waits SLOW_KEYS_MS.
    const kid = `late-${knob}`;
    const key = { ...publicJwks(signing).keys[0], kid };
    served = [key];
    // Over the standing 'test keys' rule: slow, and still with the test's keys added.
    const withOurs = faults.rewriteJson((set) => ({ keys: [...set.keys, ...served] }));
    proxy.set('slow keys', /\/protocol\/openid-connect\/certs$/, async (ctx) => {
      await ctx.sleep(SLOW_KEYS_MS);
      return withOurs(ctx);
    });
    try {
      const token = await signJwt(signing, claims(), { header: { kid } });
      const body = JSON.stringify({ order: 42, note: 'x'.repeat(20_000) });
      const t0 = Date.now();
      const r = await http(`${envoy.url}/echo`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-auth-request-email': 'forged@evil.example' },
        body,
      });
      assert.equal(r.status, 200, r.body);
      assert.ok(Date.now() - t0 >= SLOW_KEYS_MS - 100, 'it waited for the key set');
      assert.equal(r.json.headers['x-auth-request-email'], 'held@example.com', 'the verified identity, not the forged one');
      assert.equal(r.json.headers['x-auth-request-user'], 'held-1');

      // A kid that stays unknown: 401 after the fetch, and the service never sees the request.
      const stranger = await signJwt(signing, claims(), { header: { kid: `never-${knob}` } });
      const upstream = async () => (await envoyStats(envoy, 'cluster\\.echo\\.upstream_rq_total'))['cluster.echo.upstream_rq_total'];
      const before = await upstream();
      await new Promise((res) => { setTimeout(res, 1100); }); // past unknownKidMinIntervalSeconds
      const n = await http(`${envoy.url}/echo`, {
        method: 'POST',
        headers: { authorization: `Bearer ${stranger}`, 'x-auth-request-email': 'forged@evil.example' },
        body,
      });
      assert.equal(n.status, 401, n.body);
      assert.equal(n.json?.headers, undefined, 'answered by gatehouse, not the echo');
      assert.equal(await upstream(), before, 'nothing went to the service');
    } finally {
      proxy.clear('slow keys');
    }
  });
}

/** An HTTP/2 (h2c) POST with a body and trailers; the answer's status and JSON. */
function h2Post(url, path, headers, body, trailers) {
  return new Promise((resolve, reject) => {
    const session = connect(url);
    session.on('error', reject);
    const stream = session.request({ ':method': 'POST', ':path': path, ...headers }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers(trailers));
    let status;
    let data = '';
    stream.on('response', (h) => { status = h[':status']; });
    stream.setEncoding('utf8');
    stream.on('data', (c) => { data += c; });
    stream.on('end', () => {
      session.close();
      let json;
      try { json = JSON.parse(data); } catch { /* not JSON */ }
      resolve({ status, json, body: data });
    });
    stream.on('error', reject);
    stream.setTimeout(10_000, () => { stream.close(); reject(new Error('h2 request timed out')); });
    stream.end(body);
  });
}

test('knob: an HTTP/2 POST whose trailers arrive while it is held waits for the decision too', async () => {
  const envoy = gateways.knob;
  const kid = 'late-trailers';
  served = [{ ...publicJwks(signing).keys[0], kid }];
  const withOurs = faults.rewriteJson((set) => ({ keys: [...set.keys, ...served] }));
  proxy.set('slow keys', /\/protocol\/openid-connect\/certs$/, async (ctx) => {
    await ctx.sleep(SLOW_KEYS_MS);
    return withOurs(ctx);
  });
  try {
    await new Promise((res) => { setTimeout(res, 1100); }); // past unknownKidMinIntervalSeconds
    const token = await signJwt(signing, claims(), { header: { kid } });
    const t0 = Date.now();
    const r = await h2Post(envoy.url, '/echo', { authorization: `Bearer ${token}`, 'x-auth-request-email': 'forged@evil.example' }, 'payload', { 'x-trailer': 'end' });
    assert.equal(r.status, 200, r.body);
    assert.ok(Date.now() - t0 >= SLOW_KEYS_MS - 100, `it waited for the key set (${Date.now() - t0} ms)`);
    assert.equal(r.json.headers['x-auth-request-email'], 'held@example.com');
  } finally {
    proxy.clear('slow keys');
  }
});
