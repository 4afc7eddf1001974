// Issue 6 (1): identity-header spoofing and header injection through real Envoy. Client-sent
// identity headers never reach the upstream, in any spelling or number; claims holding CR/LF, NUL
// or non-ASCII arrive percent-encoded in one header line, never as a header of their own.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { stopAll, http, waitFor, startTokenBed } from '../lib/harness.mjs';
import { signJwt } from '../lib/keys.mjs';

const WASM = process.env.WASM;
let jwks;
let issuer;
let gateway;
const MANAGED = ['x-auth-request-user', 'x-auth-request-email', 'x-auth-request-preferred-username', 'x-auth-request-groups', 'x-auth-request-roles'];

const now = () => Math.floor(Date.now() / 1000);
const claims = (extra = {}) => ({
  iss: issuer, sub: 'bob-sub', aud: 'api', exp: now() + 300, iat: now(), email: 'bob@example.com',
  preferred_username: 'bob', groups: ['/users'], realm_access: { roles: ['reader'] }, ...extra,
});

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  ({ jwks, issuer, gateway } = await startTokenBed({
    wasmPath: WASM,
    filterConfig: (iss) => ({
      provider: { issuer: iss, cluster: 'idp', audiences: ['api'] },
      publicPaths: [{ prefix: '/public/' }],
      claimHeaders: [
        ...MANAGED.slice(0, 4).map((h, i) => ({ header: h, claim: ['sub', 'email', 'preferred_username', 'groups'][i] })),
        { header: 'x-auth-request-roles', claim: 'realm_access.roles' },
        { header: 'x-user-name', claim: 'name' },
      ],
    }),
  }));
  await waitFor(async () => (await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${await signJwt(jwks, claims())}` } })).status === 200,
    { timeoutMs: 20000, what: 'gatehouse to load keys' });
});

after(stopAll);

/** The headers the upstream received, as [name, value]; the echo joins repeated lines with ", ". */
const lines = (r) => Object.entries(r.json.headers ?? {});

/** Every spelling and number of a forged identity: case variants, `_` for `-`, and repeats. */
function spoofed() {
  const pairs = [];
  for (const h of [...MANAGED, 'x-user-name']) {
    const upper = h.toUpperCase();
    const title = h.replace(/(^|-)([a-z])/g, (_, d, c) => `${d}${c.toUpperCase()}`);
    for (const name of [h, upper, title, h.replaceAll('-', '_'), upper.replaceAll('-', '_')]) pairs.push([name, 'ceo@example.com']);
    pairs.push([h, 'admins'], [h, '/admins']);
  }
  return pairs;
}

for (const [what, path, withToken] of [
  ['with a valid token', '/echo', true],
  ['on a public path', '/public/x', false],
]) {
  test(`forged identity headers in every case, _ and duplicate form never arrive, ${what}`, async () => {
    const headers = [...spoofed()];
    if (withToken) headers.push(['authorization', `Bearer ${await signJwt(jwks, claims())}`]);
    const r = await http(`${gateway}${path}`, { headers });
    assert.equal(r.status, 200, r.body);
    const got = lines(r);
    assert.ok(got.length > 0, 'the echo lists the lines it received');
    for (const h of [...MANAGED, 'x-user-name']) {
      const forms = new Set([h, h.replaceAll('-', '_')]);
      const seen = got.filter(([n]) => forms.has(n));
      if (withToken && h !== 'x-user-name') {
        // Only gatehouse's value: a surviving forged line would be joined into it (", ").
        const want = { 'x-auth-request-user': 'bob-sub', 'x-auth-request-email': 'bob@example.com', 'x-auth-request-preferred-username': 'bob', 'x-auth-request-groups': '/users', 'x-auth-request-roles': 'reader' }[h];
        assert.deepEqual(seen, [[h, want]], h);
      } else {
        assert.deepEqual(seen, [], `${h} ${what}`);
      }
    }
  });
}

test('claims with CR/LF, NUL and non-ASCII arrive percent-encoded in one line each', async () => {
  const token = await signJwt(jwks, claims({
    email: 'bob@example.com\r\nx-injected: 1',
    preferred_username: 'bob\u0000admin',
    name: 'Jürgen Ça\u2028ß',
    groups: ['/users', '/a,b', '/x\ny'],
  }));
  const r = await http(`${gateway}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.body);
  const got = lines(r);
  assert.ok(!got.some(([n]) => n === 'x-injected'), 'no header injected');
  const one = (name) => {
    const v = got.filter(([n]) => n === name).map(([, x]) => x);
    assert.equal(v.length, 1, name);
    return v[0];
  };
  assert.equal(one('x-auth-request-email'), 'bob@example.com%0D%0Ax-injected: 1');
  assert.equal(one('x-auth-request-preferred-username'), 'bob%00admin');
  assert.equal(one('x-user-name'), 'J%C3%BCrgen %C3%87a%E2%80%A8%C3%9F');
  assert.equal(one('x-auth-request-groups'), '/users,/a%2Cb,/x%0Ay');
});
