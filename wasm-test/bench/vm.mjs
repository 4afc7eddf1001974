// Runs the built module's request paths inside V8 without Envoy, to see where a request's time
// goes *inside the VM* (issue 19): Node.js's V8 compiles the module as Envoy's does (TurboFan,
// no Liftoff), a small Proxy-Wasm host written here answers its host calls, and each path runs
// many times. It prints, per path, the time per request, the host calls it makes (by name), and,
// with --profile, the functions that take the time (V8's CPU profiler; build with symbols:
// `cargo build --profile profiling --target wasm32-wasip1`).
//
// This host is a measuring tool, not Envoy: the ABI calls cost what they cost in JavaScript
// (HOSTCALLS.md has what they cost in Envoy), so the figures that count are the in-VM time and
// the call counts. Inputs come from `paths --vm-inputs` (src/testutil/fixtures.rs): the same
// configuration, session cookie and tokens the instruction counts use.
//
//   node --no-liftoff --no-wasm-lazy-compilation wasm-test/bench/vm.mjs \
//        --wasm target/gatehouse-profiling.wasm [--inputs inputs.json] [--profile]
//        [--n 20000] [--rounds 3] [--out wasm-test/bench/VM.md]
//
// Without --inputs it runs `target/release/examples/paths --vm-inputs` (built by
// instructions.mjs, which `make bench` runs first). Bounded: each path runs --n times per round
// (default 20000) after 2000 warm-up requests; with --out, a last profiled round per path feeds
// the table of where the time goes.

import fs from 'node:fs';
import inspector from 'node:inspector/promises';
import { execFileSync } from 'node:child_process';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { demangle } from './rust-names.mjs';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const started = Date.now();

const { values: args } = parseArgs({
  options: {
    wasm: { type: 'string' },
    inputs: { type: 'string' },
    n: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    profile: { type: 'boolean', default: false },
    paths: { type: 'string' },
    out: { type: 'string' },
  },
});
if (!args.wasm) {
  console.error('usage: vm.mjs --wasm <module.wasm> [--inputs <paths --vm-inputs output>] [--profile] [--n N] [--rounds R] [--paths a,b] [--out VM.md]');
  process.exit(2);
}
const inputs = JSON.parse(args.inputs ? fs.readFileSync(args.inputs, 'utf8')
  : execFileSync(join(REPO_ROOT, 'target', 'release', 'examples', 'paths'), ['--vm-inputs'], { encoding: 'utf8' }));
