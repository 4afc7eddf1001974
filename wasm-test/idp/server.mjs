#!/usr/bin/env node
// Keycloak-shaped test IdP (realm "demo").
//
//   node idp/server.mjs --port 8180 [--host 127.0.0.1] [--keys private-jwks.json]
//                       [--access-token-ttl 300] [--refresh-token-ttl 1800]
//                       [--rotate-refresh-tokens] [--backchannel-logout-uri URL] [--big-user]
//                       [--quiet]
//
// --big-user adds the test-only user carol/carol with 300 groups (lib/realm.mjs BIG_USER), whose
// tokens are large enough to need the gateway's cookie chunking; alice and bob are unchanged.
//
// Prints "idp listening on http://127.0.0.1:<port>" once it accepts requests; then one access-log
// line per request (method, path without query, status, time) unless --quiet. Stops on
// SIGTERM/SIGINT.

import { parseArgs } from 'node:util';

import { readKeysFile } from '../lib/keys.mjs';
import { createIdp } from './provider.mjs';
import { BIG_USER, REALM_PATH } from '../lib/realm.mjs';

const USAGE = `usage: node idp/server.mjs --port PORT [--host 127.0.0.1] [--keys private-jwks.json]
         [--access-token-ttl SECONDS] [--refresh-token-ttl SECONDS] [--rotate-refresh-tokens]
         [--backchannel-logout-uri URL] [--big-user] [--quiet]`;

function fail(message) {
  console.error(`idp: ${message}\n${USAGE}`);
  process.exit(2);
}

function intOption(values, name, { min = 1, max = 10 * 365 * 86400 } = {}) {
  const raw = values[name];
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) fail(`--${name} must be an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) fail(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      keys: { type: 'string' },
      'access-token-ttl': { type: 'string' },
      'refresh-token-ttl': { type: 'string' },
      'rotate-refresh-tokens': { type: 'boolean', default: false },
      'backchannel-logout-uri': { type: 'string' },
      'big-user': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(err.message);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (values.port === undefined) fail('--port is required');
const port = intOption(values, 'port', { min: 0, max: 65535 });

let keys;
if (values.keys) {
  try {
    keys = await readKeysFile(values.keys);
  } catch (err) {
    fail(err.message);
  }
}

let idp;
try {
  idp = await createIdp({
    port,
    host: values.host,
    keys,
    accessTokenTtl: intOption(values, 'access-token-ttl'),
    refreshTokenTtl: intOption(values, 'refresh-token-ttl'),
    rotateRefreshTokens: values['rotate-refresh-tokens'],
    backchannelLogoutUri: values['backchannel-logout-uri'],
    bigUser: values['big-user'],
    log: values.quiet ? undefined : (line) => console.log(`idp: ${line}`),
  });
} catch (err) {
  console.error(`idp: cannot start: ${err.code === 'EADDRINUSE' ? `port ${port} on ${values.host} is already in use` : err.message}`);
  process.exit(1);
}

console.log(`idp listening on ${idp.url}`);
console.log(`idp: issuer ${idp.issuer}, discovery ${idp.url}${REALM_PATH}/.well-known/openid-configuration`);
if (values['big-user']) console.log(`idp: test-only user ${BIG_USER.username} with ${BIG_USER.groups.length} groups`);

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(0), 3000);
  force.unref();
  try {
    await idp.close();
  } finally {
    console.log(`idp: stopped (${signal})`);
    process.exit(0);
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
