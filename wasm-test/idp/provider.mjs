// A Keycloak-shaped OpenID Provider for the test bed, built on oidc-provider (OpenID Certified).
//
// It looks like realm "demo" of a Keycloak (>= 17, no /auth prefix) from the outside: the same
// issuer shape and endpoint paths, the same token and response shapes (JWT access tokens with
// realm_access/resource_access/groups, Keycloak's token-response fields), the same login form
// element ids, and the same defaults (5-minute access tokens, refresh tokens for every
// authorization-code and password login, PKCE optional for confidential clients, RS256).
//
// What oidc-provider does not do the Keycloak way is done here, and marked "Keycloak:" below:
//  - the password grant (Keycloak's "direct access grants") is registered as a custom grant type;
//  - access tokens are JWTs for audience "account" through a resource-indicator default, reshaped
//    by the JWT customizer (typ "JWT" header, azp, typ "Bearer", Keycloak claims);
//  - userinfo, token introspection and token revocation are answered here, because oidc-provider
//    keeps no server-side record of JWT access tokens (it only serves opaque ones there);
//  - redirect URIs on any loopback port are accepted for the registered callback path;
//  - consent is implied (Keycloak's "Consent required: off"), so no consent page exists.

import { createServer } from 'node:http';
import { randomBytes, randomUUID, createHash, timingSafeEqual, createPublicKey } from 'node:crypto';

import { createLocalJWKSet, jwtVerify } from 'jose';

import {
  BIG_USER,
  CLIENTS,
  DEFAULT_ACCOUNT_ROLES,
  DEFAULT_REALM_ROLES,
  REALM,
  REALM_PATH,
  SERVICE_ACCOUNTS,
  findUserBySub,
  findUserByUsername,
  realmRolesOf,
} from '../lib/realm.mjs';
import { generateKeys, publicJwks, validatePrivateJwks } from '../lib/keys.mjs';
import { createMemoryStore } from './adapter.mjs';
import * as pages from './pages.mjs';

// oidc-provider 9 prints "Unsupported runtime" on any Node.js older than 22 LTS. It runs on the
// Node.js 20 LTS we have here as long as crypto.hash() exists (20.12+), which is all it needs that
// 20 lacks; keep the warning out of every test log in that case, show it otherwise.
async function importOidcProvider() {
  const { warn } = console;
  const [major, minor] = process.versions.node.split('.').map(Number);
  const quiet = major > 20 || (major === 20 && minor >= 12);
  console.warn = (...args) => {
    if (quiet && typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
    warn(...args);
  };
  try {
    return await import('oidc-provider');
  } finally {
    console.warn = warn;
  }
}

const { default: Provider, errors } = await importOidcProvider();

export const OIDC_PATH = '/protocol/openid-connect';
const LOGIN_ACTIONS = '/login-actions/authenticate/';

/** Internal resource indicator of Keycloak's implicit audience ("account"). */
const ACCOUNT_RESOURCE = `urn:gatehouse:test-idp:${REALM}:account`;

/** Keycloak's default client scopes: applied to every token whether requested or not. */
const DEFAULT_CLIENT_SCOPES = ['profile', 'email'];
const KNOWN_SCOPES = [
  'openid', 'offline_access', 'profile', 'email', 'address', 'phone', 'roles', 'web-origins',
  'basic', 'microprofile-jwt',
]; // (Keycloak's "acr" client scope is left out: oidc-provider reserves "acr" as a claim name)

const PROFILE_CLAIMS = [
  'name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username', 'profile',
  'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
];

const MAX_FORM_BYTES = 64 * 1024;
const BODY_TIMEOUT_MS = 10_000;

export const DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  accessTokenTtl: 300, // Keycloak: Access Token Lifespan 5 min
  refreshTokenTtl: 1800, // Keycloak: SSO Session Idle 30 min (refresh_expires_in)
  sessionTtl: 36000, // Keycloak: SSO Session Max 10 h
  loginTtl: 1800, // Keycloak: Login timeout 30 min
  codeTtl: 60, // Keycloak: Client login timeout 1 min
});

function kcScope(scope) {
  const out = [];
  for (const s of `${scope ?? ''}`.split(' ')) if (s && !out.includes(s)) out.push(s);
  for (const s of DEFAULT_CLIENT_SCOPES) if (!out.includes(s)) out.push(s);
  return out.join(' ');
}

