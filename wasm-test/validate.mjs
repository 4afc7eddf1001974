#!/usr/bin/env node
// `make validate`: `envoy --mode validate` on the bootstraps the test bed generates (the demo's,
// without and with the gatehouse filter), on every shipped Envoy config in examples/ (with the
// module path `/etc/envoy/gatehouse.wasm` pointed at the built module), and on any bootstrap files
// given as arguments.
//
//   node validate.mjs [--wasm path/to/gatehouse.wasm] [--require-wasm] [bootstrap.{json,yaml} ...]
//
// Envoy's validate mode loads the Wasm module and runs its configuration, so the variant with the
// filter needs the built module: --wasm, else $WASM, else <repo>/target/wasm32-wasip1/release/
// gatehouse.wasm. Without one it is reported as skipped, or failed with --require-wasm.
// Ends with "N passed, N failed"; exits 1 if anything failed.

import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import {
  REPO_ROOT, envoyBin, envoyBootstrap, envoyValidate, writeBootstrap,
} from './lib/harness.mjs';

const HERE = import.meta.dirname ?? new URL('.', import.meta.url).pathname;

const { values, positionals } = parseArgs({
  options: {
    wasm: { type: 'string' },
    'require-wasm': { type: 'boolean', default: false },
  },
  allowPositionals: true,
  strict: true,
});

const wasmPath = resolve(values.wasm ?? process.env.WASM ?? join(REPO_ROOT, 'target', 'wasm32-wasip1', 'release', 'gatehouse.wasm'));
const demoConfig = JSON.parse(readFileSync(join(HERE, 'configs', 'demo.json'), 'utf8'));
const ports = {
  listenPort: 8080, adminPort: 9901, idpPort: 8180, echoPort: 8081,
};

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-validate-'));
const checks = [
  { name: 'demo bootstrap without the filter', make: () => envoyBootstrap({ ...ports, filterConfig: null }) },
  {
    name: `demo bootstrap with gatehouse (${wasmPath})`,
    needsWasm: true,
    make: () => envoyBootstrap({
      ...ports, wasmPath, filterConfig: demoConfig,
    }),
  },
  ...readdirSync(join(REPO_ROOT, 'examples'))
    .filter((f) => /^envoy.*\.ya?ml$/.test(f))
    .map((f) => ({
      name: `examples/${f}`,
      needsWasm: true,
      make: () => readFileSync(join(REPO_ROOT, 'examples', f), 'utf8').replaceAll('/etc/envoy/gatehouse.wasm', wasmPath),
      ext: '.yaml',
    })),
  ...positionals.map((file) => ({ name: file, file: resolve(file) })),
];

let passed = 0;
let failed = 0;
let skipped = 0;
console.log(`validate: Envoy ${envoyBin()}`);
try {
  for (const [i, check] of checks.entries()) {
    if (check.needsWasm && !existsSync(wasmPath)) {
      if (values['require-wasm']) {
        failed += 1;
        console.log(`FAIL ${check.name}: no Wasm module (run make build)`);
      } else {
        skipped += 1;
        console.log(`skip ${check.name}: no Wasm module (run make build)`);
      }
      continue;
    }
    let { file } = check;
    if (!file && check.ext === '.yaml') {
      file = join(dir, `bootstrap-${i}.yaml`);
      writeFileSync(file, check.make());
    } else if (!file) {
      file = writeBootstrap(join(dir, `bootstrap-${i}.json`), check.make());
    }
    // eslint-disable-next-line no-await-in-loop
    const { ok, output } = await envoyValidate(file);
    if (ok) {
      passed += 1;
      console.log(`ok   ${check.name}`);
    } else {
      failed += 1;
      console.log(`FAIL ${check.name}\n${output.trimEnd().split('\n').map((l) => `     ${l}`).join('\n')}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
