// The test bed itself, without the gatehouse filter: the real Keycloak of the run with the realm
// users import (examples/keycloak/demo-realm.json), the echo upstream and a plain Envoy in front
// of it. What Keycloak puts in its tokens and how its flows behave, as the other suites and the
// README rely on them — so a change in Keycloak or in the realm file shows here first.
//
//   cd wasm-test && node run-e2e.mjs e2e/testbed.test.mjs

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';

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
  startEcho,
  startEnvoy,
  stopAll,
  tokenRequest,
} from '../lib/harness.mjs';
import {
  adminApi, createRealmWithBigUser, deleteRealm, keycloakUrls, realmFile, startKeycloak,
} from '../lib/keycloak.mjs';
import { BIG_USER, BIG_USER_GROUP_COUNT, bigUserGroup } from '../lib/realm.mjs';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const BIG_REALM = 'demo-testbed-big';
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

let kc;
let echo;
let certs;
let jwks;
const users = {}; // username -> Keycloak user id (the `sub` of its tokens)

before(async () => {
  [kc, echo] = await Promise.all([startKeycloak(), startEcho()]);
  // The published keys, fetched once (jose's remote key set would use fetch(), whose pooled
  // keep-alive sockets hold the test process open for seconds after the last test).
  certs = (await http(kc.urls.certs)).json;
  jwks = createLocalJWKSet(certs);
  for (const name of ['alice', 'bob']) {
    // eslint-disable-next-line no-await-in-loop
    const [u] = await adminApi(kc, 'GET', `/users?username=${name}&exact=true`);
    users[name] = u.id;
  }
});

after(async () => {
  if (kc) await deleteRealm(kc, BIG_REALM);
  await stopAll();
});

async function verifyAccessToken(token, audience = 'api') {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: kc.issuer, audience });
  return { payload, header: protectedHeader };
}

function pkce() {
  const verifier = b64url(randomBytes(32));
  return { verifier, challenge: b64url(createHash('sha256').update(verifier).digest()) };
}

