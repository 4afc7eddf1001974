// The demo realm: the users, roles and clients shared by the test bed, `make demo` and the
// docker-compose Keycloak realm in examples/ (DESIGN.md, "Demo data"). Tests and docs rely on
// these values: change them only together with the realm export.

export const REALM = 'demo';
export const REALM_PATH = `/realms/${REALM}`;

/** Realm roles every user holds, as in a fresh Keycloak realm (the default-roles-<realm> composite). */
export const DEFAULT_REALM_ROLES = Object.freeze(['default-roles-demo', 'offline_access', 'uma_authorization']);

/** Client roles of the built-in `account` client that default-roles-<realm> grants to every user. */
export const DEFAULT_ACCOUNT_ROLES = Object.freeze(['manage-account', 'view-profile']);

/**
 * Users. `sub` is stable (Keycloak user ids are UUIDs). `groups` are full group paths, as emitted by
 * Keycloak's group-membership mapper with "Full group path" on. `realmRoles` and `clientRoles` are
 * the roles held on top of the defaults.
 */
export const USERS = Object.freeze({
  alice: Object.freeze({
    sub: '0c7e2b4a-5d1f-4e8a-9b3c-a11ce0000001',
    username: 'alice',
    password: 'alice',
    email: 'alice@example.com',
    emailVerified: true,
    givenName: 'Alice',
    familyName: 'Liddell',
    groups: Object.freeze(['/admins']),
    realmRoles: Object.freeze(['backendaccess']),
    clientRoles: Object.freeze({ api: Object.freeze(['reader']) }),
  }),
  bob: Object.freeze({
    sub: '7f3d9c1e-2b6a-4c5d-8e9f-b0b000000002',
    username: 'bob',
    password: 'bob',
    email: 'bob@example.com',
    emailVerified: true,
    givenName: 'Bob',
    familyName: 'Builder',
    groups: Object.freeze([]),
    realmRoles: Object.freeze([]),
    clientRoles: Object.freeze({}),
  }),
});

/**
 * A test-only user with a very large claim set, to exercise the filter's cookie chunking and size
 * limits: `carol`/`carol`, realm role `backendaccess`, member of BIG_USER_GROUP_COUNT groups given
 * as full paths of about 40 bytes each (`/teams/team-0001-platform-engineering`, ...), so her
 * `groups` claim alone is about 12 KB of JSON in the ID token and in the access token. She exists
 * only when the IdP is started with `--big-user` (harness: `startIdp({bigUser: true})`) or in a
 * realm copy made for a test (lib/keycloak.mjs createRealmWithBigUser); she is not one of USERS and
 * not in the demo realm export. (The corp realm's carol, CORP.user, is another user.)
 */
export const BIG_USER_GROUP_COUNT = 300;

/** The n-th (1-based) of carol's group paths. */
export function bigUserGroup(n) {
  return `/teams/team-${String(n).padStart(4, '0')}-platform-engineering`;
}

export const BIG_USER = Object.freeze({
  sub: 'c4a01b2d-6e7f-4a8b-9c0d-ca501000003c',
  username: 'carol',
  password: 'carol',
  email: 'carol@example.com',
  emailVerified: true,
  givenName: 'Carol',
  familyName: 'Manyteams',
  groups: Object.freeze(Array.from({ length: BIG_USER_GROUP_COUNT }, (_, i) => bigUserGroup(i + 1))),
  realmRoles: Object.freeze(['backendaccess']),
  clientRoles: Object.freeze({}),
});

/**
 * Identity brokering (seed 000): realm `corp` (examples/keycloak/corp-realm.json) stands for the
 * corporate directory (Entra ID / Azure AD). Realm demo brokers it over OpenID Connect as
 * identity provider `corp`, through corp's confidential client `demo-broker`, trusting its
 * e-mail addresses, creating the user on the first sign-in without a profile review, and granting
 * every user it brokers the demo realm role `corp-user` (a hardcoded-role mapper). carol exists
 * in demo only once she has signed in through corp (username, e-mail and names from corp).
 */
export const CORP = Object.freeze({
  realm: 'corp',
  issuer: 'http://127.0.0.1:8180/realms/corp', // as in `make demo` and docker-compose
  idpAlias: 'corp',
  brokeredRole: 'corp-user',
  brokerClient: Object.freeze({
    clientId: 'demo-broker',
    secret: 'demo-broker-secret',
    // The demo realm's broker endpoint, and its loopback form for Keycloaks on other ports.
    redirectUris: Object.freeze([
      'http://127.0.0.1:8180/realms/demo/broker/corp/endpoint',
      'http://127.0.0.1/realms/demo/broker/corp/endpoint',
    ]),
  }),
  user: Object.freeze({
    username: 'carol',
    password: 'carol',
    email: 'carol@corp.example',
    emailVerified: true,
    givenName: 'Carol',
    familyName: 'Corporate',
  }),
});

/** Service-account users behind the client-credentials grant (Keycloak: "service-account-<client>"). */
export const SERVICE_ACCOUNTS = Object.freeze({
  api: Object.freeze({ sub: '3e8f1a2b-9c4d-4e6f-a7b8-5e4a1ce00003', username: 'service-account-api' }),
});

/** Default gateway port of the demo; the IdP also accepts callbacks on any other loopback port. */
export const GATEWAY_ORIGIN = 'http://127.0.0.1:8080';
export const CALLBACK_PATH = '/oauth2/callback';

/** Confidential clients. */
export const CLIENTS = Object.freeze({
  gateway: Object.freeze({
    clientId: 'gateway',
    secret: 'gateway-secret',
    grantTypes: Object.freeze(['authorization_code', 'refresh_token']),
    // The second is a loopback redirect URI (RFC 8252 §7.3): Keycloak accepts it on any port, so
    // test beds on free ports sign in against the same realm file.
    redirectUris: Object.freeze([`${GATEWAY_ORIGIN}${CALLBACK_PATH}`, `http://127.0.0.1${CALLBACK_PATH}`]),
    postLogoutRedirectUris: Object.freeze([`${GATEWAY_ORIGIN}/`, 'http://127.0.0.1/']),
  }),
  api: Object.freeze({
    clientId: 'api',
    secret: 'api-secret',
    // password = Keycloak's "Direct access grants"; client_credentials = "Service accounts roles".
    grantTypes: Object.freeze(['password', 'client_credentials', 'refresh_token']),
    redirectUris: Object.freeze([]),
    postLogoutRedirectUris: Object.freeze([]),
  }),
});

/** A user of USERS by username, else one of `extraUsers` (e.g. [BIG_USER] with --big-user). */
export function findUserByUsername(username, extraUsers = []) {
  if (typeof username !== 'string') return undefined;
  // Keycloak usernames are case-insensitive (stored lower-case).
  const name = username.toLowerCase();
  if (Object.hasOwn(USERS, name)) return USERS[name];
  return extraUsers.find((u) => u.username === name);
}

/** A user of USERS by `sub`, else one of `extraUsers`. */
export function findUserBySub(sub, extraUsers = []) {
  return Object.values(USERS).find((u) => u.sub === sub) ?? extraUsers.find((u) => u.sub === sub);
}

/** Realm roles as they appear in `realm_access.roles`. */
export function realmRolesOf(user) {
  return [...DEFAULT_REALM_ROLES, ...(user?.realmRoles ?? [])];
}
