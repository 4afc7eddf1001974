// The test harness for `node --test` end-to-end tests, bench, soak and demo: an index that only
// re-exports from the modules that hold each concern (import from here or from the module):
//
//   processes.mjs        run directory, process registry, stop by PID, stopAll, bounded waits
//   ports.mjs            free ports on 127.0.0.1, port checks
//   http.mjs             the HTTP client (never follows redirects)
//   browser.mjs          browser-less login flows: cookie jar, HTML forms, browse()
//   keycloak.mjs         real Keycloak: start (or the run's shared one), URLs, admin API, realm copies
//   echo.mjs             the echo upstream: start
//   envoy.mjs            Envoy: binary, bootstrap, validate, start, admin stats
//   tokens.mjs           the bearer-token bed, the keys proxy, Keycloak's token grants
//   credential-scan.mjs  secrets must never reach Envoy's logs (noted, scanned by stopAll)

export {
  WASM_TEST_DIR, REPO_ROOT, runDirectory, stopProcess, stopAll, keepLogs, waitFor, onStopAll,
} from './processes.mjs';
export { freePort, assertPortFree } from './ports.mjs';
export { http } from './http.mjs';
export { CookieJar, formFromHtml, browse } from './browser.mjs';
export {
  startKeycloak, keycloakUrls, adminApi, createRealmCopy, deleteRealm, signalKeycloak,
} from './keycloak.mjs';
export { startEcho } from './echo.mjs';
export {
  envoyBin, envoyBootstrap, writeBootstrap, envoyValidate, startEnvoy, envoyStats, waitForSignIn,
} from './envoy.mjs';
export {
  startTokenBed, keysProxy, tokenRequest, passwordToken, clientCredentialsToken, refreshTokenGrant,
} from './tokens.mjs';
export { noteSecret, secretsInFiles } from './credential-scan.mjs';
