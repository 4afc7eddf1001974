// Smoke test of the test bed itself, without the gatehouse filter: the Keycloak-shaped IdP, the
// echo upstream and a plain Envoy in front of it.
//
//   cd wasm-test && node --test e2e/

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';

import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

import {
  browse,
  clientCredentialsToken,
  CookieJar,
  formFromHtml,
  freePort,
  http,
  passwordToken,
  refreshTokenGrant,
  runDirectory,
  startEcho,
  startEnvoy,
  startIdp,
  stopAll,
  tokenRequest,
} from '../lib/harness.mjs';
import { readKeysFile, signJwt, writeKeysFile } from '../lib/keys.mjs';
import {
  BIG_USER, BIG_USER_GROUP_COUNT, DEFAULT_REALM_ROLES, SERVICE_ACCOUNTS, USERS, bigUserGroup,
} from '../lib/realm.mjs';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

let idp;
let echo;
let keys;
let jwks;

before(async () => {
  const keysFile = join(runDirectory(), 'idp-keys.json');
  await writeKeysFile(keysFile);
  keys = await readKeysFile(keysFile);
  [idp, echo] = await Promise.all([startIdp({ keysFile }), startEcho()]);
  // The IdP's published keys, fetched once (jose's remote key set would use fetch(), whose pooled
  // keep-alive sockets hold the test process open for seconds after the last test).
  jwks = createLocalJWKSet((await http(idp.urls.certs)).json);
});

after(async () => {
  await stopAll();
});

async function verifyAccessToken(token) {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: idp.issuer, audience: 'account' });
  return { payload, header: protectedHeader };
}

function pkce() {
  const verifier = b64url(randomBytes(32));
  return { verifier, challenge: b64url(createHash('sha256').update(verifier).digest()) };
}

/** Start an authorization-code flow for client gateway; returns what the callback needs. */
async function authorize({
  jar = new CookieJar(), username = 'alice', password = 'alice', callbackPort, server = idp,
} = {}) {
  const port = callbackPort ?? await freePort();
  const redirectUri = `http://127.0.0.1:${port}/oauth2/callback`;
  const { verifier, challenge } = pkce();
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const url = new URL(server.urls.authorization);
  url.search = new URLSearchParams({
    client_id: 'gateway',
    response_type: 'code',
    scope: 'openid email profile',
    redirect_uri: redirectUri,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    kc_idp_hint: 'entra', // brokering hint: ignored by the test IdP
  }).toString();
  const result = await browse(url.href, {
    jar, username, password, stopAt: (u) => u.pathname === '/oauth2/callback',
  });
  return { result, redirectUri, verifier, state, nonce, jar };
}

describe('IdP discovery and keys', () => {
  test('discovery document has Keycloak endpoint paths', async () => {
    const res = await http(idp.urls.discovery);
    assert.equal(res.status, 200);
    const d = res.json;
    const base = `${idp.issuer}/protocol/openid-connect`;
    assert.equal(d.issuer, `http://127.0.0.1:${idp.port}/realms/demo`);
    assert.equal(d.authorization_endpoint, `${base}/auth`);
    assert.equal(d.token_endpoint, `${base}/token`);
    assert.equal(d.jwks_uri, `${base}/certs`);
    assert.equal(d.userinfo_endpoint, `${base}/userinfo`);
    assert.equal(d.end_session_endpoint, `${base}/logout`);
    assert.equal(d.introspection_endpoint, `${base}/token/introspect`);
    assert.equal(d.revocation_endpoint, `${base}/revoke`);
    assert.equal(d.authorization_response_iss_parameter_supported, true);
    for (const g of ['authorization_code', 'refresh_token', 'password', 'client_credentials']) {
      assert.ok(d.grant_types_supported.includes(g), `grant type ${g}`);
    }
    assert.ok(d.code_challenge_methods_supported.includes('S256'));
    assert.ok(d.id_token_signing_alg_values_supported.includes('RS256'));
  });

  test('/certs serves the public parts of every key of the key file', async () => {
    const res = await http(idp.urls.certs);
    assert.equal(res.status, 200);
    const served = res.json.keys;
    assert.deepEqual(served.map((k) => k.kid), keys.keys.map((k) => k.kid));
    assert.deepEqual(served.map((k) => k.alg), ['RS256', 'ES256', 'EdDSA', 'RSA-OAEP']);
    for (const k of served) {
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) {
        assert.equal(k[secret], undefined, `kid ${k.kid} leaks "${secret}"`);
      }
    }
    assert.equal(served.find((k) => k.alg === 'RSA-OAEP').use, 'enc');
  });

  test('tokens minted by tests with the shared key file verify against /certs', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const alg of ['RS256', 'ES256', 'EdDSA']) {
      const token = await signJwt(keys, {
        iss: idp.issuer, aud: 'account', sub: USERS.bob.sub, iat: now, exp: now + 60, azp: 'api',
      }, { alg });
      const { protectedHeader } = await jwtVerify(token, jwks, { issuer: idp.issuer, audience: 'account' });
      assert.equal(protectedHeader.alg, alg);
    }
    const expired = await signJwt(keys, { iss: idp.issuer, aud: 'account', exp: now - 600 });
    await assert.rejects(jwtVerify(expired, jwks), /exp/);
  });
});

