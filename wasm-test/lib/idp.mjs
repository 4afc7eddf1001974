// The test IdP (idp/server.mjs, Keycloak-shaped): its endpoint URLs and its start as a child
// process.

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { REALM } from './realm.mjs';
import { keycloakUrls } from './keycloak.mjs';
import {
  DEFAULT_TIMEOUTS, WASM_TEST_DIR, runDirectory, startProcess,
} from './processes.mjs';
import { assertPortFree, checkPort, freePort } from './ports.mjs';
import { waitHttp } from './http.mjs';

/** Endpoint URLs of the test IdP on `idpPort` (Keycloak paths, and the two Keycloak has beside them). */
export function idpUrls(idpPort) {
  const urls = keycloakUrls(`http://127.0.0.1:${idpPort}`, REALM);
  const oidc = `${urls.issuer}/protocol/openid-connect`;
  return { ...urls, introspection: `${oidc}/token/introspect`, revocation: `${oidc}/revoke` };
}

/**
 * Start the test IdP (idp/server.mjs).
 * @param {object} [options]
 * @param {number} [options.port] default: a free port
 * @param {string} [options.keysFile] private JWK Set file (lib/keys.mjs writeKeysFile)
 * @param {number} [options.accessTokenTtl] seconds
 * @param {number} [options.refreshTokenTtl] seconds
 * @param {boolean} [options.rotateRefreshTokens]
 * @param {string} [options.backchannelLogoutUri]
 * @param {boolean} [options.bigUser] add the test-only user carol/carol with 300 groups
 *   (lib/realm.mjs BIG_USER; idp/server.mjs --big-user)
 * @param {number} [options.timeoutMs] readiness timeout (default 15 s)
 * @returns {Promise<{pid, port, url, issuer, urls, logFiles, stop, log}>}
 */
export async function startIdp({
  port, keysFile, accessTokenTtl, refreshTokenTtl, rotateRefreshTokens = false, backchannelLogoutUri,
  bigUser = false, timeoutMs = DEFAULT_TIMEOUTS.idp,
} = {}) {
  const p = port === undefined ? await freePort() : checkPort(port, 'port');
  await assertPortFree(p, 'IdP port');
  if (keysFile !== undefined && !existsSync(keysFile)) throw new Error(`startIdp: key file ${keysFile} does not exist`);
  const args = [join(WASM_TEST_DIR, 'idp', 'server.mjs'), '--port', String(p)];
  if (keysFile !== undefined) args.push('--keys', resolve(keysFile));
  if (accessTokenTtl !== undefined) args.push('--access-token-ttl', String(accessTokenTtl));
  if (refreshTokenTtl !== undefined) args.push('--refresh-token-ttl', String(refreshTokenTtl));
  if (rotateRefreshTokens) args.push('--rotate-refresh-tokens');
  if (backchannelLogoutUri !== undefined) args.push('--backchannel-logout-uri', backchannelLogoutUri);
  if (bigUser) args.push('--big-user');
  const urls = idpUrls(p);
  const handle = await startProcess({
    name: `idp:${p}`,
    command: process.execPath,
    args,
    logFile: join(runDirectory(), `idp-${p}.log`),
    timeoutMs,
    ready: () => waitHttp(urls.discovery, (r) => r.status === 200 && r.json?.issuer === urls.issuer),
  });
  return { ...handle, port: p, url: urls.origin, issuer: urls.issuer, urls };
}
