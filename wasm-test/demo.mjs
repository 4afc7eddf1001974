#!/usr/bin/env node
// `make demo`: Keycloak on 127.0.0.1:8180 (the realms of examples/keycloak/*.json), the
// echo service on 127.0.0.1:8081 and Envoy with gatehouse on 127.0.0.1:8080 (admin
// 127.0.0.1:9901, 2 workers). Stays in the foreground; Ctrl-C stops all three.
//
//   node demo.mjs [--config configs/demo.json] [--vm-env NAME=VALUE ...] [--no-filter]
//     [--keycloak-db DIR] path/to/gatehouse.wasm
//
// Envoy comes from $ENVOY_BIN, else <repo>/.venv/bin/envoy; Keycloak from .tools/ (make deps).
// Keycloak's database is kept in wasm-test/.run/keycloak-demo-db/ (a copy of the prepared one,
// made on the first run), so its keys, sessions and whatever you change in its admin console
// survive a restart of the demo; delete that folder to start over. When the realm files change,
// the next start makes a new copy (the folder records which realm files it was made from). Logs go to
// wasm-test/.run/gatehouse-test-*/ (the previous run's are removed).

import {
  cpSync, existsSync, readFileSync, readdirSync, rmSync, mkdirSync, writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const HERE = import.meta.dirname ?? new URL('.', import.meta.url).pathname;
const RUN = join(HERE, '.run');
mkdirSync(RUN, { recursive: true });
for (const name of readdirSync(RUN)) {
  if (name.startsWith('gatehouse-test-')) rmSync(join(RUN, name), { recursive: true, force: true });
}
process.env.GATEHOUSE_TEST_RUN_DIR = RUN;

const {
  startEcho, startEnvoy, stopAll, keepLogs, runDirectory, envoyBin,
} = await import('./lib/harness.mjs');
const {
  startKeycloak, assertKeycloakInstalled, KEYCLOAK_DB, KEYCLOAK_ADMIN, KEYCLOAK_VERSION, REALM_FILES,
} = await import('./lib/keycloak.mjs');

const USAGE = 'usage: node demo.mjs [--config configs/demo.json] [--vm-env NAME=VALUE ...] [--no-filter] [--keycloak-db DIR] path/to/gatehouse.wasm';
const PORTS = { gateway: 8080, admin: 9901, idp: 8180, echo: 8081 };

function fail(message) {
  console.error(`demo: ${message}`);
  process.exit(1);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      config: { type: 'string', default: join(HERE, 'configs', 'demo.json') },
      'vm-env': { type: 'string', multiple: true, default: [] },
      'no-filter': { type: 'boolean', default: false },
      'keycloak-db': { type: 'string', default: join(RUN, 'keycloak-demo-db') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

const noFilter = values['no-filter'];
let wasmPath;
let filterConfig = null;
if (!noFilter) {
  if (positionals.length !== 1) fail(`the Wasm module path is required\n${USAGE}`);
  wasmPath = resolve(positionals[0]);
  if (!existsSync(wasmPath)) fail(`no Wasm module at ${wasmPath} (run make build)`);
  try {
    filterConfig = JSON.parse(readFileSync(values.config, 'utf8'));
  } catch (err) {
    fail(`cannot read the filter configuration ${values.config}: ${err.message}`);
  }
}
const keyValues = {};
for (const kv of values['vm-env']) {
  const i = kv.indexOf('=');
  if (i < 1) fail(`--vm-env expects NAME=VALUE, got ${JSON.stringify(kv)}`);
  keyValues[kv.slice(0, i)] = kv.slice(i + 1);
}

try {
  assertKeycloakInstalled();
} catch (err) {
  fail(err.message);
}
const keycloakDb = resolve(values['keycloak-db']);
{
  // Which realm files the copy was made from: a copy made from older ones lacks what they add.
  const realms = createHash('sha256');
  for (const f of REALM_FILES) realms.update(readFileSync(f));
  const made = realms.digest('hex');
  const stamp = join(keycloakDb, 'realm-files.sha256');
  const have = existsSync(stamp) ? readFileSync(stamp, 'utf8').trim() : undefined;
  if (existsSync(join(keycloakDb, 'keycloakdb.mv.db')) && have !== made) {
    console.log(`demo: the realm files changed since ${keycloakDb} was made: starting from a new copy`);
    rmSync(keycloakDb, { recursive: true, force: true });
  }
  if (!existsSync(join(keycloakDb, 'keycloakdb.mv.db'))) {
    cpSync(KEYCLOAK_DB, keycloakDb, { recursive: true });
    writeFileSync(stamp, `${made}\n`);
  }
}

keepLogs();
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (!stopping) console.log('\ndemo: stopping (Keycloak, echo, Envoy)...');
    stopping = true;
  });
}

