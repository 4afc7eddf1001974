// Key material for tests that sign their own tokens (expired, wrong audience, other
// algorithms...): the fault proxy in front of Keycloak publishes the public halves beside
// Keycloak's own keys (lib/tokens.mjs keysProxy), so the filter verifies them as it verifies
// Keycloak's.
//
// A key set is a private JWK Set: {"keys": [<private JWK>, ...]}. Every key has `kid`, `alg` and
// `use`; the RS256 signing key comes first. writeKeysFile() keeps one in a file.

import { readFile, writeFile, rename } from 'node:fs/promises';

import {
  SignJWT,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
} from 'jose';

/** Signing algorithms generateKeys() knows, in the order they are written. */
export const SIGNING_ALGS = Object.freeze(['RS256', 'ES256', 'EdDSA']);

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

const GEN_OPTIONS = {
  RS256: ['RS256', { modulusLength: 2048, extractable: true }],
  ES256: ['ES256', { extractable: true }],
  EdDSA: ['EdDSA', { crv: 'Ed25519', extractable: true }],
  'RSA-OAEP': ['RSA-OAEP', { modulusLength: 2048, extractable: true }],
};

async function generateJwk(alg, use) {
  const spec = GEN_OPTIONS[alg];
  if (!spec) throw new TypeError(`unsupported key algorithm ${JSON.stringify(alg)}`);
  const { privateKey } = await generateKeyPair(...spec);
  const jwk = await exportJWK(privateKey);
  // Keycloak's kids are 43-character base64url strings; an RFC 7638 thumbprint has that shape.
  const kid = await calculateJwkThumbprint(jwk, 'sha256');
  return { kid, use, alg, ...jwk };
}

/**
 * Generate a private JWK Set.
 *
 * @param {object} [options]
 * @param {string[]} [options.algs] signing algorithms, default ['RS256', 'ES256', 'EdDSA'];
 *   RS256 is always included and always first.
 * @param {boolean} [options.encryptionKey] also add an RSA-OAEP `use: "enc"` key, as every Keycloak
 *   realm publishes one in its /certs (default true; relying parties must skip it).
 * @returns {Promise<{keys: object[]}>}
 */
export async function generateKeys({ algs = SIGNING_ALGS, encryptionKey = true } = {}) {
  const wanted = ['RS256', ...algs.filter((a) => a !== 'RS256')];
  const keys = [];
  for (const alg of new Set(wanted)) keys.push(await generateJwk(alg, 'sig'));
  if (encryptionKey) keys.push(await generateJwk('RSA-OAEP', 'enc'));
  return { keys };
}

/**
 * Generate a private JWK Set (see generateKeys) and write it to `path` (mode 0600, written
 * atomically). Returns the JWK Set.
 */
export async function writeKeysFile(path, options = {}) {
  const jwks = await generateKeys(options);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, path);
  return jwks;
}

/** Check that `jwks` is a usable private JWK Set; throws a TypeError naming the problem. */
export function validatePrivateJwks(jwks, source = 'JWK Set') {
  if (!jwks || typeof jwks !== 'object' || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
    throw new TypeError(`${source}: expected {"keys": [...]} with at least one key`);
  }
  const kids = new Set();
  jwks.keys.forEach((k, i) => {
    const where = `${source}: keys[${i}]`;
    if (!k || typeof k !== 'object') throw new TypeError(`${where} is not an object`);
    if (typeof k.kid !== 'string' || !k.kid) throw new TypeError(`${where} has no "kid"`);
    if (typeof k.alg !== 'string' || !k.alg) throw new TypeError(`${where} (kid ${k.kid}) has no "alg"`);
    if (kids.has(k.kid)) throw new TypeError(`${where}: duplicate kid ${k.kid}`);
    kids.add(k.kid);
    if (k.kty !== 'oct' && typeof k.d !== 'string') {
      throw new TypeError(`${where} (kid ${k.kid}) is not a private key (no "d")`);
    }
  });
  const first = jwks.keys[0];
  if (first.alg !== 'RS256' || (first.use && first.use !== 'sig')) {
    throw new TypeError(`${source}: the first key must be the RS256 signing key (got alg ${first.alg})`);
  }
  return jwks;
}

/** Read and validate a private JWK Set file written by writeKeysFile (or by hand). */
export async function readKeysFile(path) {
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read key file ${path}: ${err.message}`);
  }
  let jwks;
  try {
    jwks = JSON.parse(text);
  } catch (err) {
    throw new Error(`key file ${path} is not JSON: ${err.message}`);
  }
  return validatePrivateJwks(jwks, `key file ${path}`);
}

/** The public JWK Set for a private one (private members removed), as served at /certs. */
export function publicJwks(jwks) {
  return {
    keys: jwks.keys.map((k) => {
      const pub = { ...k };
      for (const m of PRIVATE_MEMBERS) delete pub[m];
      return pub;
    }),
  };
}

/**
 * Pick a key: by `kid` if given, else the first signing key with `alg`.
 * @returns {object} the private JWK
 */
export function findKey(jwks, { alg = 'RS256', kid } = {}) {
  const key = kid !== undefined
    ? jwks.keys.find((k) => k.kid === kid)
    : jwks.keys.find((k) => k.alg === alg && (k.use ?? 'sig') === 'sig');
  if (!key) {
    throw new Error(`no key with ${kid !== undefined ? `kid ${kid}` : `alg ${alg}`} in the JWK Set`);
  }
  return key;
}

/** Import a private signing key from the set, for use with jose (SignJWT etc.). */
export async function importSigningKey(jwks, { alg = 'RS256', kid } = {}) {
  const jwk = findKey(jwks, { alg, kid });
  return { key: await importJWK(jwk, jwk.alg), kid: jwk.kid, alg: jwk.alg };
}

/**
 * Sign a JWT with a key of the set. Nothing is added to `payload`: callers give every claim they
 * want (iss, aud, exp...), so expired or malformed tokens are easy to make.
 *
 * @param {object} jwks private JWK Set
 * @param {object} payload JWT claims
 * @param {object} [options]
 * @param {string} [options.alg] default RS256 (selects the key unless `kid` is given)
 * @param {string} [options.kid] key id to sign with; written to the header
 * @param {object} [options.header] extra/overriding protected header members (default typ "JWT")
 * @returns {Promise<string>} compact JWS
 */
export async function signJwt(jwks, payload, { alg = 'RS256', kid, header = {} } = {}) {
  const { key, kid: keyKid, alg: keyAlg } = await importSigningKey(jwks, { alg, kid });
  return new SignJWT(payload)
    .setProtectedHeader({ alg: keyAlg, typ: 'JWT', kid: keyKid, ...header })
    .sign(key);
}
