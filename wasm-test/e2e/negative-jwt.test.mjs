// Issue 6 (1): bearer-token attacks through real Envoy (RFC 8725), one test per attack. Each asserts
// the exact answer (401 with the reason in the Bearer challenge, or 400), that the upstream was
// never reached (no echo body, no x-envoy-upstream-service-time), and that no cookie was set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, sign } from 'node:crypto';

import {
  stopAll, http, passwordToken, waitFor, startTokenBed,
} from '../lib/harness.mjs';
import { signJwt, publicJwks, generateKeys } from '../lib/keys.mjs';

const WASM = process.env.WASM;
let jwks;
let gateway;
let issuer;

const now = () => Math.floor(Date.now() / 1000);
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function claims(extra = {}) {
  return {
    iss: issuer, sub: 'alice-sub', aud: 'account', azp: 'api', typ: 'Bearer',
    exp: now() + 300, iat: now(), jti: `t-${Math.random()}`, email: 'alice@example.com',
    preferred_username: 'alice', groups: ['/users'], ...extra,
  };
}

const call = (token, headers = {}) => http(`${gateway}/echo`, {
  headers: token === undefined ? headers : { ...headers, authorization: `Bearer ${token}` },
});

/** Refused by gatehouse: the status, the reason, and nothing from the upstream, no cookie. */
function assertRefused(r, status, reason) {
  assert.equal(r.status, status, r.body);
  const error = status === 400 ? 'invalid_request' : 'invalid_token';
  assert.equal(r.headers['www-authenticate'], `Bearer realm="gatehouse", error="${error}", error_description="${reason}"`);
  assert.equal(r.json?.error, error);
  assert.equal(r.json?.path, undefined, "the answer is gatehouse's, not the echo's");
  assert.equal(r.headers['x-envoy-upstream-service-time'], undefined, 'the upstream was not reached');
  assert.equal(r.headers['set-cookie'], undefined, 'no cookie is set');
}

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  let idpPort;
  ({ jwks, issuer, gateway, idpPort } = await startTokenBed({
    wasmPath: WASM,
    filterConfig: (iss) => ({ provider: { issuer: iss, cluster: 'idp', audiences: ['api'] } }),
  }));
  const token = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
  await waitFor(async () => (await call(token)).status === 200, { timeoutMs: 20000, what: 'gatehouse to load keys' });
});

after(stopAll);

const rsaKid = () => publicJwks(jwks).keys.find((k) => k.alg === 'RS256').kid;

/** RS256 over any header (jose refuses to sign some on purpose, e.g. an unknown `crit`). */
function signRaw(header, payload) {
  const key = createPrivateKey({ key: jwks.keys.find((k) => k.alg === 'RS256'), format: 'jwk' });
  const input = `${b64({ alg: 'RS256', kid: rsaKid(), ...header })}.${b64(payload)}`;
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

test('a valid token reaches the upstream (the control for every case below)', async () => {
  const r = await call(await signJwt(jwks, claims()));
  assert.equal(r.status, 200);
  assert.equal(r.json.path, '/echo');
  assert.ok(r.headers['x-envoy-upstream-service-time'] !== undefined);
});

for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
  test(`alg "${alg}", unsigned`, async () => {
    assertRefused(await call(`${b64({ alg, typ: 'JWT' })}.${b64(claims())}.`), 401, 'algorithm not allowed');
  });
}