describe('password and client-credentials grants', () => {
  test("alice's token has Keycloak's shape and claims", async () => {
    const tr = await passwordToken({ idpPort: idp.port, username: 'alice', password: 'alice' });
    assert.equal(tr.token_type, 'Bearer');
    assert.equal(tr.expires_in, 300);
    assert.equal(tr.refresh_expires_in, 1800);
    assert.equal(typeof tr.refresh_token, 'string');
    assert.equal(typeof tr.id_token, 'string');
    assert.equal(tr['not-before-policy'], 0);
    assert.deepEqual(tr.scope.split(' ').sort(), ['email', 'openid', 'profile']);

    const { payload: at, header } = await verifyAccessToken(tr.access_token);
    assert.equal(header.alg, 'RS256');
    assert.equal(header.typ, 'JWT');
    assert.equal(header.kid, keys.keys[0].kid);
    const alice = USERS.alice;
    assert.equal(at.iss, idp.issuer);
    assert.equal(at.sub, alice.sub);
    assert.equal(at.aud, 'account');
    assert.equal(at.azp, 'api');
    assert.equal(at.typ, 'Bearer');
    assert.equal(at.exp - at.iat, 300);
    assert.equal(typeof at.jti, 'string');
    assert.equal(at.sid, tr.session_state);
    assert.deepEqual(at.scope.split(' ').sort(), ['email', 'openid', 'profile']);
    assert.deepEqual(at.realm_access.roles.sort(), [...DEFAULT_REALM_ROLES, 'backendaccess'].sort());
    assert.deepEqual(at.resource_access.account.roles, ['manage-account', 'view-profile']);
    assert.deepEqual(at.resource_access.api.roles, ['reader']);
    assert.deepEqual(at.groups, ['/admins']);
    assert.equal(at.email, 'alice@example.com');
    assert.equal(at.email_verified, true);
    assert.equal(at.preferred_username, 'alice');
    assert.equal(at.name, 'Alice Liddell');
    assert.equal(at.given_name, 'Alice');
    assert.equal(at.family_name, 'Liddell');

    const { payload: id } = await jwtVerify(tr.id_token, jwks, { issuer: idp.issuer, audience: 'api' });
    assert.equal(id.sub, alice.sub);
    assert.equal(id.typ, 'ID');
    assert.equal(id.azp, 'api');
    assert.equal(id.preferred_username, 'alice');
    assert.equal(id.email, 'alice@example.com');
    assert.deepEqual(id.groups, ['/admins']);
    assert.equal(id.sid, at.sid);
    assert.equal(id.realm_access, undefined, 'roles are not in the ID token');
    assert.equal(id.resource_access, undefined, 'roles are not in the ID token');
  });

  test("bob's token has no group and only the default roles", async () => {
    const tr = await passwordToken({ idpPort: idp.port, username: 'bob', password: 'bob', auth: 'post' });
    const { payload: at } = await verifyAccessToken(tr.access_token);
    assert.equal(at.sub, USERS.bob.sub);
    assert.equal(at.preferred_username, 'bob');
    assert.equal(at.email, 'bob@example.com');
    assert.deepEqual(at.groups, []);
    assert.deepEqual(at.realm_access.roles.sort(), [...DEFAULT_REALM_ROLES].sort());
    assert.equal(at.resource_access.api, undefined);
  });

  test('without scope=openid there is no ID token (Keycloak default scopes still apply)', async () => {
    const tr = await passwordToken({ idpPort: idp.port, username: 'bob', password: 'bob', scope: null });
    assert.equal(tr.id_token, undefined);
    assert.deepEqual(tr.scope.split(' ').sort(), ['email', 'profile']);
  });

  test('client credentials give a service-account token (basic and post auth)', async () => {
    for (const auth of ['basic', 'post']) {
      const tr = await clientCredentialsToken({ idpPort: idp.port, auth });
      assert.equal(tr.refresh_token, undefined);
      assert.equal(tr.refresh_expires_in, 0);
      const { payload: at } = await verifyAccessToken(tr.access_token);
      assert.equal(at.azp, 'api');
      assert.equal(at.sub, SERVICE_ACCOUNTS.api.sub);
      assert.equal(at.preferred_username, 'service-account-api');
      assert.equal(at.email, undefined);
      assert.equal(at.groups, undefined);
      assert.deepEqual(at.realm_access.roles.sort(), [...DEFAULT_REALM_ROLES].sort());
    }
  });

  test('wrong password, unknown user and wrong client secret are refused', async () => {
    for (const [username, password] of [['alice', 'wrong'], ['mallory', 'mallory'], ['alice', '']]) {
      const res = await http(idp.urls.token, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'password', client_id: 'api', client_secret: 'api-secret', username, password,
        }),
      });
      assert.equal(res.status, 401, `${username}/${password}`);
      assert.equal(res.json.error, 'invalid_grant');
      assert.equal(res.json.error_description, 'Invalid user credentials');
    }
    await assert.rejects(
      passwordToken({ idpPort: idp.port, username: 'alice', password: 'alice', clientSecret: 'nope' }),
      (err) => err.response.status === 401 && err.response.json.error === 'invalid_client',
    );
    await assert.rejects(
      passwordToken({ idpPort: idp.port, username: 'alice', password: 'alice', clientId: 'gateway', clientSecret: 'gateway-secret' }),
      (err) => err.response.status === 400,
      'gateway has no direct access grants',
    );
  });

  test('refresh_token grant, userinfo, introspection and revocation', async () => {
    const tr = await passwordToken({ idpPort: idp.port, username: 'alice', password: 'alice' });
    const refreshed = await refreshTokenGrant({ idpPort: idp.port, refreshToken: tr.refresh_token });
    const { payload: at } = await verifyAccessToken(refreshed.access_token);
    assert.equal(at.sub, USERS.alice.sub);
    assert.equal(at.sid, decodeJwt(tr.access_token).sid);
    assert.equal(typeof refreshed.refresh_token, 'string');
    assert.equal(typeof refreshed.id_token, 'string');

    const ui = await http(idp.urls.userinfo, { headers: { authorization: `Bearer ${refreshed.access_token}` } });
    assert.equal(ui.status, 200);
    assert.equal(ui.json.sub, USERS.alice.sub);
    assert.deepEqual(ui.json.groups, ['/admins']);
    assert.equal(ui.json.email, 'alice@example.com');

    const basic = `Basic ${Buffer.from('api:api-secret').toString('base64')}`;
    const introspect = (token) => http(idp.urls.introspection, {
      method: 'POST', headers: { authorization: basic }, body: new URLSearchParams({ token }),
    });
    let intro = await introspect(refreshed.access_token);
    assert.equal(intro.status, 200);
    assert.equal(intro.json.active, true);
    assert.equal(intro.json.username, 'alice');
    assert.equal(intro.json.client_id, 'api');
    intro = await introspect(refreshed.refresh_token);
    assert.equal(intro.json.active, true);
    assert.equal(intro.json.token_type, 'Refresh');

    const rev = await http(idp.urls.revocation, {
      method: 'POST', headers: { authorization: basic }, body: new URLSearchParams({ token: refreshed.refresh_token }),
    });
    assert.equal(rev.status, 200);
    intro = await introspect(refreshed.access_token);
    assert.equal(intro.json.active, false, 'revoking the refresh token ends the session');
    const ui2 = await http(idp.urls.userinfo, { headers: { authorization: `Bearer ${refreshed.access_token}` } });
    assert.equal(ui2.status, 401);
    assert.match(ui2.headers['www-authenticate'], /^Bearer /);
    await assert.rejects(
      refreshTokenGrant({ idpPort: idp.port, refreshToken: tr.refresh_token }),
      (err) => err.response.json.error === 'invalid_grant',
    );

    // A token the IdP never issued (same keys) is valid for a relying party but not for userinfo.
    const now = Math.floor(Date.now() / 1000);
    const minted = await signJwt(keys, {
      ...decodeJwt(tr.access_token), jti: 'minted', iat: now, exp: now + 60,
    });
    assert.equal((await http(idp.urls.userinfo, { headers: { authorization: `Bearer ${minted}` } })).status, 401);
  });
});