const N = Number(args.n);
const ROUNDS = Number(args.rounds);
for (const [k, v] of Object.entries({ n: N, rounds: ROUNDS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const OK = 0, NOT_FOUND = 1;

let memory;
let exports;
const u8 = () => new Uint8Array(memory.buffer);
const dv = () => new DataView(memory.buffer);
const str = (ptr, len) => dec.decode(u8().subarray(ptr, ptr + len));

// Copies bytes into guest memory the way Envoy does: through the module's allocator.
function give(bytes, ptrPtr, sizePtr) {
  const p = exports.proxy_on_memory_allocate(bytes.length);
  u8().set(bytes, p);
  dv().setUint32(ptrPtr, p, true);
  dv().setUint32(sizePtr, bytes.length, true);
  return OK;
}

// The Proxy-Wasm header map serialization: count, (key len, value len)*, then key\0value\0*.
function serializePairs(pairs) {
  const parts = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
  let size = 4 + parts.length * 8;
  for (const [k, v] of parts) size += k.length + v.length + 2;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length, true);
  let off = 4;
  for (const [k, v] of parts) {
    view.setUint32(off, k.length, true);
    view.setUint32(off + 4, v.length, true);
    off += 8;
  }
  for (const [k, v] of parts) {
    out.set(k, off); off += k.length + 1;
    out.set(v, off); off += v.length + 1;
  }
  return out;
}

function parsePairs(ptr, size) {
  const view = dv();
  const n = view.getUint32(ptr, true);
  const lens = [];
  for (let i = 0; i < n; i++) lens.push([view.getUint32(ptr + 4 + i * 8, true), view.getUint32(ptr + 8 + i * 8, true)]);
  let off = ptr + 4 + n * 8;
  const out = [];
  for (const [kl, vl] of lens) {
    const k = str(off, kl); off += kl + 1;
    const v = str(off, vl); off += vl + 1;
    out.push([k, v]);
  }
  return out;
}

// The state of the one stream (or root callback) running.
const state = {
  maps: { 0: [], 2: [], 6: [] },
  callBody: new Uint8Array(0),
  calls: [],
  nextToken: 1,
  shared: new Map(),
  metrics: [],
  sent: null,
  counts: new Map(),
};
const serialized = new WeakMap();
const NAMES = Boolean(process.env.VM_NAMES);
const LOG = Boolean(process.env.VM_LOG);
const nowNs = BigInt(inputs.now) * 1000000000n;
let pluginConfig; // the configuration of the VM being set up

function count(name) {
  state.counts.set(name, (state.counts.get(name) ?? 0) + 1);
}

const env = {
  proxy_log(level, ptr, len) { count('log'); if (level >= 4 || LOG) console.error(`[module ${level}] ${str(ptr, len)}`); return OK; },
  proxy_get_log_level(ptr) { dv().setUint32(ptr, 2, true); return OK; },
  proxy_get_current_time_nanoseconds(ptr) { count('clock'); dv().setBigUint64(ptr, nowNs, true); return OK; },
  proxy_set_tick_period_milliseconds() { return OK; },
  proxy_get_buffer_bytes(type, start, max, ptrPtr, sizePtr) {
    count('get_buffer');
    const buf = type === 7 ? pluginConfig : type === 4 ? state.callBody : new Uint8Array(0);
    return give(buf.subarray(start >>> 0, (start >>> 0) + (max >>> 0)), ptrPtr, sizePtr);
  },
  proxy_get_header_map_pairs(type, ptrPtr, sizePtr) {
    count('get_headers');
    // Serialized once per map, so that this host's own cost stays out of the figures.
    const map = state.maps[type] ?? [];
    let bytes = serialized.get(map);
    if (!bytes) serialized.set(map, (bytes = serializePairs(map)));
    return give(bytes, ptrPtr, sizePtr);
  },
  proxy_get_header_map_value(type, kp, kl, ptrPtr, sizePtr) {
    count('get_header');
    const k = str(kp, kl);
    const hit = (state.maps[type] ?? []).find(([n]) => n === k);
    return hit ? give(enc.encode(hit[1]), ptrPtr, sizePtr) : NOT_FOUND;
  },
  // Changes to a map are counted, not made: every request of a path starts from the same map.
  proxy_replace_header_map_value(type, kp, kl) { count(NAMES ? `replace_header(${str(kp, kl)})` : 'replace_header'); return OK; },
  proxy_add_header_map_value() { count('add_header'); return OK; },
  proxy_remove_header_map_value(type, kp, kl) { count(NAMES ? `remove_header(${str(kp, kl)})` : 'remove_header'); return OK; },
  proxy_get_property(pp, pl, ptrPtr, sizePtr) { count('property'); return NOT_FOUND; },
  proxy_set_property() { return OK; },
  proxy_get_shared_data(kp, kl, ptrPtr, sizePtr, casPtr) {
    count('shared_get');
    const hit = state.shared.get(str(kp, kl));
    if (!hit) return NOT_FOUND;
    dv().setUint32(casPtr, hit.cas, true);
    return give(hit.value, ptrPtr, sizePtr);
  },
  proxy_set_shared_data(kp, kl, vp, vl, cas) {
    count('shared_set');
    const k = str(kp, kl);
    const old = state.shared.get(k);
    if (cas !== 0 && old && old.cas !== cas) return 8;
    state.shared.set(k, { value: u8().slice(vp, vp + vl), cas: (old?.cas ?? 0) + 1 });
    return OK;
  },
  proxy_define_metric(type, np, nl, idPtr) { dv().setUint32(idPtr, state.metrics.push(str(np, nl)) - 1, true); return OK; },
  proxy_increment_metric() { count('metric'); return OK; },
  proxy_record_metric() { count('metric'); return OK; },
  proxy_get_metric() { return NOT_FOUND; },
  proxy_http_call(up, ul, hp, hs, bp, bs, tp, ts, timeout, tokenPtr) {
    count('http_call');
    const token = state.nextToken++;
    state.calls.push({ token, headers: parsePairs(hp, hs) });
    dv().setUint32(tokenPtr, token, true);
    return OK;
  },
  proxy_send_local_response(status, dp, dl, bp, bl, hp, hs) {
    count('send_response');
    state.sent = status;
    return OK;
  },
  proxy_continue_stream() { return OK; },
  proxy_set_effective_context() { return OK; },
  proxy_done() { return OK; },
  proxy_call_foreign_function() { return NOT_FOUND; },
};

const wasi = {
  random_get(ptr, len) { count('random'); crypto.getRandomValues(u8().subarray(ptr, ptr + len)); return 0; },
  environ_sizes_get(countPtr, sizePtr) { dv().setUint32(countPtr, 0, true); dv().setUint32(sizePtr, 0, true); return 0; },
  environ_get() { return 0; },
  clock_time_get(id, precision, ptr) { count('clock'); dv().setBigUint64(ptr, nowNs, true); return 0; },
  fd_write(fd, iovs, n, written) { dv().setUint32(written, 0, true); return 0; },
  proc_exit(code) { throw new Error(`proc_exit(${code})`); },
  sched_yield() { return 0; },
};

const stub = (mod, table) => new Proxy(table, {
  get: (t, name) => t[name] ?? (() => { throw new Error(`host call ${mod}.${String(name)} is not provided`); }),
});

const module = await WebAssembly.compile(fs.readFileSync(args.wasm));
const imports = {};
for (const imp of WebAssembly.Module.imports(module)) {
  imports[imp.module] ??= imp.module === 'env' ? stub('env', env) : stub(imp.module, wasi);
}
const importsOf = (name) => Object.fromEntries(WebAssembly.Module.imports(module).filter((i) => i.module === name).map((i) => [i.name, imports[name][i.name]]));

// A VM (an instance of the module) configured with `config`, its discovery fetch answered;
// requests go to the VM last made or chosen with use().
const ROOT = 1;
async function vmWith(config) {
  const instance = await WebAssembly.instantiate(module, { env: importsOf('env'), wasi_snapshot_preview1: importsOf('wasi_snapshot_preview1') });
  const vm = { exports: instance.exports, memory: instance.exports.memory };
  use(vm);
  (exports._initialize ?? exports._start)?.();
  pluginConfig = enc.encode(JSON.stringify(config));
  exports.proxy_on_context_create(ROOT, 0);
  exports.proxy_on_vm_start(ROOT, 0);
  if (!exports.proxy_on_configure(ROOT, pluginConfig.length)) throw new Error('the module refused the configuration');
  for (let round = 0; round < 5; round++) {
    exports.proxy_on_tick(ROOT);
    for (const call of state.calls.splice(0)) {
      const path = call.headers.find(([k]) => k === ':path')?.[1] ?? '';
      const body = path.includes('openid-configuration') ? JSON.stringify(inputs.discovery) : '{"keys":[]}';
      state.callBody = enc.encode(body);
      state.maps[6] = [[':status', '200']];
      exports.proxy_on_http_call_response(ROOT, call.token, 1, state.callBody.length, 0);
    }
  }
  return vm;
}
function use(vm) {
  exports = vm.exports;
  memory = vm.memory;
}
const cachedVm = await vmWith(inputs.config);
const uncachedVm = inputs.uncached ? await vmWith(inputs.uncached.config) : null;
const requests = { ...inputs.requests, ...(inputs.uncached?.requests ?? {}) };
const vmOf = (name) => (inputs.uncached?.requests?.[name] ? uncachedVm : cachedVm);

const RESPONSE = [[':status', '200'], ['content-type', 'text/plain']];
let nextContext = 2;
function request(headers) {
  const ctx = nextContext++;
  state.maps[0] = headers;
  state.sent = null;
  exports.proxy_on_context_create(ctx, ROOT);
  const action = exports.proxy_on_request_headers(ctx, headers.length, 1);
  let status = state.sent;
  if (action === 0 && status === null) {
    status = 200;
    state.maps[2] = RESPONSE;
    exports.proxy_on_response_headers(ctx, 2, 1);
  }
  exports.proxy_on_log(ctx);
  exports.proxy_on_done(ctx);
  exports.proxy_on_delete(ctx);
  return status;
}

const want = {
  public: 200, 'session-cached': 200, 'bearer-cached': 200, 'bearer-cached-403': 403,
  'bearer-RS256-uncached': 200, 'bearer-ES256-uncached': 200, 'bearer-EdDSA-uncached': 200, 'session-miss': 200,
};
const what = {
  public: 'public path, no credentials',
  'session-cached': 'session cookie seen before (cache hit), allowed',
  'bearer-cached': 'repeated RS256 bearer token (token-cache hit), allowed',
  'bearer-cached-403': 'repeated bearer token, denied by a rule (403 JSON)',
  'bearer-RS256-uncached': 'RS256 bearer token, verified every time (cache.tokens = 0)',
  'bearer-ES256-uncached': 'ES256 bearer token, verified every time (cache.tokens = 0)',
  'bearer-EdDSA-uncached': 'EdDSA bearer token, verified every time (cache.tokens = 0)',
  'session-miss': 'session cookie opened every time (cache.tokens = 0)',
};
const names = args.paths ? args.paths.split(',') : Object.keys(requests);
const profiling = args.profile || Boolean(args.out);
let session;
if (profiling) {
  session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 50 });
}

