// The demo data (DESIGN.md, "Demo data") that tests and docs rely on, as the realm file users
// import (examples/keycloak/demo-realm.json) must hold it: e2e/examples.test.mjs checks the file
// against these values. Change them only together with the realm file.

export const REALM = 'demo';

/**
 * Users of the demo realm. `groups` are full group paths, as Keycloak's group-membership mapper
 * emits them with "Full group path" on; `realmRoles` are the realm roles the file gives them
 * (Keycloak's tokens carry no others: the realm has no default roles).
 */
export const USERS = Object.freeze({
  alice: Object.freeze({
    username: 'alice',
    password: 'alice',
    email: 'alice@example.com',
    emailVerified: true,
    givenName: 'Alice',
    familyName: 'Liddell',
    groups: Object.freeze(['/admins']),
    realmRoles: Object.freeze(['backendaccess']),
  }),
  bob: Object.freeze({
    username: 'bob',
    password: 'bob',
    email: 'bob@example.com',
    emailVerified: true,
    givenName: 'Bob',
    familyName: 'Builder',
    groups: Object.freeze([]),
    realmRoles: Object.freeze([]),
  }),
});

/**
 * A test-only user with a very large claim set, to exercise the filter's cookie chunking and size
 * limits: `carol`/`carol`, realm role `backendaccess`, member of BIG_USER_GROUP_COUNT groups given
 * as full paths of about 40 bytes each (`/teams/team-0001-platform-engineering`, ...), so her
 * `groups` claim alone is about 12 KB of JSON in the ID token and in the access token. She exists
 * only in realm copies made by lib/keycloak.mjs createRealmWithBigUser(); she is not one of USERS
 * and not in the realm files. (The corp realm's carol, CORP.user, is another user.)
 */
export const BIG_USER_GROUP_COUNT = 300;

/** The n-th (1-based) of carol's group paths. */
export function bigUserGroup(n) {
  return `/teams/team-${String(n).padStart(4, '0')}-platform-engineering`;
}

export const BIG_USER = Object.freeze({
  username: 'carol',
  password: 'carol',
  email: 'carol@example.com',
  emailVerified: true,
  givenName: 'Carol',
  familyName: 'Manyteams',
  groups: Object.freeze(Array.from({ length: BIG_USER_GROUP_COUNT }, (_, i) => bigUserGroup(i + 1))),
  realmRoles: Object.freeze(['backendaccess']),
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

/** Default gateway port of the demo; Keycloak also accepts callbacks on any other loopback port. */
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