describe('authorization-code flow over plain HTTP', () => {
  test('login form, PKCE, state, nonce, iss; code redeemed once; refresh works', async () => {
    const flow = await authorize();
    const { result } = flow;
    assert.equal(result.stopped, true, `flow ended at ${result.url} (${result.response?.status})`);
    const cb = new URL(result.url);
    assert.equal(`${cb.origin}${cb.pathname}`, flow.redirectUri);
    assert.equal(cb.searchParams.get('state'), flow.state);
    assert.equal(cb.searchParams.get('iss'), idp.issuer);
    const code = cb.searchParams.get('code');
    assert.ok(code);
    // The IdP's cookies are scoped to the realm path, never sent to a gateway on the same host.
    for (const c of flow.jar.list()) assert.equal(c.path, '/realms/demo/', `cookie ${c.name}`);

    const redeem = () => tokenRequest({
      idpPort: idp.port,
      clientId: 'gateway',
      clientSecret: 'gateway-secret',
      params: {
        grant_type: 'authorization_code', code, redirect_uri: flow.redirectUri, code_verifier: flow.verifier,
      },
    });
    const tr = await redeem();
    const { payload: id } = await jwtVerify(tr.id_token, jwks, { issuer: idp.issuer, audience: 'gateway' });
    assert.equal(id.nonce, flow.nonce);
    assert.equal(id.sub, USERS.alice.sub);
    assert.equal(id.preferred_username, 'alice');
    assert.deepEqual(id.groups, ['/admins']);
    assert.equal(id.acr, '1');
    assert.equal(typeof id.auth_time, 'number');
    assert.equal(typeof id.sid, 'string');
    assert.equal(id.realm_access, undefined);
    const { payload: at } = await verifyAccessToken(tr.access_token);
    assert.equal(at.azp, 'gateway');
    assert.equal(at.sid, id.sid);
    assert.equal(tr.session_state, id.sid);
    assert.equal(at.resource_access.api, undefined);
    assert.equal(decodeProtectedHeader(tr.access_token).typ, 'JWT');
    assert.equal(typeof tr.refresh_token, 'string');

    const refreshed = await refreshTokenGrant({
      idpPort: idp.port, refreshToken: tr.refresh_token, clientId: 'gateway', clientSecret: 'gateway-secret',
    });
    assert.equal(decodeJwt(refreshed.id_token).nonce, flow.nonce);
    assert.equal((await verifyAccessToken(refreshed.access_token)).payload.sub, USERS.alice.sub);

    // SSO: the session cookie logs the next request in without a form.
    const again = await authorize({ jar: flow.jar, username: undefined });
    assert.equal(again.result.stopped, true);
    assert.ok(!again.result.history.some((h) => h.url.includes('/login-actions/')), 'no login page on SSO');

    // RP-initiated logout with id_token_hint, back to the gateway; the session's tokens die.
    const logout = new URL(idp.urls.logout);
    const postLogout = `http://127.0.0.1:${new URL(flow.redirectUri).port}/signed-out`;
    logout.search = new URLSearchParams({
      id_token_hint: tr.id_token, post_logout_redirect_uri: postLogout, state: 'bye',
    }).toString();
    const out = await browse(logout.href, { jar: flow.jar, stopAt: (u) => u.pathname === '/signed-out' });
    assert.equal(out.stopped, true, `logout ended at ${out.url}`);
    assert.equal(new URL(out.url).searchParams.get('state'), 'bye');
    await assert.rejects(
      refreshTokenGrant({
        idpPort: idp.port, refreshToken: refreshed.refresh_token, clientId: 'gateway', clientSecret: 'gateway-secret',
      }),
      (err) => err.response.json.error === 'invalid_grant',
    );
  });

  test('a code is single-use: its second redemption also revokes the tokens of the first', async () => {
    const flow = await authorize({ username: 'bob', password: 'bob' });
    const params = {
      grant_type: 'authorization_code',
      code: new URL(flow.result.url).searchParams.get('code'),
      redirect_uri: flow.redirectUri,
      code_verifier: flow.verifier,
    };
    const gateway = { idpPort: idp.port, clientId: 'gateway', clientSecret: 'gateway-secret' };
    const tr = await tokenRequest({ ...gateway, params });
    await assert.rejects(tokenRequest({ ...gateway, params }), (err) => err.response.json.error === 'invalid_grant');
    await assert.rejects(
      refreshTokenGrant({ ...gateway, refreshToken: tr.refresh_token }),
      (err) => err.response.json.error === 'invalid_grant',
    );
  });

  test('PKCE: a wrong code_verifier is refused', async () => {
    const flow = await authorize({ username: 'bob', password: 'bob' });
    await assert.rejects(tokenRequest({
      idpPort: idp.port,
      clientId: 'gateway',
      clientSecret: 'gateway-secret',
      params: {
        grant_type: 'authorization_code',
        code: new URL(flow.result.url).searchParams.get('code'),
        redirect_uri: flow.redirectUri,
        code_verifier: pkce().verifier,
      },
    }), (err) => err.response.json.error === 'invalid_grant');
  });

  test('wrong password re-renders the login form with an error', async () => {
    const { result } = await authorize({ username: 'alice', password: 'wrong' });
    assert.equal(result.loginFailed, true);
    assert.equal(result.response.status, 200);
    assert.match(result.response.body, /id="input-error"[^>]*>Invalid username or password\./);
    const form = formFromHtml(result.response.body, result.url, { id: 'kc-form-login' });
    assert.equal(form.method, 'POST');
    assert.equal(form.fields.username, 'alice');
    assert.match(result.response.body, /id="kc-login"/);
  });

  test('an unregistered redirect URI gets an error page, not a redirect', async () => {
    const url = new URL(idp.urls.authorization);
    url.search = new URLSearchParams({
      client_id: 'gateway', response_type: 'code', scope: 'openid', redirect_uri: 'http://127.0.0.1:8080/elsewhere',
    }).toString();
    const res = await http(url.href, { headers: { accept: 'text/html' } });
    assert.equal(res.status, 400);
    assert.equal(res.headers.location, undefined);
    assert.match(res.body, /kc-error-message/);
  });
});