function run(headers) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) request(headers);
  return Number(process.hrtime.bigint() - t0) / 1000 / N;
}

const results = [];
for (const name of names) {
  const headers = requests[name];
  if (!headers) throw new Error(`no path ${name}; the paths: ${Object.keys(requests).join(', ')}`);
  use(vmOf(name));
  for (let i = 0; i < 2000; i++) {
    const s = request(headers);
    if (i === 0 && want[name] && s !== want[name]) throw new Error(`${name}: status ${s}, expected ${want[name]}`);
  }
  state.counts.clear();
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(run(headers));
  const calls = [...state.counts].map(([k, v]) => [k, v / (N * ROUNDS)]);
  let top = [];
  if (session) {
    await session.post('Profiler.start');
    run(headers);
    const { profile } = await session.post('Profiler.stop');
    top = selfTimes(profile);
  }
  const median = [...rounds].sort((a, b) => a - b)[Math.floor(rounds.length / 2)];
  results.push({ name, median, rounds, calls, top });
  console.log(`${name}: ${median.toFixed(2)} µs per request (rounds ${rounds.map((u) => u.toFixed(2)).join(', ')}); host calls per request: ${calls.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  if (args.profile) for (const [fn, share] of top) console.log(`  ${(100 * share).toFixed(1).padStart(5)}%  ${fn.slice(0, 140)}`);
}

// Self time by function, from V8's sampled profile: wasm functions by their (mangled) names,
// this script's host functions as `js:` (they stand in for Envoy's side, which costs otherwise).
function selfTimes(profile) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const total = profile.samples.length;
  for (const id of profile.samples) {
    const n = byId.get(id);
    const fn = n.callFrame.functionName || `(${n.callFrame.url || 'anonymous'})`;
    const key = n.callFrame.url.startsWith('wasm://') || n.callFrame.url === '' ? fn : `js:${fn}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([fn, c]) => [fn, c / total]);
}