function isLoopbackHost(host) {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

function sameSecret(a, b) {
  const ha = createHash('sha256').update(String(a)).digest();
  const hb = createHash('sha256').update(String(b)).digest();
  return timingSafeEqual(ha, hb);
}

/** "http://127.0.0.1:<any port><registered path>" for a registered loopback URI. */
function loopbackVariantOf(value, registered, { prefix = false } = {}) {
  const url = URL.parse(value);
  if (!url || url.protocol !== 'http:' || url.hostname !== '127.0.0.1' || url.hash || url.username || url.password) {
    return false;
  }
  return registered.some((r) => {
    const reg = URL.parse(r);
    if (!reg || reg.protocol !== url.protocol || reg.hostname !== url.hostname) return false;
    if (prefix) return url.pathname.startsWith(reg.pathname);
    return reg.pathname === url.pathname && reg.search === url.search;
  });
}

function userClaims(user) {
  return {
    sub: user.sub,
    email_verified: user.emailVerified,
    name: `${user.givenName} ${user.familyName}`,
    groups: [...user.groups],
    preferred_username: user.username,
    given_name: user.givenName,
    family_name: user.familyName,
    email: user.email,
  };
}

function resourceAccessOf(user, clientId) {
  const access = {};
  // Keycloak emits every client's roles the user holds; the demo shows the api client's roles
  // (alice: reader) on tokens issued to that client.
  if (user && clientId && user.clientRoles[clientId]?.length) {
    access[clientId] = { roles: [...user.clientRoles[clientId]] };
  }
  access.account = { roles: [...DEFAULT_ACCOUNT_ROLES] };
  return access;
}

class HttpError extends Error {
  constructor(status, error, description, headers = {}) {
    super(description || error);
    this.status = status;
    this.body = { error, ...(description ? { error_description: description } : {}) };
    this.headers = headers;
  }
}

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'content-length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

function sendHtml(res, status, html, headers = {}) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store, must-revalidate, max-age=0',
    'content-length': Buffer.byteLength(html),
    'x-frame-options': 'SAMEORIGIN',
    'content-security-policy': "frame-src 'self'; frame-ancestors 'self'; object-src 'none';",
    'referrer-policy': 'no-referrer',
    ...headers,
  });
  res.end(html);
}

