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
    redirectUris: Object.freeze([`${GATEWAY_ORIGIN}${CALLBACK_PATH}`]),
    postLogoutRedirectUris: Object.freeze([`${GATEWAY_ORIGIN}/`]),
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

export function findUserByUsername(username) {
  if (typeof username !== 'string') return undefined;
  // Keycloak usernames are case-insensitive (stored lower-case).
  return Object.hasOwn(USERS, username.toLowerCase()) ? USERS[username.toLowerCase()] : undefined;
}

export function findUserBySub(sub) {
  return Object.values(USERS).find((u) => u.sub === sub);
}

/** Realm roles as they appear in `realm_access.roles`. */
export function realmRolesOf(user) {
  return [...DEFAULT_REALM_ROLES, ...(user?.realmRoles ?? [])];
}
