#!/usr/bin/env node
// `make e2e`: one real Keycloak for the whole run, shared by every test file (their
// startKeycloak() hands it out through GATEHOUSE_KEYCLOAK_URL), then `node --test` on the files.
// Keycloak is stopped at the end; its log is kept (the path is printed) when a test failed.
//
//   node run-e2e.mjs [files or directories...]   (default: e2e/)

import { spawn } from 'node:child_process';

import { startKeycloak } from './lib/keycloak.mjs';
import { keepLogs, stopAll } from './lib/processes.mjs';

const targets = process.argv.slice(2);
const t0 = Date.now();
const kc = await startKeycloak({ shared: false });
process.stderr.write(`run-e2e: Keycloak ready at ${kc.url} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
const child = spawn(process.execPath, [
  '--test', '--test-concurrency=1', '--test-timeout=180000', ...(targets.length ? targets : ['e2e/']),
], { stdio: 'inherit', env: { ...process.env, GATEHOUSE_KEYCLOAK_URL: kc.url } });
const code = await new Promise((resolve) => {
  child.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
});
if (code !== 0) keepLogs();
await stopAll();
process.exit(code);
