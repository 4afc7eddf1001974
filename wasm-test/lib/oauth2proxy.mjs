// The stack gatehouse replaces (seeds 000 and 002), in the test bed: oauth2-proxy (built by `make
// deps` from the Go module proxy) behind Envoy's ext_authz HTTP filter, configured as istiod
// renders an `envoyExtAuthzHttp` provider for an AuthorizationPolicy with action CUSTOM, with
// cookie sessions or with Redis (Debian's redis-server).
//
//   const redis = await startRedis();
//   const stack = await startOauth2ProxyStack({ kc, echoPort, redis });   // stack.url: the gateway
//
// Everything listens on 127.0.0.1 only.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

import { REPO_ROOT, runDirectory, startProcess } from './processes.mjs';
import { assertPortFree, freePort } from './ports.mjs';
import { waitHttp } from './http.mjs';
import { noteSecret } from './credential-scan.mjs';
import { realmClient } from './keycloak.mjs';
import { staticCluster, startEnvoy } from './envoy.mjs';

export const OAUTH2_PROXY_VERSION = 'v7.15.6';
export const OAUTH2_PROXY_BIN = join(REPO_ROOT, '.tools', 'bin', `oauth2-proxy-${OAUTH2_PROXY_VERSION}`);
export const REDIS_BIN = '/usr/bin/redis-server';

/** The ext_authz cluster's name, as istiod names the provider's service (`outbound|port||host`). */
export const EXT_AUTHZ_CLUSTER = 'outbound|4180||oauth2-proxy.oauth2-proxy.svc.cluster.local';

/** Checks that `make deps` built oauth2-proxy and installed Redis. */
export function assertStackInstalled() {
  for (const [path, what] of [[OAUTH2_PROXY_BIN, `oauth2-proxy ${OAUTH2_PROXY_VERSION}`], [REDIS_BIN, 'redis-server']]) {
    if (!existsSync(path)) throw new Error(`${what} is missing (${path}): run make deps`);
  }
}

/** Answers PING with +PONG within a second: Redis is ready. */
function redisPing(port) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok) => { clearTimeout(t); s.destroy(); resolve(ok); };
    const t = setTimeout(() => done(false), 1000);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (b) => { got += b; if (got.includes('\r\n')) done(got.startsWith('+PONG')); });
    s.on('error', () => done(false));
  });
}

/**
 * Redis on a free 127.0.0.1 port, in memory only (no snapshots, no append-only file).
 * @returns {Promise<{pid, port, url, stop, logFiles}>}
 */
export async function startRedis({ port } = {}) {
  assertStackInstalled();
  const p = port ?? await freePort();
  await assertPortFree(p, 'Redis port');
  const handle = await startProcess({
    name: `redis:${p}`,
    command: REDIS_BIN,
    args: ['--bind', '127.0.0.1', '--port', String(p), '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--loglevel', 'warning'],
    logFile: join(runDirectory(), `redis-${p}.log`),
    timeoutMs: 10_000,
    ready: () => redisPing(p),
  });
  return { ...handle, port: p, url: `redis://127.0.0.1:${p}` };
}

/**
 * oauth2-proxy as seed 002 configures it, in front of realm `demo` of Keycloak `kc`: the generic
 * OIDC provider with the `gateway` client (PKCE S256, which the client requires), allowed group
 * `/admins` (Keycloak sends full group paths), `X-Auth-Request-*` headers, a 12-hour cookie on
 * plain http with SameSite=Lax, no provider button, a static 200 "upstream" (Envoy's ext_authz
 * forwards the request itself once oauth2-proxy answers 200), and bearer tokens of the `api`
 * client accepted (`--skip-jwt-bearer-tokens`). `redis`: a startRedis() handle for Redis
 * sessions (seed 000) instead of cookie sessions.
 * @param {object} o
 * @param {object} o.kc a startKeycloak() handle
 * @param {string} o.gatewayOrigin where browsers reach the gateway (its callback is there)
 * @param {object} [o.realm] keycloakUrls() of the realm (default: demo)
 * @param {number} [o.idpPort] where oauth2-proxy's own calls to Keycloak go (the token endpoint
 *   and the key set; a fault proxy's port, say): then discovery is skipped and those URLs are
 *   given, while browsers still go to Keycloak itself
 * @param {object} [o.redis]
 * @param {string[]} [o.extraArgs]
 * @returns {Promise<{pid, port, url, cookieSecret, stop, logFiles}>}
 */
