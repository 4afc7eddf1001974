// Envoy's own jwt_authn test tokens (src/jwt/testdata/envoy-jwt-authn.json), run as they are
// through real Envoy with gatehouse, the keys given inline in the configuration.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import {
  REPO_ROOT, freePort, startEcho, startEnvoy, stopAll, http,
} from '../lib/harness.mjs';

const WASM = process.env.WASM;
const doc = JSON.parse(await readFile(join(REPO_ROOT, 'src', 'jwt', 'testdata', 'envoy-jwt-authn.json'), 'utf8'));

// Every claim path the accepting cases name becomes a header, so the echo shows what was mapped.
const claimPaths = [...new Set(doc.cases.flatMap((c) => Object.keys(c.claims ?? {})))];
const headerFor = (path) => `x-claim-${path.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;

let gateway;

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm');
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const envoy = await startEnvoy({
    idpPort: await freePort(), // never called: the keys are inline
    echoPort,
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer: doc.provider.issuer,
        cluster: 'idp',
        audiences: doc.provider.audiences,
        // Both key sets of the file; cases name which one they need, and the verdicts do not
        // change when the other set is present too.
        jwks: { keys: [...doc.jwks.keys, ...doc.es_jwks.keys] },
      },
      claimHeaders: claimPaths.map((p) => ({ header: headerFor(p), claim: p })),
    },
  });
  gateway = envoy.url;
});

after(stopAll);

for (const c of doc.cases) {
  test(`${c.name}: ${c.expect} (${c.why})`, async () => {
    const r = await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${c.token}` } });
    if (c.expect === 'accept') {
      assert.equal(r.status, 200, r.body);
      for (const [path, value] of Object.entries(c.claims ?? {})) {
        const want = Array.isArray(value) ? value.join(',') : String(value);
        assert.equal(r.json.headers[headerFor(path)], want, path);
      }
    } else {
      assert.equal(r.status, 401, r.body);
      assert.match(r.headers['www-authenticate'], /error="invalid_token"/);
    }
  });
}