/** Read a bounded application/x-www-form-urlencoded body; rejects duplicate parameters. */
async function readForm(req) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new HttpError(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
  }
  const chunks = [];
  let size = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new HttpError(408, 'invalid_request', 'request body not received in time'));
      req.destroy();
    }, BODY_TIMEOUT_MS);
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_FORM_BYTES) {
        clearTimeout(timer);
        reject(new HttpError(413, 'invalid_request', 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => { clearTimeout(timer); resolve(); });
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
  const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  const seen = new Set();
  for (const key of params.keys()) {
    if (seen.has(key)) throw new HttpError(400, 'invalid_request', `duplicate parameter: ${key}`);
    seen.add(key);
  }
  return Object.fromEntries(params);
}

/**
 * Create the IdP and start listening.
 *
 * @param {object} options
 * @param {number} options.port TCP port (0 = any free port)
 * @param {string} [options.host] loopback address to bind (default 127.0.0.1)
 * @param {{keys: object[]}} [options.keys] private JWK Set (RS256 key first); generated if absent
 * @param {number} [options.accessTokenTtl] seconds (default 300)
 * @param {number} [options.refreshTokenTtl] seconds (default 1800)
 * @param {boolean} [options.rotateRefreshTokens] Keycloak "Revoke Refresh Token": each refresh token
 *   is single-use and reuse revokes the grant (default false, as in Keycloak)
 * @param {string} [options.backchannelLogoutUri] back-channel logout URI of client "gateway"
 * @param {boolean} [options.bigUser] add the test-only user carol/carol (lib/realm.mjs BIG_USER:
 *   300 groups, ~12 KB of `groups` in each token); the server then also accepts request headers up
 *   to 64 KB, because on 127.0.0.1 a gateway's large (chunked) session cookies reach the IdP too
 * @param {(line: string) => void} [options.log] access log sink (no query strings, no bodies)
 * @returns {Promise<{issuer: string, url: string, port: number, provider: object, server: object,
 *   close: () => Promise<void>}>}
 */
export async function createIdp(options = {}) {
  const host = options.host ?? DEFAULTS.host;
  if (!isLoopbackHost(host)) {
    throw new Error(`--host must be a loopback address (the test IdP never listens elsewhere), got ${host}`);
  }
  const accessTokenTtl = options.accessTokenTtl ?? DEFAULTS.accessTokenTtl;
  const refreshTokenTtl = options.refreshTokenTtl ?? DEFAULTS.refreshTokenTtl;
  for (const [name, v] of [['accessTokenTtl', accessTokenTtl], ['refreshTokenTtl', refreshTokenTtl]]) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer (seconds), got ${v}`);
  }
  const jwks = validatePrivateJwks(options.keys ?? await generateKeys({ algs: ['RS256'], encryptionKey: false }));
  const log = options.log ?? (() => {});

  // Bind first: the issuer needs the port when port 0 was asked for.
  let handler = (req, res) => sendJson(res, 503, { error: 'temporarily_unavailable' });
  // Node's default limit is 16 KB of request headers; Keycloak (Quarkus) takes more. Browsers send
  // the cookies of every port of 127.0.0.1, so carol's chunked gateway session reaches us as well.
  const server = createServer(options.bigUser ? { maxHeaderSize: 64 * 1024 } : {}, (req, res) => handler(req, res));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => { server.off('error', reject); resolve(); });
  });
  try {
    return await setUp(server, options, { host, accessTokenTtl, refreshTokenTtl, jwks, log, setHandler: (h) => { handler = h; } });
  } catch (err) {
    server.close();
    throw err;
  }
}

async function setUp(server, options, { host, accessTokenTtl, refreshTokenTtl, jwks, log, setHandler }) {
  const { port } = server.address();
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const issuer = `${origin}${REALM_PATH}`;
  const issuerHost = new URL(issuer).host;

  const store = createMemoryStore();

  // Users beyond the demo realm's alice and bob: carol only when asked for.
  const extraUsers = options.bigUser ? [BIG_USER] : [];
  const userBySub = (sub) => findUserBySub(sub, extraUsers);
  const userByUsername = (username) => findUserByUsername(username, extraUsers);

  // Public keys for verifying our own access tokens (userinfo, introspection, revocation).
  const verifyKeys = createLocalJWKSet(publicJwks({ keys: jwks.keys.filter((k) => (k.use ?? 'sig') === 'sig') }));

  /** jti -> {clientId, grantId, sessionUid, expiresWithSession, exp (s), revoked} of issued JWT access tokens. */
  const issuedAccessTokens = new Map();
  function rememberAccessToken(token) {
    const now = Math.floor(Date.now() / 1000);
    if (issuedAccessTokens.size > 10_000) {
      for (const [jti, e] of issuedAccessTokens) if (e.exp < now) issuedAccessTokens.delete(jti);
    }
    issuedAccessTokens.set(token.jti, {
      clientId: token.clientId,
      grantId: token.grantId,
      sessionUid: token.sessionUid,
      expiresWithSession: token.expiresWithSession,
      exp: now + (token.expiration ?? accessTokenTtl) + 1,
      revoked: false,
    });
  }

  const clientMetadata = Object.values(CLIENTS).map((c) => ({
    client_id: c.clientId,
    client_secret: c.secret,
    grant_types: [...c.grantTypes],
    response_types: c.grantTypes.includes('authorization_code') ? ['code'] : [],
    redirect_uris: [...c.redirectUris],
    post_logout_redirect_uris: [...c.postLogoutRedirectUris],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post works as well
    id_token_signed_response_alg: 'RS256',
    ...(c.clientId === 'gateway' && options.backchannelLogoutUri
      ? { backchannel_logout_uri: options.backchannelLogoutUri, backchannel_logout_session_required: true }
      : {}),
  }));

  const resourceServerInfo = {
    scope: KNOWN_SCOPES.join(' '),
    audience: 'account', // Keycloak: aud "account" unless an audience mapper is added
    accessTokenTTL: accessTokenTtl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };

  const configuration = {
    adapter: store.Adapter,
    jwks,
    clients: clientMetadata,
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'RS256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    scopes: KNOWN_SCOPES,
    claims: {
      // Keycloak's default client scopes (profile, email) and the group-membership mapper apply to
      // every token, so these ride along with openid whether or not profile/email were asked for.
      openid: ['sub', 'preferred_username', 'name', 'given_name', 'family_name', 'email', 'email_verified', 'groups'],
      profile: PROFILE_CLAIMS,
      email: ['email', 'email_verified'],
      address: ['address'],
      phone: ['phone_number', 'phone_number_verified'],
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
    },
    conformIdTokenClaims: false, // Keycloak puts profile/email claims in the ID token
    acrValues: ['0', '1'],
    cookies: {
      names: { session: 'KEYCLOAK_SESSION', interaction: 'AUTH_SESSION_ID', resume: 'KC_RESTART' },
      // Scoped to the realm like Keycloak's cookies, so they never reach a gateway on the same host.
      long: { httpOnly: true, sameSite: 'lax', path: `${REALM_PATH}/` },
      short: { httpOnly: true, sameSite: 'lax', path: `${REALM_PATH}/` },
      keys: [randomBytes(32).toString('base64url')],
    },
    routes: {
      authorization: `${OIDC_PATH}/auth`,
      token: `${OIDC_PATH}/token`,
      jwks: `${OIDC_PATH}/certs`,
      userinfo: `${OIDC_PATH}/userinfo`,
      end_session: `${OIDC_PATH}/logout`,
      revocation: `${OIDC_PATH}/revoke`,
      introspection: `${OIDC_PATH}/token/introspect`,
      pushed_authorization_request: `${OIDC_PATH}/ext/par/request`,
    },
    // Keycloak also accepts POST at auth and logout; oidc-provider only allows that with
    // SameSite=None cookies, which browsers drop on plain http. GET only, then.
    enableHttpPostMethods: false,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Answered by this module (see the header comment); enabled so discovery lists them.
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      backchannelLogout: { enabled: true },
      // Lets the key set carry an RSA-OAEP "enc" key like every Keycloak realm's /certs does.
      encryption: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = pages.logoutPage({ formHtml: form, autoSubmit: Boolean(ctx.oidc.entities.IdTokenHint), realm: REALM });
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = pages.loggedOutPage({ realm: REALM });
        },
      },
      resourceIndicators: {
        enabled: true,
        // Every token is for Keycloak's implicit "account" audience...
        defaultResource: (ctx, client, oneOf) => oneOf ?? ACCOUNT_RESOURCE,
        // ...also when openid is asked for (oidc-provider would otherwise issue an opaque
        // userinfo-only token).
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== ACCOUNT_RESOURCE) {
            throw new errors.InvalidTarget('unknown resource indicator');
          }
          return resourceServerInfo;
        },
      },
    },
    formats: {
      customizers: {
        // Reshape oidc-provider's RFC 9068 token into Keycloak's.
        async jwt(ctx, token, jwt) {
          const p = jwt.payload;
          const scope = kcScope(p.scope);
          let claims;
          if (token.kind === 'ClientCredentials') {
            const sa = SERVICE_ACCOUNTS[token.clientId];
            claims = {
              sub: sa?.sub ?? p.sub,
              typ: 'Bearer',
              azp: token.clientId,
              acr: '1',
              realm_access: { roles: [...DEFAULT_REALM_ROLES] },
              resource_access: { account: { roles: [...DEFAULT_ACCOUNT_ROLES] } },
              scope,
              clientHost: '127.0.0.1',
              email_verified: false,
              preferred_username: sa?.username ?? `service-account-${token.clientId}`,
              clientAddress: '127.0.0.1',
              client_id: token.clientId,
            };
          } else {
            const user = userBySub(token.accountId);
            if (!user) throw new Error(`access token for unknown account ${token.accountId}`);
            const { sub, ...profile } = userClaims(user);
            claims = {
              sub,
              typ: 'Bearer',
              azp: token.clientId,
              ...(token.sid ? { sid: token.sid } : {}),
              acr: '1',
              realm_access: { roles: realmRolesOf(user) },
              resource_access: resourceAccessOf(user, token.clientId),
              scope,
              ...profile,
            };
          }
          jwt.header = { typ: 'JWT' };
          jwt.payload = {
            exp: p.exp,
            iat: p.iat,
            jti: p.jti,
            iss: p.iss,
            aud: p.aud,
            ...claims,
            ...(p.cnf ? { cnf: p.cnf } : {}),
          };
        },
      },
    },
    async findAccount(ctx, sub) {
      const user = userBySub(sub);
      if (!user) return undefined;
      return {
        accountId: user.sub,
        async claims() { return userClaims(user); },
      };
    },
    // Keycloak: "Consent required" is off for both clients, so consent is implied: the grant
    // covers whatever was asked for.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (grant && grant.accountId !== oidc.account.accountId) grant = undefined;
      if (!grant) {
        grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.account.accountId });
      }
      const scopes = [...oidc.requestParamOIDCScopes, ...DEFAULT_CLIENT_SCOPES].join(' ');
      grant.addOIDCScope(scopes);
      const claims = oidc.requestParamClaims;
      if (claims?.size) grant.addOIDCClaims([...claims]);
      for (const indicator of Object.keys(oidc.resourceServers ?? {})) {
        grant.addResourceScope(indicator, scopes);
      }
      await grant.save();
      return grant;
    },
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: Boolean(options.rotateRefreshTokens),
    pkce: { required: () => false }, // Keycloak: PKCE optional unless the client demands it
    clientBasedCORS: (ctx, origin) => URL.parse(origin)?.hostname === '127.0.0.1',
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      IdToken: accessTokenTtl,
      RefreshToken: refreshTokenTtl,
      AuthorizationCode: DEFAULTS.codeTtl,
      Interaction: DEFAULTS.loginTtl,
      Session: DEFAULTS.sessionTtl,
      Grant: DEFAULTS.sessionTtl,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
    interactions: {
      url: (ctx, interaction) => `${REALM_PATH}${LOGIN_ACTIONS}${interaction.uid}`,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = pages.errorPage({
        message: out.error_description || out.error || 'Unexpected error when handling authentication request',
        details: out,
        realm: REALM,
      });
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.proxy = false;

  // Keycloak accepts the callback on any loopback port (tests run gateways on free ports) for the
  // registered path; post-logout redirects anywhere under a registered loopback URI.
  const ClientProto = provider.Client.prototype;
  const redirectUriAllowed = ClientProto.redirectUriAllowed;
  ClientProto.redirectUriAllowed = function allowLoopbackPorts(value) {
    return redirectUriAllowed.call(this, value) || loopbackVariantOf(value, this.redirectUris);
  };
  const postLogoutRedirectUriAllowed = ClientProto.postLogoutRedirectUriAllowed;
  ClientProto.postLogoutRedirectUriAllowed = function allowLoopbackPorts(value) {
    return postLogoutRedirectUriAllowed.call(this, value)
      || loopbackVariantOf(value, [...(this.postLogoutRedirectUris ?? []), ...(this.redirectUris ?? [])].map((u) => new URL('/', u).href), { prefix: true });
  };

  // Keycloak's ID tokens always carry typ "ID", azp, auth_time and acr (oidc-provider adds the
  // last two only when asked for). Its logout tokens do not: only use "idtoken" is touched.
  const issueIdToken = provider.IdToken.prototype.issue;
  provider.IdToken.prototype.issue = function issueKeycloakIdToken(opts = {}) {
    if (opts.use === 'idtoken') {
      if (this.extra.typ === undefined) this.set('typ', 'ID');
      if (this.extra.azp === undefined && this.client) this.set('azp', this.client.clientId);
      for (const claim of ['auth_time', 'acr']) {
        if (this.extra[claim] === undefined && this.available?.[claim] !== undefined) this.set(claim, this.available[claim]);
      }
    }
    return issueIdToken.call(this, opts);
  };

  // Keycloak puts the user session id (sid) in every token of a session, not only for clients
  // that registered a back-channel logout URI.
  ClientProto.includeSid = function includeSid() { return true; };

  provider.on('access_token.issued', rememberAccessToken);
  provider.on('client_credentials.issued', rememberAccessToken);
  provider.on('server_error', (ctx, err) => log(`server_error ${ctx.method} ${ctx.path}: ${err?.stack || err}`));

  // --- Keycloak's password grant ("direct access grants") -------------------------------------
  provider.registerGrantType('password', async function passwordGrant(ctx) {
    const { params, client } = ctx.oidc;
    if (!params.username) {
      throw new errors.InvalidRequest('Missing parameter: username');
    }
    const user = userByUsername(params.username);
    if (!user || typeof params.password !== 'string' || !sameSecret(params.password, user.password)) {
      const err = new errors.CustomOIDCProviderError('invalid_grant', 'Invalid user credentials');
      err.status = 401;
      err.statusCode = 401;
      throw err;
    }
    const requested = new Set(`${params.scope ?? ''}`.split(' ').filter((s) => KNOWN_SCOPES.includes(s)));
    const scope = kcScope([...requested].join(' '));
    const scopes = new Set(scope.split(' '));

    const grant = new provider.Grant({ accountId: user.sub, clientId: client.clientId });
    grant.addOIDCScope(scope);
    grant.addResourceScope(ACCOUNT_RESOURCE, scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const account = await configuration.findAccount(ctx, user.sub);
    ctx.oidc.entity('Account', account);

    const sid = randomUUID(); // Keycloak creates a user session for a direct grant, too
    const authTime = Math.floor(Date.now() / 1000);

    const at = new provider.AccessToken({
      accountId: user.sub, client, grantId, gty: 'password', sid, expiresWithSession: false,
    });
    at.resourceServer = new provider.ResourceServer(ACCOUNT_RESOURCE, resourceServerInfo);
    at.scope = grant.getResourceScopeFiltered(ACCOUNT_RESOURCE, [...scopes]);
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let refreshToken;
    if (client.grantTypeAllowed('refresh_token')) {
      const rt = new provider.RefreshToken({
        accountId: user.sub,
        acr: '1',
        amr: ['pwd'],
        authTime,
        client,
        expiresWithSession: false,
        grantId,
        gty: 'password',
        resource: ACCOUNT_RESOURCE,
        rotations: 0,
        scope,
        sid,
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }

    let idToken;
    if (scopes.has('openid')) {
      const token = new provider.IdToken(await account.claims('id_token', scope), { ctx });
      token.scope = scope;
      token.mask = {};
      token.rejected = [];
      token.set('auth_time', authTime);
      token.set('acr', '1');
      token.set('sid', sid);
      idToken = await token.issue({ use: 'idtoken' });
    }

    ctx.body = {
      access_token: accessToken,
      expires_in: at.expiration,
      ...(refreshToken ? { refresh_token: refreshToken } : {}),
      token_type: at.tokenType,
      ...(idToken ? { id_token: idToken } : {}),
      scope: at.scope,
    };
  }, ['username', 'password', 'scope']);

  // --- Keycloak's token response shape ---------------------------------------------------------
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body?.access_token) return;
    const { AccessToken, ClientCredentials, RefreshToken } = ctx.oidc.entities;
    const at = AccessToken ?? ClientCredentials;
    const b = ctx.body;
    ctx.body = {
      access_token: b.access_token,
      expires_in: b.expires_in,
      refresh_expires_in: b.refresh_token && RefreshToken ? Math.max(0, RefreshToken.remainingTTL) : 0,
      ...(b.refresh_token ? { refresh_token: b.refresh_token } : {}),
      token_type: b.token_type,
      ...(b.id_token ? { id_token: b.id_token } : {}),
      'not-before-policy': 0,
      ...(at?.sid ? { session_state: at.sid } : {}),
      scope: kcScope(b.scope),
      ...Object.fromEntries(Object.entries(b).filter(([k]) => !['access_token', 'expires_in', 'refresh_token', 'token_type', 'id_token', 'scope'].includes(k))),
    };
  });

  // --- Access tokens, as userinfo/introspection/revocation see them ------------------------------
  /** The payload of a live access token this IdP issued, or undefined. */
  async function activeAccessToken(value) {
    if (typeof value !== 'string' || value.split('.').length !== 3) return undefined;
    let payload;
    try {
      ({ payload } = await jwtVerify(value, verifyKeys, { issuer, typ: 'JWT' }));
    } catch {
      return undefined;
    }
    if (payload.typ !== 'Bearer') return undefined;
    const entry = issuedAccessTokens.get(payload.jti);
    if (!entry || entry.revoked) return undefined;
    if (entry.grantId && !(await provider.Grant.find(entry.grantId))) return undefined;
    if (entry.expiresWithSession && entry.sessionUid && !(await provider.Session.findByUid(entry.sessionUid))) {
      return undefined;
    }
    return payload;
  }

  async function activeRefreshToken(value) {
    if (typeof value !== 'string' || !value || value.includes('.')) return undefined;
    const rt = await provider.RefreshToken.find(value);
    if (!rt || rt.consumed || rt.isExpired) return undefined;
    if (rt.grantId && !(await provider.Grant.find(rt.grantId))) return undefined;
    return rt;
  }

  /** Client authentication for introspection/revocation (client_secret_basic or _post). */
  function authenticateClient(req, form) {
    const header = req.headers.authorization;
    let clientId;
    let secret;
    if (header !== undefined && form.client_secret !== undefined) {
      throw new HttpError(400, 'invalid_request', 'client authentication must only be provided using one mechanism');
    }
    if (header !== undefined) {
      const m = /^Basic ([A-Za-z0-9+/]+=*)$/i.exec(header);
      const decoded = m ? Buffer.from(m[1], 'base64').toString('utf8') : '';
      const i = decoded.indexOf(':');
      if (i < 1) throw new HttpError(400, 'invalid_request', 'invalid authorization header value format');
      const dec = (s) => decodeURIComponent(s.replace(/\+/g, '%20'));
      try {
        clientId = dec(decoded.slice(0, i));
        secret = dec(decoded.slice(i + 1));
      } catch {
        throw new HttpError(400, 'invalid_request', 'invalid authorization header value format');
      }
      if (form.client_id !== undefined && form.client_id !== clientId) {
        throw new HttpError(400, 'invalid_request', 'client_id mismatch');
      }
    } else {
      clientId = form.client_id;
      secret = form.client_secret;
    }
    const client = Object.values(CLIENTS).find((c) => c.clientId === clientId);
    if (!client || typeof secret !== 'string' || !sameSecret(secret, client.secret)) {
      throw new HttpError(401, 'invalid_client', 'Invalid client or Invalid client credentials',
        header !== undefined ? { 'www-authenticate': `Basic realm="${REALM}"` } : {});
    }
    return client;
  }

  async function userinfo(req, res) {
    let token;
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(auth);
      token = m?.[1];
    }
    if (req.method === 'POST' && (req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
      const form = await readForm(req);
      if (form.access_token !== undefined) {
        if (token !== undefined) throw new HttpError(400, 'invalid_request', 'access token must only be provided using one mechanism');
        token = form.access_token;
      }
    }
    const challenge = (error, description) => ({
      'www-authenticate': `Bearer realm="${REALM}"${error ? `, error="${error}", error_description="${description}"` : ''}`,
    });
    if (!token) {
      throw new HttpError(401, 'invalid_request', 'Token not provided', challenge());
    }
    const payload = await activeAccessToken(token);
    if (!payload) {
      throw new HttpError(401, 'invalid_token', 'Token verification failed', challenge('invalid_token', 'Token verification failed'));
    }
    if (!`${payload.scope}`.split(' ').includes('openid')) {
      throw new HttpError(403, 'insufficient_scope', 'Missing openid scope', challenge('insufficient_scope', 'Missing openid scope'));
    }
    const user = userBySub(payload.sub);
    if (user) {
      sendJson(res, 200, userClaims(user));
    } else {
      sendJson(res, 200, { sub: payload.sub, email_verified: false, preferred_username: payload.preferred_username });
    }
  }

  async function introspect(req, res) {
    const form = await readForm(req);
    authenticateClient(req, form);
    if (!form.token) throw new HttpError(400, 'invalid_request', 'Token not provided.');
    const at = form.token_type_hint === 'refresh_token' ? undefined : await activeAccessToken(form.token);
    if (at) {
      sendJson(res, 200, {
        ...at, client_id: at.azp, username: at.preferred_username, token_type: 'Bearer', active: true,
      });
      return;
    }
    const rt = await activeRefreshToken(form.token);
    if (rt) {
      const user = userBySub(rt.accountId);
      sendJson(res, 200, {
        exp: rt.exp,
        iat: rt.iat,
        jti: rt.jti,
        iss: issuer,
        aud: issuer,
        sub: rt.accountId,
        typ: 'Refresh',
        azp: rt.clientId,
        ...(rt.sid ? { sid: rt.sid } : {}),
        scope: kcScope(rt.scope),
        client_id: rt.clientId,
        ...(user ? { username: user.username } : {}),
        token_type: 'Refresh',
        active: true,
      });
      return;
    }
    sendJson(res, 200, { active: false });
  }

  async function revoke(req, res) {
    const form = await readForm(req);
    const client = authenticateClient(req, form);
    if (!form.token) throw new HttpError(400, 'invalid_request', 'Token not provided');
    const unmatching = () => new HttpError(400, 'unauthorized_client', 'Unmatching clients');
    const at = await activeAccessToken(form.token);
    if (at) {
      if (at.azp !== client.clientId) throw unmatching();
      const entry = issuedAccessTokens.get(at.jti);
      if (entry) entry.revoked = true;
    } else {
      const rt = await provider.RefreshToken.find(form.token, { ignoreExpiration: true });
      if (rt) {
        if (rt.clientId !== client.clientId) throw unmatching();
        // Keycloak: revoking a refresh token ends that client's session (all its tokens).
        await rt.destroy();
        if (rt.grantId) {
          await Promise.all([
            provider.AccessToken.revokeByGrantId(rt.grantId),
            provider.RefreshToken.revokeByGrantId(rt.grantId),
            provider.AuthorizationCode.revokeByGrantId(rt.grantId),
            provider.Grant.adapter.destroy(rt.grantId),
          ]);
        }
      }
    }
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 0 });
    res.end();
  }

  // --- Login page (oidc-provider interactions) --------------------------------------------------
  async function interaction(req, res, uid) {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch (err) {
      if (err instanceof errors.SessionNotFound || err?.name === 'SessionNotFound') {
        sendHtml(res, 400, pages.errorPage({
          message: 'Your login attempt timed out. Login will start from the beginning.',
          realm: REALM,
        }));
        return;
      }
      throw err;
    }
    if (details.uid !== uid) {
      sendHtml(res, 400, pages.errorPage({ message: 'Login session mismatch: restart the login.', realm: REALM }));
      return;
    }
    const action = `${issuer}${LOGIN_ACTIONS}${uid}`;
    const { prompt, params } = details;

    if (prompt.name === 'consent') {
      // Not reached with the demo clients (loadExistingGrant implies consent); kept for prompt=consent.
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (prompt.name !== 'login') {
      sendHtml(res, 400, pages.errorPage({ message: `Unsupported interaction: ${prompt.name}`, realm: REALM }));
      return;
    }

    if (req.method === 'GET') {
      sendHtml(res, 200, pages.loginPage({
        action, username: typeof params.login_hint === 'string' ? params.login_hint : '', realm: REALM, clientId: params.client_id,
      }));
      return;
    }
    if (req.method !== 'POST') {
      sendHtml(res, 405, pages.errorPage({ message: 'Method not allowed', realm: REALM }), { allow: 'GET, POST' });
      return;
    }
    let form;
    try {
      form = await readForm(req);
    } catch (err) {
      sendHtml(res, err.status ?? 400, pages.errorPage({ message: err.message, realm: REALM }));
      return;
    }
    const user = userByUsername(form.username);
    if (!user || typeof form.password !== 'string' || !sameSecret(form.password, user.password)) {
      // Keycloak re-renders the form with 200 and this exact message.
      sendHtml(res, 200, pages.loginPage({
        action, username: form.username ?? '', error: 'Invalid username or password.', realm: REALM, clientId: params.client_id,
      }));
      return;
    }
    await provider.interactionFinished(req, res, {
      login: { accountId: user.sub, acr: '1', amr: ['pwd'], remember: true },
    }, { mergeWithLastSubmission: false });
  }

  function realmInfo(res) {
    const rsa = jwks.keys[0];
    const { kid, use, alg, ...material } = rsa;
    const publicKey = createPublicKey({ key: material, format: 'jwk' }).export({ type: 'spki', format: 'der' }).toString('base64');
    sendJson(res, 200, {
      realm: REALM,
      public_key: publicKey,
      'token-service': `${issuer}${OIDC_PATH}`,
      'account-service': `${issuer}/account`,
      'tokens-not-before': 0,
    });
  }

  // --- Dispatch ---------------------------------------------------------------------------------
  const providerCallback = provider.callback();
  const ownRoutes = new Map([
    [`${REALM_PATH}${OIDC_PATH}/userinfo`, { methods: ['GET', 'POST'], fn: userinfo }],
    [`${REALM_PATH}${OIDC_PATH}/token/introspect`, { methods: ['POST'], fn: introspect }],
    [`${REALM_PATH}${OIDC_PATH}/revoke`, { methods: ['POST'], fn: revoke }],
  ]);

  setHandler(async (req, res) => {
    const started = process.hrtime.bigint();
    const logPath = (req.url || '').split('?')[0];
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${req.method} ${logPath} ${res.statusCode} ${ms.toFixed(1)}ms`);
    });
    try {
      if (!req.url?.startsWith('/')) throw new HttpError(400, 'invalid_request', 'origin-form request target expected');
      const path = new URL(`${origin}${req.url}`).pathname;
      if (path === '/' || path === '/health' || path === '/health/ready' || path === '/health/live') {
        sendJson(res, 200, { status: 'UP' });
        return;
      }
      if (path === REALM_PATH) {
        if (req.method !== 'GET') throw new HttpError(405, 'invalid_request', 'method not allowed');
        realmInfo(res);
        return;
      }
      const own = ownRoutes.get(path);
      if (own) {
        if (!own.methods.includes(req.method)) {
          throw new HttpError(405, 'invalid_request', 'method not allowed', { allow: own.methods.join(', ') });
        }
        await own.fn(req, res);
        return;
      }
      if (path.startsWith(`${REALM_PATH}${LOGIN_ACTIONS}`)) {
        const uid = path.slice(`${REALM_PATH}${LOGIN_ACTIONS}`.length);
        if (!/^[A-Za-z0-9_-]{1,64}$/.test(uid)) {
          sendHtml(res, 404, pages.errorPage({ message: 'Page not found', realm: REALM }));
          return;
        }
        await interaction(req, res, uid);
        return;
      }
      if (path.startsWith(`${REALM_PATH}/`)) {
        // Mount oidc-provider under the realm path (what express' app.use(prefix, ...) does):
        // it derives its URLs from originalUrl minus url. URLs are built for the issuer's host
        // whatever Host the caller used (Keycloak with a fixed hostname does the same).
        req.originalUrl = req.url;
        req.url = req.url.slice(REALM_PATH.length);
        req.headers.host = issuerHost;
        await providerCallback(req, res);
        return;
      }
      throw new HttpError(404, 'Unable to find matching target resource method');
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) {
        sendJson(res, err.status, err.body, err.headers);
      } else {
        log(`internal error ${req.method} ${req.url?.split('?')[0]}: ${err?.stack || err}`);
        sendJson(res, 500, { error: 'server_error', error_description: 'internal error' });
      }
    }
  });

  async function close() {
    store.close();
    await new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  return { issuer, url: origin, port, provider, server, close };
}
