// Issue 6 (5): nothing secret in Envoy's logs. Every test file's `after(stopAll)` scans the logs of
// the Envoys it started (gatehouse at debug level, the harness's default) for every credential that
// went through http() or startEnvoy(): tokens, authorization codes, cookie values, client secrets,
// session keys. This file shows that the scan finds a credential when one is logged: Envoy's own
// HTTP debug log prints request headers.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { rmSync } from 'node:fs';

import { freePort, startEcho, startEnvoy, stopAll, http, runDirectory } from '../lib/harness.mjs';

after(stopAll);

test('a credential in an Envoy log fails the run, without printing it', async () => {
  const echo = await startEcho();
  const envoy = await startEnvoy({ idpPort: await freePort(), echoPort: echo.port, logLevel: 'debug' });
  const token = randomBytes(30).toString('base64url');
  const res = await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  const dir = runDirectory();
  const err = await stopAll().then(() => null, (e) => e);
  // stopAll() keeps a run's logs when it finds a leak; this one was on purpose.
  rmSync(dir, { recursive: true, force: true });
  assert.ok(err, 'stopAll() must fail when a credential was logged');
  assert.match(err.message, /credentials in Envoy's logs: Authorization credential at .*envoy-\d+\.(log|out):\d+/);
  assert.ok(!err.message.includes(token), 'the error names the credential, it does not print it');
});

test('gatehouse at debug level logs none of the credentials it handles', async () => {
  // The same scan guards every other test file (logins, refreshes, sign-outs, bearer tokens); here
  // a minimal run: a session key and a client secret, a token while the provider is unreachable.
  const echo = await startEcho();
  const envoy = await startEnvoy({
    idpPort: await freePort(),
    echoPort: echo.port,
    wasmPath: process.env.WASM,
    filterConfig: {
      provider: { issuer: 'http://127.0.0.1:1/realms/demo', cluster: 'idp', clientId: 'gateway', clientSecret: `secret-${randomBytes(12).toString('hex')}` },
      session: { keys: [randomBytes(32).toString('base64url')], secure: false },
    },
  });
  const token = `eyJhbGciOiJSUzI1NiJ9.${randomBytes(40).toString('base64url')}.${randomBytes(64).toString('base64url')}`;
  const r = await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 503, r.body);
  // A forged session cookie is refused (and logged as refused) without the keys.
  assert.equal((await http(`${envoy.url}/echo`, { headers: { cookie: `_gatehouse=v1.0.${randomBytes(40).toString('base64url')}` } })).status, 401);
  await stopAll();
});