export async function startOauth2Proxy({
  kc, gatewayOrigin, realm = kc.urls, idpPort, redis, extraArgs = [], port,
}) {
  assertStackInstalled();
  const p = port ?? await freePort();
  await assertPortFree(p, 'oauth2-proxy port');
  const gateway = realmClient('gateway');
  const cookieSecret = randomBytes(32).toString('base64url');
  noteSecret(cookieSecret, 'oauth2-proxy cookie secret');
  noteSecret(gateway.secret, 'gateway client secret');
  const args = [
    `--http-address=127.0.0.1:${p}`,
    '--provider=oidc',
    `--oidc-issuer-url=${realm.issuer}`,
    ...(idpPort === undefined ? [] : [
      '--skip-oidc-discovery',
      `--login-url=${realm.authorization}`,
      `--redeem-url=${realm.token.replace(kc.url, `http://127.0.0.1:${idpPort}`)}`,
      `--oidc-jwks-url=${realm.certs.replace(kc.url, `http://127.0.0.1:${idpPort}`)}`,
    ]),
    `--client-id=${gateway.clientId}`,
    `--client-secret=${gateway.secret}`,
    '--code-challenge-method=S256',
    `--redirect-url=${gatewayOrigin}/oauth2/callback`,
    // The seed asks for "groups" too; Keycloak's demo realm puts them in by the client's mapper.
    '--scope=openid email profile',
    '--email-domain=*',
    '--allowed-group=/admins',
    '--upstream=static://200',
    '--set-xauthrequest',
    `--cookie-secret=${cookieSecret}`,
    '--cookie-name=_oauth2_proxy',
    '--cookie-secure=false',
    '--cookie-samesite=lax',
    '--cookie-expire=12h',
    '--whitelist-domain=127.0.0.1:*',
    '--skip-provider-button=true',
    '--skip-jwt-bearer-tokens=true',
    // Tokens of the API client (audience `api`), as gatehouse's provider.audiences accepts them.
    `--extra-jwt-issuers=${realm.issuer}=api`,
    '--silence-ping-logging=true',
    ...(redis ? ['--session-store-type=redis', `--redis-connection-url=${redis.url}`] : []),
    ...extraArgs,
  ];
  const handle = await startProcess({
    name: `oauth2-proxy:${p}`,
    command: OAUTH2_PROXY_BIN,
    args,
    logFile: join(runDirectory(), `oauth2-proxy-${p}.log`),
    timeoutMs: 30_000,
    ready: () => waitHttp(`http://127.0.0.1:${p}/ping`, (r) => r.status === 200, 1_000),
  });
  return { ...handle, port: p, url: `http://127.0.0.1:${p}`, cookieSecret };
}

const exact = (names) => ({ patterns: names.map((n) => ({ exact: n, ignore_case: true })) });

/**
 * The Envoy filters istiod renders for an `envoyExtAuthzHttp` provider named `oauth2-proxy` and
 * an AuthorizationPolicy CUSTOM on every path but `publicPrefixes` (`to.operation.notPaths`),
 * Istio 1.30: an RBAC filter whose shadow rule only marks the requests to check, then ext_authz
 * gated on that mark. The provider is seed 002's: `includeRequestHeadersInCheck` authorization,
 * cookie, x-auth-request-groups; `headersToUpstreamOnAllow` the identity headers; and
 * `headersToDownstreamOnDeny` content-type, set-cookie.
 */
export function extAuthzFilters({ publicPrefixes = [] } = {}) {
  const policy = 'istio-ext-authz-oauth2-proxy-ns[istio-system]-policy[ext-authz]-rule[0]';
  const permission = publicPrefixes.length
    ? { not_rule: { or_rules: { rules: publicPrefixes.map((prefix) => ({ url_path: { path: { prefix } } })) } } }
    : { any: true };
  return [
    {
      name: 'envoy.filters.http.rbac',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC',
        shadow_rules_stat_prefix: 'istio_ext_authz_',
        shadow_rules: {
          action: 'DENY',
          policies: {
            [policy]: {
              permissions: [{ and_rules: { rules: [permission] } }],
              principals: [{ and_ids: { ids: [{ any: true }] } }],
            },
          },
        },
      },
    },
    {
      name: 'envoy.filters.http.ext_authz',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
        transport_api_version: 'V3',
        filter_enabled_metadata: {
          filter: 'envoy.filters.http.rbac',
          path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }],
          value: { string_match: { prefix: 'istio-ext-authz-oauth2-proxy' } },
        },
        allowed_headers: exact(['authorization', 'cookie', 'x-auth-request-groups']),
        http_service: {
          server_uri: { uri: 'http://oauth2-proxy.oauth2-proxy.svc.cluster.local', cluster: EXT_AUTHZ_CLUSTER, timeout: '600s' },
          authorization_response: {
            allowed_upstream_headers: exact([
              'authorization', 'path', 'x-auth-request-user', 'x-auth-request-email',
              'x-auth-request-preferred-username', 'x-auth-request-groups',
            ]),
            allowed_client_headers: exact(['content-type', 'set-cookie']),
          },
        },
      },
    },
  ];
}

/**
 * An Envoy whose ext_authz filter (extAuthzFilters) asks the oauth2-proxy on `proxyPort` about
 * every request but `publicPrefixes`, in front of the echo service on `echoPort`, with
 * `concurrency` workers; `customize` edits its bootstrap further (routes answering 200 directly).
 */
export function startExtAuthzEnvoy({
  proxyPort, kc, echoPort, publicPrefixes = ['/public/'], concurrency = 2, listenPort, logLevel, customize,
}) {
  return startEnvoy({
    listenPort,
    idpPort: kc.port,
    echoPort,
    concurrency,
    logLevel,
    customize: (b) => {
      const hcm = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      hcm.http_filters.splice(hcm.http_filters.length - 1, 0, ...extAuthzFilters({ publicPrefixes }));
      b.static_resources.clusters.push(staticCluster(EXT_AUTHZ_CLUSTER, proxyPort));
      return customize ? customize(b) ?? b : b;
    },
  });
}

/**
 * The seeds' gateway: oauth2-proxy (startOauth2Proxy(); cookie sessions, or Redis with `redis`)
 * and an Envoy in front of it (startExtAuthzEnvoy()).
 * @returns {Promise<{url, envoy, proxy}>}
 */
export async function startOauth2ProxyStack({
  kc, realm, idpPort, redis, extraArgs, listenPort, ...envoyOptions
}) {
  const lp = listenPort ?? await freePort();
  const gatewayOrigin = `http://127.0.0.1:${lp}`;
  const proxy = await startOauth2Proxy({
    kc, realm, idpPort, gatewayOrigin, redis, extraArgs,
  });
  const envoy = await startExtAuthzEnvoy({
    ...envoyOptions, kc, proxyPort: proxy.port, listenPort: lp,
  });
  return { url: gatewayOrigin, envoy, proxy };
}