test('HS256 keyed with the RSA public key (as JWK JSON and as its modulus)', async () => {
  const pub = publicJwks(jwks).keys.find((k) => k.alg === 'RS256');
  const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: pub.kid })}.${b64(claims())}`;
  for (const secret of [JSON.stringify(pub), Buffer.from(pub.n, 'base64url')]) {
    assertRefused(await call(`${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`), 401, 'algorithm not allowed');
  }
});

test('a kid naming a key of another type (ES256 signature, RSA kid)', async () => {
  assertRefused(await call(await signJwt(jwks, claims(), { alg: 'ES256', header: { kid: rsaKid() } })), 401, 'algorithm does not match the key');
});

test('jku, x5u and an embedded jwk are ignored: an attacker key they point to does not verify', async () => {
  const attacker = await generateKeys({ algs: ['RS256'], encryptionKey: false });
  const attackerPub = publicJwks(attacker).keys[0];
  const header = { kid: rsaKid(), jku: 'http://127.0.0.1:1/jwks', x5u: 'http://127.0.0.1:1/cert', jwk: attackerPub };
  assertRefused(await call(await signJwt(attacker, claims(), { header })), 401, 'invalid signature');
  // With the attacker's own kid (not in the set): an unknown key, never the embedded one.
  assertRefused(await call(await signJwt(attacker, claims(), { header: { jwk: attackerPub } })), 401, 'unknown key id');
});

test('an unknown critical header', async () => {
  assert.equal((await call(signRaw({}, claims()))).status, 200, 'the same signing, without crit, is accepted');
  assertRefused(await call(signRaw({ crit: ['exp-policy'], 'exp-policy': 1 }, claims())), 401, 'unsupported critical header');
});

test('the signature stripped', async () => {
  const [h, p] = (await signJwt(jwks, claims())).split('.');
  assertRefused(await call(`${h}.${p}.`), 401, 'invalid signature');
});

test("a payload swapped into another token's signature", async () => {
  const mine = await signJwt(jwks, claims({ groups: ['/users'] }));
  const admin = await signJwt(jwks, claims({ groups: ['/admins'] }));
  const [h, , s] = mine.split('.');
  assertRefused(await call(`${h}.${admin.split('.')[1]}.${s}`), 401, 'invalid signature');
});

test('exp, nbf and iat at the edges of the 30 s leeway', async () => {
  // Inside the leeway (by 5 s, for the clock and the request's own time): accepted.
  for (const c of [{ exp: now() - 25 }, { nbf: now() + 25 }, { iat: now() + 25 }]) {
    assert.equal((await call(await signJwt(jwks, claims(c)))).status, 200, JSON.stringify(c));
  }
  // Outside it: refused, each with its reason.
  assertRefused(await call(await signJwt(jwks, claims({ exp: now() - 35, iat: now() - 600 }))), 401, 'token expired');
  assertRefused(await call(await signJwt(jwks, claims({ nbf: now() + 35 }))), 401, 'token not yet valid');
  assertRefused(await call(await signJwt(jwks, claims({ iat: now() + 35 }))), 401, 'token issued in the future');
  const { exp, ...noExp } = claims();
  assert.ok(exp);
  assertRefused(await call(await signJwt(jwks, noExp)), 401, 'token has no expiry');
});

test('issuer variants: case, trailing slash, an array, another realm', async () => {
  for (const iss of [issuer.toUpperCase(), issuer.replace('http://', 'HTTP://'), `${issuer}/`, [issuer], issuer.replace('/demo', '/other'), '']) {
    assertRefused(await call(await signJwt(jwks, claims({ iss }))), 401, 'issuer not accepted');
  }
});

test('audience variants: none accepted in an array, case, trailing slash, azp elsewhere', async () => {
  for (const aud of [['account', 'other'], 'API', 'api/', ['Api'], []]) {
    assertRefused(await call(await signJwt(jwks, claims({ aud, azp: 'other' }))), 401, 'audience not accepted');
  }
  // azp alone can carry the audience (Keycloak's access tokens); an accepted aud in an array does too.
  assert.equal((await call(await signJwt(jwks, claims({ aud: ['other', 'api'], azp: 'x' })))).status, 200);
});

test('JWE (five parts) and a nested JWT as the payload', async () => {
  const jwe = `${b64({ alg: 'RSA-OAEP', enc: 'A256GCM' })}.${b64('k')}.${b64('iv')}.${b64('ct')}.${b64('tag')}`;
  assertRefused(await call(jwe), 401, 'encrypted tokens are not accepted');
  // Properly signed, but its payload is a JWT rather than claims: not a token gatehouse takes.
  const nested = signRaw({ cty: 'JWT' }, await signJwt(jwks, claims()));
  assertRefused(await call(nested), 401, 'malformed token');
});

test('huge tokens and headers', async () => {
  assertRefused(await call(await signJwt(jwks, claims({ pad: 'x'.repeat(40000) }))), 401, 'token too large');
  const header = { kid: rsaKid(), pad: 'y'.repeat(40000) };
  assertRefused(await call(await signJwt(jwks, claims(), { header })), 401, 'token too large');
  // Past Envoy's own header limit (60 KiB by default): Envoy answers before any filter runs.
  const r = await call(`a.${'b'.repeat(70000)}.c`);
  assert.equal(r.status, 431);
  assert.equal(r.json?.path, undefined);
});

test('two Authorization headers are refused', async () => {
  // Envoy joins repeated Authorization lines into one value ("Bearer a,Bearer b"), which is not a
  // token (gatehouse answers 400 itself if a proxy passes both on).
  const t = await signJwt(jwks, claims());
  const r = await http(`${gateway}/echo`, { headers: [['authorization', `Bearer ${t}`], ['authorization', 'Bearer other']] });
  assertRefused(r, 401, 'malformed token');
});
