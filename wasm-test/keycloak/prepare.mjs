#!/usr/bin/env node
// `make deps`: imports the realms users import (examples/keycloak/*.json) into a fresh Keycloak
// database, once, so that every later start of Keycloak (tests, demo) begins from a copy of it
// instead of creating its schema and importing again (about 16 s instead of 28 s here).
//
//   node wasm-test/keycloak/prepare.mjs
//
// Writes .tools/keycloak-db/ (replaced whole, only when this succeeds).

import { cpSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';

import {
  KEYCLOAK_DB, KEYCLOAK_HOME, REALM_FILES, startKeycloak,
} from '../lib/keycloak.mjs';
import { stopAll } from '../lib/processes.mjs';

const started = Date.now();
const fresh = `${KEYCLOAK_DB}.new`;
rmSync(fresh, { recursive: true, force: true });
mkdirSync(fresh, { recursive: true });
// --import-realm reads the distribution's data/import directory.
const importDir = join(KEYCLOAK_HOME, 'data', 'import');
rmSync(importDir, { recursive: true, force: true });
mkdirSync(importDir, { recursive: true });
for (const f of REALM_FILES) cpSync(f, join(importDir, basename(f)));

try {
  const kc = await startKeycloak({ db: fresh, extraArgs: ['--import-realm'], shared: false, timeoutMs: 180_000 });
  process.stdout.write(`keycloak: realms imported in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  await kc.stop();
  rmSync(KEYCLOAK_DB, { recursive: true, force: true });
  renameSync(fresh, KEYCLOAK_DB);
} finally {
  rmSync(importDir, { recursive: true, force: true });
  await stopAll();
}