/** Start an authorization-code flow for client gateway; returns what the callback needs. */
async function authorize({
  jar = new CookieJar(), username = 'alice', password = 'alice', signIn = true, callbackPort, urls = kc.urls,
  challenge: withChallenge = true,
} = {}) {
  const port = callbackPort ?? await freePort();
  const redirectUri = `http://127.0.0.1:${port}/oauth2/callback`;
  const { verifier, challenge } = pkce();
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const url = new URL(urls.authorization);
  url.search = new URLSearchParams({
    client_id: 'gateway',
    response_type: 'code',
    scope: 'openid email profile',
    redirect_uri: redirectUri,
    state,
    nonce,
    ...(withChallenge ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
  }).toString();
  const result = await browse(url.href, {
    jar, username: signIn ? username : undefined, password, stopAt: (u) => u.pathname === '/oauth2/callback',
  });
  return {
    result, redirectUri, verifier, state, nonce, jar, port,
  };
}

const gatewayClient = { clientId: 'gateway', clientSecret: 'gateway-secret' };

function redeem(flow, { verifier = flow.verifier, urls = kc.urls } = {}) {
  return tokenRequest({
    tokenUrl: urls.token,
    ...gatewayClient,
    params: {
      grant_type: 'authorization_code',
      code: new URL(flow.result.url).searchParams.get('code'),
      redirect_uri: flow.redirectUri,
      code_verifier: verifier,
    },
  });
}

describe('Keycloak discovery and keys', () => {
  test('discovery names the endpoints the bed and gatehouse use, and PKCE S256', async () => {
    const d = (await http(kc.urls.discovery)).json;
    const u = keycloakUrls(kc.url);
    assert.equal(d.issuer, u.issuer);
    assert.equal(d.authorization_endpoint, u.authorization);
    assert.equal(d.token_endpoint, u.token);
    assert.equal(d.jwks_uri, u.certs);
    assert.equal(d.userinfo_endpoint, u.userinfo);
    assert.equal(d.end_session_endpoint, u.logout);
    assert.ok(d.code_challenge_methods_supported.includes('S256'));
    assert.ok(d.authorization_response_iss_parameter_supported, 'RFC 9207 iss in the authorization response');
  });

  test('the key set holds public keys only, among them the RS256 key tokens are signed with', async () => {
    for (const k of certs.keys) {
      for (const m of PRIVATE_MEMBERS) assert.equal(k[m], undefined, `${k.kid}: no ${m}`);
    }
    const tr = await passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice' });
    const { kid, alg } = decodeProtectedHeader(tr.access_token);
    assert.equal(alg, 'RS256');
    assert.ok(certs.keys.some((k) => k.kid === kid && k.use === 'sig'), 'its key is published');
  });
});

describe('password and client-credentials grants (client api, as in seed 003)', () => {
  test("alice's tokens: her realm role, her group's full path, and the client as audience", async () => {
    const tr = await passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice' });
    assert.equal(tr.token_type, 'Bearer');
    assert.equal(tr.expires_in, 300);
    assert.equal(tr.refresh_expires_in, 1800);
    assert.equal(typeof tr.refresh_token, 'string');
    assert.equal(typeof tr.id_token, 'string');
    assert.deepEqual(tr.scope.split(' ').sort(), ['email', 'openid', 'profile']);

    const { payload: at, header } = await verifyAccessToken(tr.access_token);
    assert.equal(header.typ, 'JWT');
    assert.equal(at.iss, kc.issuer);
    assert.equal(at.sub, users.alice);
    assert.equal(at.aud, 'api', "the realm file's audience mapper; no `account` audience without default roles");
    assert.equal(at.azp, 'api');
    assert.equal(at.typ, 'Bearer');
    assert.equal(at.exp - at.iat, 300);
    assert.equal(at.sid, tr.session_state);
    assert.deepEqual(at.realm_access, { roles: ['backendaccess'] }, 'only the role the realm file gives');
    assert.equal(at.resource_access, undefined, 'no client roles');
    assert.deepEqual(at.groups, ['/admins']);
    assert.equal(at.email, 'alice@example.com');
    assert.equal(at.email_verified, true);
    assert.equal(at.preferred_username, 'alice');
    assert.equal(at.name, 'Alice Liddell');
    assert.equal(at.given_name, 'Alice');
    assert.equal(at.family_name, 'Liddell');

    const { payload: id } = await jwtVerify(tr.id_token, jwks, { issuer: kc.issuer, audience: 'api' });
    assert.equal(id.sub, users.alice);
    assert.equal(id.typ, 'ID');
    assert.equal(id.azp, 'api');
    assert.equal(id.preferred_username, 'alice');
    assert.equal(id.email, 'alice@example.com');
    assert.deepEqual(id.groups, ['/admins']);
    assert.equal(id.sid, at.sid);
    assert.equal(id.realm_access, undefined, 'roles are not in the ID token');
  });

  test("bob's token has neither groups nor roles (Keycloak leaves empty claims out)", async () => {
    const tr = await passwordToken({ idpPort: kc.port, username: 'bob', password: 'bob', auth: 'post' });
    const { payload: at } = await verifyAccessToken(tr.access_token);
    assert.equal(at.sub, users.bob);
    assert.equal(at.preferred_username, 'bob');
    assert.equal(at.email, 'bob@example.com');
    assert.equal(at.groups, undefined);
    assert.equal(at.realm_access, undefined);
  });

  test('without scope=openid there is no ID token (the default scopes still apply)', async () => {
    const tr = await passwordToken({ idpPort: kc.port, username: 'bob', password: 'bob', scope: null });
    assert.equal(tr.id_token, undefined);
    assert.deepEqual(tr.scope.split(' ').sort(), ['email', 'profile']);
  });

  test('client credentials give a service-account token (basic and post auth)', async () => {
    const [api] = await adminApi(kc, 'GET', '/clients?clientId=api');
    const account = await adminApi(kc, 'GET', `/clients/${api.id}/service-account-user`);
    for (const auth of ['basic', 'post']) {
      // eslint-disable-next-line no-await-in-loop
      const tr = await clientCredentialsToken({ idpPort: kc.port, auth });
      assert.equal(tr.refresh_token, undefined);
      assert.equal(tr.refresh_expires_in, 0);
      // eslint-disable-next-line no-await-in-loop
      const { payload: at } = await verifyAccessToken(tr.access_token);
      assert.equal(at.azp, 'api');
      assert.equal(at.sub, account.id);
      assert.equal(at.preferred_username, 'service-account-api');
      assert.equal(at.email, undefined);
      assert.equal(at.groups, undefined);
      assert.equal(at.sid, undefined, 'no user session');
    }
  });

  test('wrong password, unknown user and wrong client secret are refused; gateway has no password grant', async () => {
    for (const [username, password] of [['alice', 'wrong'], ['mallory', 'mallory'], ['alice', '']]) {
      // eslint-disable-next-line no-await-in-loop
      const res = await http(kc.urls.token, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'password', client_id: 'api', client_secret: 'api-secret', username, password,
        }),
      });
      assert.deepEqual([res.status, res.json.error, res.json.error_description], [400, 'invalid_grant', 'Invalid user credentials'], `${username}/${password}: 400 as RFC 6749 §5.2 has it`);
    }
    await assert.rejects(
      passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice', clientSecret: 'nope' }),
      (err) => err.response.status === 401 && err.response.json.error === 'unauthorized_client',
    );
    await assert.rejects(
      passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice', ...gatewayClient }),
      (err) => err.response.status === 400 && err.response.json.error === 'unauthorized_client',
      'gateway has no direct access grants',
    );
  });

  test('the refresh_token grant keeps the session; userinfo answers for the new token', async () => {
    const tr = await passwordToken({ idpPort: kc.port, username: 'alice', password: 'alice' });
    const refreshed = await refreshTokenGrant({ idpPort: kc.port, refreshToken: tr.refresh_token });
    const { payload: at } = await verifyAccessToken(refreshed.access_token);
    assert.equal(at.sub, users.alice);
    assert.equal(at.sid, decodeJwt(tr.access_token).sid);
    assert.equal(typeof refreshed.refresh_token, 'string');
    assert.equal(typeof refreshed.id_token, 'string');
    const ui = await http(kc.urls.userinfo, { headers: { authorization: `Bearer ${refreshed.access_token}` } });
    assert.equal(ui.status, 200);
    assert.equal(ui.json.sub, users.alice);
    assert.deepEqual(ui.json.groups, ['/admins']);
    const bad = await http(kc.urls.userinfo, { headers: { authorization: `Bearer ${refreshed.access_token.slice(0, -4)}AAAA` } });
    assert.equal(bad.status, 401);
  });
});

