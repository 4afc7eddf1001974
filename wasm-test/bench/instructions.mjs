#!/usr/bin/env node
// Issue 5: instructions per request of each request path of the pure core, counted by valgrind's
// callgrind — numbers that do not move with machine noise, for catching regressions.
//
//   node wasm-test/bench/instructions.mjs [--n 200] [--out wasm-test/bench/INSTRUCTIONS.md]
//     [--only public,session-cached] [--jobs 2] [--no-build]
//
// Builds `benches/callgrind/paths.rs` (example `paths`) in release (`cargo build --release --features bench-support
// --example paths`, symbols kept), runs each path under `valgrind --tool=callgrind` twice — with
// 0 and with N iterations — and reports (Ir(N) − Ir(0)) / N: the set-up (configuration, keys,
// tokens, sign-in, warm-up) is the same in both runs and cancels out. Inputs and signatures are
// deterministic, so two runs give the same counts. The callgrind files stay in
// target/callgrind/ for `callgrind_annotate target/callgrind/<path>-<N>.out`.
//
// Needs valgrind (Debian: `apt-get install valgrind`) and cargo. Takes about a minute.

import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({
  options: {
    n: { type: 'string', default: '200' },
    out: { type: 'string', default: join(REPO_ROOT, 'wasm-test', 'bench', 'INSTRUCTIONS.md') },
    only: { type: 'string' },
    jobs: { type: 'string', default: '2' },
    'no-build': { type: 'boolean', default: false },
  },
});
const N = Number(opt.n);
const JOBS = Number(opt.jobs);
for (const [k, v] of Object.entries({ n: N, jobs: JOBS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}
const BIN = join(REPO_ROOT, 'target', 'release', 'examples', 'paths');
const CG_DIR = join(REPO_ROOT, 'target', 'callgrind');
const started = Date.now();
const log = (m) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${m}\n`);

/** Runs a command to completion (bounded), returning stdout; rejects with its stderr on failure. */
function run(cmd, args, { env, timeoutMs = 600_000 } = {}) {
  return new Promise((resolveRun, reject) => {
    execFile(cmd, args, { cwd: REPO_ROOT, env: env ?? process.env, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const what = err.code === 'ENOENT' ? `${cmd} not found (is it installed?)` : `${cmd} ${args.join(' ')} failed: ${err.message}`;
        reject(new Error(`${what}\n${String(stderr).slice(-4000)}`));
      } else {
        resolveRun(String(stdout));
      }
    });
  });
}

/** Ir of a callgrind output file: its `summary:` line (older valgrind) or `totals:` line. */
async function totalIr(file) {
  const text = await readFile(file, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('summary:')) ?? text.split('\n').find((l) => l.startsWith('totals:'));
  if (!line) throw new Error(`${file}: no summary: or totals: line`);
  const events = text.split('\n').find((l) => l.startsWith('events:'))?.split(/\s+/).slice(1) ?? ['Ir'];
  const values = line.split(/\s+/).slice(1).map(Number);
  const ir = values[events.indexOf('Ir')];
  if (!Number.isFinite(ir)) throw new Error(`${file}: no Ir in ${JSON.stringify(line)}`);
  return ir;
}

async function callgrind(path, n) {
  const file = join(CG_DIR, `${path}-${n}.out`);
  await run('valgrind', ['--tool=callgrind', `--callgrind-out-file=${file}`, BIN, path, String(n)]);
  return totalIr(file);
}

/** Runs `tasks` (functions returning promises) with at most `jobs` at a time, in order of results. */
async function pool(tasks, jobs) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, tasks.length) }, worker));
  return results;
}

const fmt = (x) => Math.round(x).toLocaleString('en-US');

async function main() {
  const valgrindVersion = (await run('valgrind', ['--version'])).trim();
  const rustcVersion = (await run('rustc', ['--version'])).trim();
  const buildCmd = 'cargo build --release --features bench-support --example paths';
  if (!opt['no-build']) {
    log(`${buildCmd} (CARGO_PROFILE_RELEASE_STRIP=false, so that callgrind_annotate names functions)`);
    await run('cargo', buildCmd.split(' ').slice(1), { env: { ...process.env, CARGO_PROFILE_RELEASE_STRIP: 'false' }, timeoutMs: 1_200_000 });
  }
  await mkdir(CG_DIR, { recursive: true });
  const listed = (await run(BIN, ['--list'])).trim().split('\n').map((l) => l.split('\t'));
  const inputs = (await run(BIN, ['--inputs'])).trim().split('\n');
  const only = opt.only ? new Set(opt.only.split(',')) : null;
  if (only) {
    for (const p of only) if (!listed.some(([name]) => name === p)) throw new Error(`unknown path ${p}`);
  }
  const paths = listed.filter(([name]) => !only || only.has(name));

  const tasks = paths.flatMap(([name]) => [0, N].map((n) => async () => {
    const ir = await callgrind(name, n);
    log(`${name} N=${n}: ${fmt(ir)} Ir`);
    return ir;
  }));
  const irs = await pool(tasks, JOBS);
  const rows = paths.map(([name, what], i) => {
    const [ir0, irN] = [irs[2 * i], irs[2 * i + 1]];
    return { name, what, ir0, irN, perRequest: (irN - ir0) / N };
  });

  const command = `node ${relative(process.cwd(), fileURLToPath(import.meta.url)) || 'instructions.mjs'} ${process.argv.slice(2).join(' ')}`.trim();
  const md = [
    '# gatehouse: instructions per request (issue 5)',
    '',
    `Generated by \`${command}\` on ${new Date().toISOString()} (${Math.round((Date.now() - started) / 1000)} s in all).`,
    '',
    `- Build: \`${buildCmd}\` (release profile: opt-level 3, LTO; symbols kept), ${rustcVersion}`,
    `- Counted with ${valgrindVersion} (\`--tool=callgrind\`): each path runs with N = 0 and N = ${N}; the table shows (Ir(N) − Ir(0)) / N, so set-up cancels out`,
    `- Inputs (\`src/testutil/fixtures.rs\`): ${inputs.join('; ')}; 8 rules, default claim headers`,
    '- These are **x86-64 host instructions of the pure core** (`Engine::decide` and its parts), not instructions of the Wasm module in V8, and the glue\'s host calls (reading headers, setting them, metrics) are not included. They are for comparing commits: they do not move with machine load, and a change of a few tenths of a percent is real',
    '- Crypto rows are the least like Wasm: on x86-64 ring runs its assembly (SHA-256, Montgomery multiplication, P-256), which its Wasm build does not have, while Rust code (jwt-compact, base64ct, sha2, gatehouse\'s own) is the same code in both. valgrind\'s virtual CPU also lacks some extensions (SHA-NI, ADX), so the non-accelerated x86-64 paths are the ones counted. Compare a row with itself across commits, not with the Wasm timings of `bench.mjs`',
    `- Callgrind files: \`target/callgrind/<path>-${N}.out\`; \`callgrind_annotate --inclusive=yes target/callgrind/<path>-${N}.out\` shows where the instructions go`,
    '',
    '| path | what | instructions per request |',
    '|---|---|---:|',
    ...rows.map((r) => `| ${r.name} | ${r.what} | ${fmt(r.perRequest)} |`),
    '',
  ].join('\n');
  await writeFile(opt.out, md);
  for (const r of rows) process.stdout.write(`${r.name.padEnd(24)} ${fmt(r.perRequest).padStart(14)}\n`);
  log(`wrote ${relative(process.cwd(), opt.out)}`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  process.exit(1);
});