describe('Envoy without the filter', () => {
  test('proxies to echo, which reflects method, path and headers', async () => {
    const envoy = await startEnvoy({ idpPort: idp.port, echoPort: echo.port, filterConfig: null });
    const res = await http(`${envoy.url}/echo/some/path?x=1&y=%20z`, {
      headers: [['X-Test', 'one'], ['x-test', 'two'], ['Authorization', 'Bearer abc']],
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.method, 'GET');
    assert.equal(res.json.path, '/echo/some/path?x=1&y=%20z');
    assert.equal(res.json.headers['x-test'], 'one, two');
    assert.equal(res.json.headers.authorization, 'Bearer abc');
    assert.equal(res.json.headers.host, `127.0.0.1:${envoy.listenPort}`);
    assert.ok(res.json.headers['x-request-id'], 'went through Envoy');

    const post = await http(`${envoy.url}/public/x`, { method: 'POST', body: { a: 1 } });
    assert.equal(post.status, 200);
    assert.equal(post.json.method, 'POST');
    assert.equal(post.json.headers['content-type'], 'application/json');

    const ready = await http(`${envoy.adminUrl}/ready`);
    assert.equal(ready.body.trim(), 'LIVE');
  });
});

describe('the test-only big user (--big-user)', () => {
  let big;
  let bigJwks;
  before(async () => {
    big = await startIdp({ keysFile: join(runDirectory(), 'idp-keys.json'), bigUser: true });
    bigJwks = createLocalJWKSet((await http(big.urls.certs)).json);
  });

  test('carol exists only with --big-user', async () => {
    await assert.rejects(
      passwordToken({ idpPort: idp.port, username: 'carol', password: 'carol' }),
      /invalid_grant/,
    );
  });

  test("carol's 300 groups are in her ID and access tokens (each token over 12 KB)", async (t) => {
    const expectedGroups = Array.from({ length: BIG_USER_GROUP_COUNT }, (_, i) => bigUserGroup(i + 1));
    assert.equal(expectedGroups[0], '/teams/team-0001-platform-engineering');
    assert.equal(BIG_USER.groups.length, 300);

    // Through the browser flow's client, as the gateway gets them...
    const flow = await authorize({ username: 'carol', password: 'carol', server: big });
    assert.equal(flow.result.stopped, true, `flow ended at ${flow.result.url} (${flow.result.response?.status})`);
    const tr = await tokenRequest({
      idpPort: big.port,
      clientId: 'gateway',
      clientSecret: 'gateway-secret',
      params: {
        grant_type: 'authorization_code',
        code: new URL(flow.result.url).searchParams.get('code'),
        redirect_uri: flow.redirectUri,
        code_verifier: flow.verifier,
      },
    });
    const { payload: id } = await jwtVerify(tr.id_token, bigJwks, { issuer: big.issuer, audience: 'gateway' });
    const { payload: at } = await jwtVerify(tr.access_token, bigJwks, { issuer: big.issuer, audience: 'account' });
    for (const p of [id, at]) {
      assert.equal(p.sub, BIG_USER.sub);
      assert.equal(p.preferred_username, 'carol');
      assert.equal(p.email, 'carol@example.com');
      assert.deepEqual(p.groups, expectedGroups);
    }
    assert.ok(at.realm_access.roles.includes('backendaccess'), String(at.realm_access.roles));
    assert.equal(id.realm_access, undefined, 'roles are not in the ID token');
    t.diagnostic(`carol: ID token ${tr.id_token.length} bytes, access token ${tr.access_token.length} bytes`);
    assert.ok(tr.id_token.length > 12_000, `ID token ${tr.id_token.length} bytes`);
    assert.ok(tr.access_token.length > 12_000, `access token ${tr.access_token.length} bytes`);

    // ...and through the password grant.
    const pw = await passwordToken({ idpPort: big.port, username: 'carol', password: 'carol' });
    assert.deepEqual(decodeJwt(pw.access_token).groups, expectedGroups);
    assert.deepEqual(decodeJwt(pw.id_token).groups, expectedGroups);

    // alice is the same on this IdP.
    const alice = await passwordToken({ idpPort: big.port, username: 'alice', password: 'alice' });
    assert.deepEqual(decodeJwt(alice.access_token).groups, ['/admins']);
  });
});
