// Bearer tokens: the bed of the bearer-token tests (real Keycloak, echo and Envoy with gatehouse)
// and token grants (password, client credentials, refresh) on the provider's token endpoint.

import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';

import { publicJwks, writeKeysFile } from './keys.mjs';
import { onStopAll, runDirectory } from './processes.mjs';
import { checkPort } from './ports.mjs';
import { http } from './http.mjs';
import { keycloakUrls, startKeycloak } from './keycloak.mjs';
import { faults, startFaultProxy } from './faultproxy.mjs';
import { startEcho } from './echo.mjs';
import { startEnvoy } from './envoy.mjs';

/**
 * The bed of the bearer-token tests: real Keycloak (the run's), the echo service, and Envoy with
 * gatehouse configured by `filterConfig(issuer)`. Between Envoy and Keycloak sits the fault proxy,
 * adding the public keys of a fresh key set the test signs its own tokens with to the key set
 * Keycloak serves: tokens with every flaw the tests need, next to Keycloak's real ones.
 * @param {object} o
 * @param {string} o.wasmPath
 * @param {(issuer: string) => object} o.filterConfig
 * @returns {Promise<{jwks: object, issuer: string, idpPort: number, gateway: string, envoy: object}>}
 */
export async function startTokenBed({ wasmPath, filterConfig }) {
  const keysFile = join(mkdtempSync(join(runDirectory(), 'keys-')), 'keys.json');
  const jwks = await writeKeysFile(keysFile);
  const kc = await startKeycloak();
  const ours = publicJwks(jwks).keys;
  const proxy = await keysProxy(kc, () => ours);
  const echo = await startEcho();
  const envoy = await startEnvoy({
    idpPort: proxy.port, echoPort: echo.port, wasmPath, filterConfig: filterConfig(kc.issuer),
  });
  return { jwks, issuer: kc.issuer, idpPort: kc.port, gateway: envoy.url, envoy, proxy };
}

/**
 * The fault proxy in front of Keycloak (on `port`, default a free one), serving Keycloak's key set
 * with the public keys `extra()` returns (read at each fetch, so a test can rotate them) added:
 * tokens a test signs itself verify beside Keycloak's. This standing rule is named 'test keys'; a
 * fault a test sets later on the key set's path applies over it. Closed by stopAll().
 */
export async function keysProxy(kc, extra, { port } = {}) {
  const proxy = await startFaultProxy({ targetPort: kc.port, port });
  onStopAll(() => proxy.close());
  proxy.set('test keys', /\/protocol\/openid-connect\/certs$/, faults.rewriteJson((set) => ({ keys: [...set.keys, ...extra()] })));
  return proxy;
}

/**
 * POST to the token endpoint of the demo realm on the Keycloak at 127.0.0.1:`idpPort` (or to
 * `tokenUrl`, another realm's) with client_secret_basic (or client_secret_post with
 * `auth: 'post'`). Throws on a non-200 answer, with the OAuth error in the message.
 * @returns {Promise<object>} the token response
 */
export async function tokenRequest({
  idpPort, tokenUrl, params, clientId, clientSecret, auth = 'basic',
}) {
  const url = tokenUrl ?? keycloakUrls(`http://127.0.0.1:${checkPort(idpPort, 'idpPort')}`).token;
  const form = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null));
  const headers = {};
  if (auth === 'basic') {
    const enc = (s) => encodeURIComponent(s);
    headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;
  } else if (auth === 'post') {
    form.set('client_id', clientId);
    form.set('client_secret', clientSecret);
  } else {
    throw new TypeError(`auth must be "basic" or "post", got ${auth}`);
  }
  const res = await http(url, { method: 'POST', headers, body: form });
  if (res.status !== 200 || !res.json?.access_token) {
    const e = res.json?.error ? `${res.json.error}${res.json.error_description ? ` (${res.json.error_description})` : ''}` : res.body.slice(0, 300);
    const err = new Error(`token request (${params.grant_type}, client ${clientId}) failed: ${res.status} ${e}`);
    err.response = res;
    throw err;
  }
  return res.json;
}

/**
 * Keycloak password grant ("direct access grant"). `scope` defaults to "openid" (so an ID token
 * comes too); pass `scope: null` to send none.
 */
export function passwordToken({
  idpPort, tokenUrl, username, password, clientId = 'api', clientSecret = 'api-secret', scope = 'openid', auth,
}) {
  return tokenRequest({
    idpPort, tokenUrl, clientId, clientSecret, auth, params: { grant_type: 'password', username, password, scope },
  });
}

/** Client-credentials grant (service account "service-account-<clientId>"). */
export function clientCredentialsToken({
  idpPort, tokenUrl, clientId = 'api', clientSecret = 'api-secret', scope, auth,
} = {}) {
  return tokenRequest({
    idpPort, tokenUrl, clientId, clientSecret, auth, params: { grant_type: 'client_credentials', scope },
  });
}

/** Refresh-token grant. */
export function refreshTokenGrant({
  idpPort, tokenUrl, refreshToken, clientId = 'api', clientSecret = 'api-secret', scope, auth,
}) {
  return tokenRequest({
    idpPort, tokenUrl, clientId, clientSecret, auth, params: { grant_type: 'refresh_token', refresh_token: refreshToken, scope },
  });
}