describe('authorization-code flow (client gateway) over plain HTTP', () => {
  test('login form, PKCE, state, nonce, iss; refresh; SSO; RP-initiated logout ends the session', async () => {
    const flow = await authorize();
    const { result } = flow;
    assert.equal(result.stopped, true, `flow ended at ${result.url} (${result.response?.status})`);
    assert.ok(result.history.some((h) => h.url.includes('/login-actions/authenticate')), "Keycloak's own login form");
    const cb = new URL(result.url);
    assert.equal(`${cb.origin}${cb.pathname}`, flow.redirectUri, 'a loopback redirect URI on any port');
    assert.equal(cb.searchParams.get('state'), flow.state);
    assert.equal(cb.searchParams.get('iss'), kc.issuer);
    // Keycloak's cookies are scoped to the realm path, never sent to a gateway on the same host.
    for (const c of flow.jar.list()) assert.equal(c.path, '/realms/demo/', `cookie ${c.name}`);

    const tr = await redeem(flow);
    const { payload: id } = await jwtVerify(tr.id_token, jwks, { issuer: kc.issuer, audience: 'gateway' });
    assert.equal(id.nonce, flow.nonce);
    assert.equal(id.sub, users.alice);
    assert.deepEqual(id.groups, ['/admins']);
    assert.equal(typeof id.auth_time, 'number');
    assert.equal(typeof id.sid, 'string');
    const { payload: at } = await verifyAccessToken(tr.access_token, 'gateway');
    assert.equal(at.azp, 'gateway');
    assert.equal(at.sid, id.sid);
    assert.deepEqual(at.realm_access, { roles: ['backendaccess'] });

    const refreshed = await refreshTokenGrant({ idpPort: kc.port, refreshToken: tr.refresh_token, ...gatewayClient });
    assert.equal(decodeJwt(refreshed.id_token).sub, users.alice);
    assert.equal(decodeJwt(refreshed.access_token).sid, id.sid);

    // SSO: Keycloak's session cookie logs the next request in without a form.
    const again = await authorize({ jar: flow.jar, signIn: false });
    assert.equal(again.result.stopped, true);
    assert.ok(!again.result.history.some((h) => h.url.includes('/login-actions/')), 'no login page on SSO');

    // RP-initiated logout with id_token_hint, back to a registered post-logout URI (loopback,
    // any port); the session's tokens die.
    const logout = new URL(kc.urls.logout);
    const postLogout = `http://127.0.0.1:${flow.port}/`;
    logout.search = new URLSearchParams({
      id_token_hint: tr.id_token, post_logout_redirect_uri: postLogout, state: 'bye',
    }).toString();
    const out = await browse(logout.href, { jar: flow.jar, stopAt: (u) => u.port === String(flow.port) });
    assert.equal(out.stopped, true, `logout ended at ${out.url}`);
    assert.equal(new URL(out.url).searchParams.get('state'), 'bye');
    await assert.rejects(
      refreshTokenGrant({ idpPort: kc.port, refreshToken: refreshed.refresh_token, ...gatewayClient }),
      (err) => err.response.json.error === 'invalid_grant',
    );
    const afterLogout = await authorize({ jar: flow.jar, signIn: false });
    assert.equal(afterLogout.result.stopped, false, 'the password is asked for again');
    assert.match(afterLogout.result.response.body, /id="kc-form-login"/);
  });

  test('a code is single-use', async () => {
    const flow = await authorize({ username: 'bob', password: 'bob' });
    await redeem(flow);
    await assert.rejects(redeem(flow), (err) => err.response.json.error === 'invalid_grant');
  });

  test('PKCE is required (S256) and a wrong code_verifier is refused', async () => {
    const flow = await authorize({ username: 'bob', password: 'bob' });
    await assert.rejects(redeem(flow, { verifier: pkce().verifier }), (err) => err.response.json.error === 'invalid_grant');
    const without = await authorize({ username: 'bob', password: 'bob', challenge: false });
    assert.equal(without.result.stopped, true);
    const cb = new URL(without.result.url);
    assert.equal(cb.searchParams.get('code'), null, 'no code without a code challenge');
    assert.equal(cb.searchParams.get('error'), 'invalid_request');
  });

  test('wrong password re-renders the login form with an error', async () => {
    const { result } = await authorize({ username: 'alice', password: 'wrong' });
    assert.equal(result.loginFailed, true);
    assert.equal(result.response.status, 200);
    assert.match(result.response.body, /Invalid username or password\./);
    const form = formFromHtml(result.response.body, result.url, { id: 'kc-form-login' });
    assert.equal(form.method, 'POST');
  });

  test('an unregistered redirect URI gets an error page, not a redirect', async () => {
    for (const redirectUri of ['http://127.0.0.1:8080/elsewhere', 'http://localhost:8080/oauth2/callback', 'https://evil.example/oauth2/callback']) {
      const url = new URL(kc.urls.authorization);
      url.search = new URLSearchParams({
        client_id: 'gateway', response_type: 'code', scope: 'openid', redirect_uri: redirectUri,
      }).toString();
      // eslint-disable-next-line no-await-in-loop
      const res = await http(url.href, { headers: { accept: 'text/html' } });
      assert.equal(res.status, 400, redirectUri);
      assert.equal(res.headers.location, undefined);
      assert.match(res.body, /Invalid parameter: redirect_uri/);
    }
  });
});

