// The README's pictures of gatehouse's own pages (`make screenshots`): each page as real Envoy
// with gatehouse serves it — bob's 403 after a real Keycloak sign-in, a callback whose sign-in
// expired, the 503 when the provider cannot be reached, the sign-out question — rendered by
// Debian's Chromium and written to docs/pages/*.png.
//
//   node wasm-test/pages/screenshots.mjs [--out docs/pages]

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

import {
  REPO_ROOT, freePort, startEcho, startEnvoy, stopAll, http, browse,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor } from '../lib/keycloak.mjs';

const { values: opt } = parseArgs({
  options: { out: { type: 'string', default: join(REPO_ROOT, 'docs', 'pages') }, wasm: { type: 'string', default: process.env.WASM } },
});
assert.ok(opt.wasm, '--wasm or WASM: the built gatehouse.wasm');
const HTML = { accept: 'text/html,application/xhtml+xml' };

const filterConfig = (issuer) => ({
  provider: { issuer, cluster: 'idp', clientId: 'gateway', clientSecret: 'gateway-secret', audiences: ['api', 'gateway'] },
  session: { keys: ['screenshots-cookie-key-0123456789abcdef'], secure: false },
  rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
});

try {
  const kc = await startKeycloak();
  const gw = (await startGatewayFor(kc, { wasmPath: opt.wasm, filterConfig: filterConfig(kc.issuer) })).url;
  // A gateway whose provider is not there at all: every sign-in is unavailable.
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const dead = await startEnvoy({ idpPort: await freePort(), echoPort, wasmPath: opt.wasm, filterConfig: filterConfig(kc.issuer) });

  const bob = await browse(`${gw}/admin/reports`, { username: 'bob', password: 'bob' });
  const cookie = bob.jar.header(`${gw}/admin/reports`);
  const pages = {
    forbidden: bob.response,
    'sign-in-expired': await http(`${gw}/oauth2/callback?state=QUJDREVGR0hJSktMTU5PUFFSU1RVVldY&code=x`, { headers: HTML }),
    unavailable: await http(`${dead.url}/admin/reports`, { headers: HTML }),
    'sign-out': await http(`${gw}/oauth2/sign_out`, { headers: { ...HTML, cookie } }),
  };
  assert.equal(pages.forbidden.status, 403);
  assert.equal(pages['sign-in-expired'].status, 400);
  assert.equal(pages.unavailable.status, 503);
  assert.equal(pages['sign-out'].status, 200);

  mkdirSync(opt.out, { recursive: true });
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const shoot = async (name, body, colorScheme = 'light') => {
      const page = await browser.newPage({ viewport: { width: 640, height: 420 }, colorScheme });
      await page.setContent(body);
      const file = join(opt.out, `${name}.png`);
      await page.screenshot({ path: file });
      await page.close();
      console.log(`wrote ${file}`);
    };
    for (const [name, r] of Object.entries(pages)) await shoot(name, r.body); // eslint-disable-line no-await-in-loop
    await shoot('forbidden-dark', pages.forbidden.body, 'dark');
  } finally {
    await browser.close();
  }
} finally {
  await stopAll();
}