let procs;
try {
  console.log(`demo: Envoy ${envoyBin()}`);
  console.log(`demo: starting Keycloak ${KEYCLOAK_VERSION} (about 15 s)...`);
  const [idp, echo] = await Promise.all([
    startKeycloak({ port: PORTS.idp, db: keycloakDb, shared: false }),
    startEcho({ port: PORTS.echo }),
  ]);
  const envoy = await startEnvoy({
    listenPort: PORTS.gateway,
    adminPort: PORTS.admin,
    idpPort: PORTS.idp,
    echoPort: PORTS.echo,
    wasmPath,
    filterConfig,
    concurrency: 2,
    vmEnv: Object.keys(keyValues).length ? { keyValues } : undefined,
  });
  procs = { keycloak: idp, echo, envoy };
} catch (err) {
  console.error(`demo: could not start: ${err.message}`);
  await stopAll();
  process.exit(1);
}

const token = 'http://127.0.0.1:8180/realms/demo/protocol/openid-connect/token';
console.log(`
gatehouse demo is running${noFilter ? ' WITHOUT the filter (--no-filter)' : ''}. Ctrl-C stops it.

  gateway  http://127.0.0.1:${PORTS.gateway}   Envoy${noFilter ? '' : ' + gatehouse'}, admin http://127.0.0.1:${PORTS.admin}/
  Keycloak http://127.0.0.1:${PORTS.idp}/realms/demo   users alice/alice (group admins, role backendaccess), bob/bob
           realm corp (brokered into demo as identity provider "corp"): carol/carol, by the
           "corp" button on the login page; she arrives with role corp-user
           admin console http://127.0.0.1:${PORTS.idp}/admin/  (demo only: ${KEYCLOAK_ADMIN.username}/${KEYCLOAK_ADMIN.password})
  echo     http://127.0.0.1:${PORTS.echo}   returns the request it got, as JSON

A token for alice (client "api", password grant):

  TOKEN=$(curl -s ${token} \\
    -d grant_type=password -d client_id=api -d client_secret=api-secret \\
    -d username=alice -d password=alice -d scope=openid \\
    | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).access_token')

Then:

  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:${PORTS.gateway}/echo      # 200, x-auth-request-* headers added
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:${PORTS.gateway}/admin/    # 200 for alice; 403 with bob's token
  curl -i http://127.0.0.1:${PORTS.gateway}/echo                                     # 401: no token
  curl http://127.0.0.1:${PORTS.gateway}/public/hello                                # 200: public path, no token needed

In a browser: http://127.0.0.1:${PORTS.gateway}/echo — sign in as alice/alice (or bob/bob, who gets
403 on /admin/); sign out at http://127.0.0.1:${PORTS.gateway}/oauth2/sign_out

A service token (client credentials):

  curl -s ${token} -d grant_type=client_credentials -d client_id=api -d client_secret=api-secret


Logs: ${runDirectory()}
`);

// Stay in the foreground; if a process dies on its own, say which and stop the others.
for (const [name, proc] of Object.entries(procs)) {
  proc.exit.then(async ({ code, signal }) => {
    if (stopping) return;
    stopping = true;
    console.error(`demo: ${name} (pid ${proc.pid}) exited unexpectedly (code ${code}, signal ${signal})\n${proc.log()}`);
    await stopAll();
    process.exit(1);
  });
}
setInterval(() => {}, 60_000);