if (args.out) {
  const rel = (p) => relative(REPO_ROOT, resolve(p));
  const lines = [
    '# gatehouse inside the VM: time and host calls per request (issue 19)',
    '',
    `Generated by \`node --no-liftoff --no-wasm-lazy-compilation wasm-test/bench/vm.mjs --wasm ${rel(args.wasm)} --out ${rel(args.out)}\` on ${new Date().toISOString()} (${Math.round((Date.now() - started) / 1000)} s).`,
    '',
    `- The built module (release profile with function names kept: \`cargo build --profile profiling --target wasm32-wasip1\`, ${fs.statSync(args.wasm).size} bytes with names) in Node.js ${process.version}'s V8, compiled as Envoy compiles it (TurboFan only), driven through the Proxy-Wasm ABI by a host written in \`vm.mjs\`: context created, request headers, response headers, log, done, delete — what Envoy calls for each request`,
    '- Inputs: `paths --vm-inputs` (src/testutil/fixtures.rs), the configuration, session cookie and token of INSTRUCTIONS.md',
    `- ${N} requests per round after 2000 of warm-up, ${ROUNDS} rounds; the host serializes each header map once and counts changes instead of making them, so the time is the module's own plus a little JavaScript`,
    '- In Envoy every host call costs what HOSTCALLS.md measures, on top of this; the calls each path makes are listed here',
    '',
    '| path | what | µs per request in the VM (median) | rounds | host calls per request |',
    '|---|---|---:|---|---|',
    ...results.map((r) => `| ${r.name} | ${what[r.name] ?? ''} | ${r.median.toFixed(2)} | ${r.rounds.map((u) => u.toFixed(2)).join(', ')} | ${r.calls.map(([k, v]) => `${k} ×${v.toFixed(0)}`).join(', ')} |`),
    '',
    '## Where the time goes (self time, V8 sampling profiler, one more round per path)',
    '',
    ...results.flatMap((r) => [
      `### ${r.name}`,
      '',
      '| share | function |',
      '|---:|---|',
      ...r.top.map(([fn, share]) => `| ${(100 * share).toFixed(1)}% | \`${demangle(fn).slice(0, 120).replace(/\|/g, '\\|')}\` |`),
      '',
    ]),
  ];
  fs.writeFileSync(args.out, `${lines.join('\n')}\n`);
  console.log(`wrote ${args.out}`);
}