describe('Envoy without the filter', () => {
  test('proxies to echo, which reflects method, path and headers', async () => {
    const envoy = await startEnvoy({ idpPort: kc.port, echoPort: echo.port, filterConfig: null });
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

describe('the test-only big user (a realm copy)', () => {
  let big;
  let bigJwks;
  before(async () => {
    big = await createRealmWithBigUser(kc, BIG_REALM);
    bigJwks = createLocalJWKSet((await http(big.certs)).json);
  });

  test('carol is not in the demo realm', async () => {
    await assert.rejects(
      passwordToken({ idpPort: kc.port, username: 'carol', password: 'carol' }),
      /invalid_grant/,
    );
    assert.ok(!realmFile('demo').users.some((u) => u.username === BIG_USER.username));
  });

  test("carol's 300 groups are in her ID and access tokens (each token over 12 KB)", async (t) => {
    const expectedGroups = Array.from({ length: BIG_USER_GROUP_COUNT }, (_, i) => bigUserGroup(i + 1));
    assert.equal(expectedGroups[0], '/teams/team-0001-platform-engineering');

    // Through the browser flow's client, as the gateway gets them...
    const flow = await authorize({ username: 'carol', password: 'carol', urls: big });
    assert.equal(flow.result.stopped, true, `flow ended at ${flow.result.url} (${flow.result.response?.status})`);
    const tr = await redeem(flow, { urls: big });
    const { payload: id } = await jwtVerify(tr.id_token, bigJwks, { issuer: big.issuer, audience: 'gateway' });
    const { payload: at } = await jwtVerify(tr.access_token, bigJwks, { issuer: big.issuer, audience: 'gateway' });
    for (const p of [id, at]) {
      assert.equal(p.preferred_username, 'carol');
      assert.equal(p.email, BIG_USER.email);
      assert.deepEqual([...p.groups].sort(), expectedGroups);
    }
    assert.deepEqual(at.realm_access.roles, ['backendaccess']);
    assert.equal(id.realm_access, undefined, 'roles are not in the ID token');
    t.diagnostic(`carol: ID token ${tr.id_token.length} bytes, access token ${tr.access_token.length} bytes`);
    assert.ok(tr.id_token.length > 12_000, `ID token ${tr.id_token.length} bytes`);
    assert.ok(tr.access_token.length > 12_000, `access token ${tr.access_token.length} bytes`);

    // ...and through the password grant.
    const pw = await passwordToken({ tokenUrl: big.token, username: 'carol', password: 'carol' });
    assert.deepEqual([...decodeJwt(pw.access_token).groups].sort(), expectedGroups);
  });
});
