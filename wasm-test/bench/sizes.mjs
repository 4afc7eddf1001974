// The module's size by crate (issue 19): each function's body size from the code section, named
// by the name section of the build that keeps names (`cargo build --profile profiling`, then
// `wasm-opt -Oz -g` as `make build` optimizes the release build: the same
// code as the release build, which strips the names), and grouped by the crate its (demangled)
// path starts with; data segments on their own rows. Generic functions count for the crate that
// defines them, wherever they were instantiated.
//
//   node wasm-test/bench/sizes.mjs --wasm target/gatehouse-profiling.wasm \
//        --release target/gatehouse.wasm [--out wasm-test/bench/SIZES.md]
//
// `--top N` prints the N largest functions instead, for finding what to cut.

import fs from 'node:fs';
import { relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { demangle, legacySegments } from './rust-names.mjs';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: args } = parseArgs({ options: { wasm: { type: 'string' }, release: { type: 'string' }, out: { type: 'string' }, top: { type: 'string' } } });
if (!args.wasm) {
  console.error('usage: sizes.mjs --wasm <module with names> [--release <stripped module>] [--out SIZES.md] [--top N]');
  process.exit(2);
}
const bytes = fs.readFileSync(args.wasm);

function leb(buf, at) {
  let result = 0;
  let shift = 0;
  let i = at;
  for (;;) {
    const b = buf[i++];
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (b < 0x80) return [result, i];
  }
}

// Sections: imported function count (function indices start after them), code bodies, data
// segments, and function names.
let imported = 0;
const bodies = [];
const data = [];
const names = new Map();
const sections = {};
let at = 8;
while (at < bytes.length) {
  const id = bytes[at];
  const [size, start] = leb(bytes, at + 1);
  const end = start + size;
  if (id === 2) {
    let [n, i] = leb(bytes, start);
    for (; n > 0; n--) {
      let len;
      [len, i] = leb(bytes, i); i += len; // module
      [len, i] = leb(bytes, i); i += len; // name
      const kind = bytes[i++];
      if (kind === 0) { imported++; [, i] = leb(bytes, i); }
      else if (kind === 1) { i += 1; const flags = bytes[i++]; [, i] = leb(bytes, i); if (flags & 1) [, i] = leb(bytes, i); }
      else if (kind === 2) { const flags = bytes[i++]; [, i] = leb(bytes, i); if (flags & 1) [, i] = leb(bytes, i); }
      else if (kind === 3) { i += 2; }
      else throw new Error(`unknown import kind ${kind}`);
    }
  } else if (id === 10) {
    let [n, i] = leb(bytes, start);
    for (; n > 0; n--) {
      const [len, j] = leb(bytes, i);
      bodies.push(len + (j - i));
      i = j + len;
    }
  } else if (id === 11) {
    data.push(size);
  } else if (id === 0) {
    const [nl, j] = leb(bytes, start);
    const name = bytes.subarray(j, j + nl).toString();
    if (name === 'name') {
      let k = j + nl;
      while (k < end) {
        const sub = bytes[k];
        const [ss, s0] = leb(bytes, k + 1);
        if (sub === 1) {
          let [cnt, m] = leb(bytes, s0);
          for (; cnt > 0; cnt--) {
            let idx; let len;
            [idx, m] = leb(bytes, m);
            [len, m] = leb(bytes, m);
            names.set(idx, bytes.subarray(m, m + len).toString());
            m += len;
          }
        }
        k = s0 + ss;
      }
    }
    sections[`custom:${name}`] = (sections[`custom:${name}`] ?? 0) + size;
  }
  if (id !== 0) sections[id] = (sections[id] ?? 0) + size;
  at = end;
}

// The crate of a (mangled) function name: legacy (`_ZN<len><ident>…`) and v0 (`_R…`) Rust
// mangling give the first path segment; `<impl X for Y>` paths count for the trait's crate when
// the type is a std one, else for the type's; C functions from ring's C/asm by prefix.
function crateOf(raw) {
  if (/^(ring_core_|fiat_|GFp|ecp_|p256_|p384_|nistz|x25519|ge_|fe_|sc_|aes_|gcm_|bn_|LIMBS|limbs_|elem_|add_precomputed|ChaCha|CRYPTO_|OPENSSL)/.test(raw)) return 'ring (C)';
  if (/^(dlmalloc|dlfree|dlrealloc|malloc|free|realloc|calloc|dispose_chunk|prepend_alloc|internal_memalign|posix_memalign|sbrk|abort|memcpy|memmove|memset|memcmp|strlen|strncmp|getenv|writev|__[a-z])/.test(raw)) return 'libc (wasi)';
  if (raw.startsWith('proxy_on_') || raw.startsWith('proxy_abi')) return 'proxy_wasm';
  const segs = legacySegments(raw);
  if (segs) {
    const first = segs[0] ?? '';
    // `<Type as Trait>`: the type's crate, or the trait's when the type is generic or a primitive.
    const impl = /^_?<(?:&(?:mut )?)?\[?([A-Za-z_][A-Za-z0-9_]*)[^ ]*(?: as (?:&(?:mut )?)?([A-Za-z_][A-Za-z0-9_]*))?/.exec(first);
    if (impl) {
      const primitive = /^([A-Z]|[A-Z][0-9]?|str|bool|char|[uif](8|16|32|64|128|size)|dyn|mut)$/.test(impl[1]);
      return primitive && impl[2] ? impl[2] : impl[1];
    }
    return (/^([A-Za-z_][A-Za-z0-9_]*)/.exec(first) ?? [, first])[1];
  }
  if (raw.startsWith('_R')) {
    // v0 mangling: the first crate root, `C` with an optional `s<hash>_` disambiguator.
    const v0 = /C(?:s[0-9A-Za-z]*_)?(\d+)([A-Za-z_][A-Za-z0-9_]*)/.exec(raw.slice(2));
    if (v0) return v0[2].slice(0, Number(v0[1]));
  }
  return raw.split(/[:<]/)[0] || 'other';
}

if (args.top) {
  const all = bodies.map((size, i) => [size, names.get(i + imported) ?? `#${i + imported}`]);
  all.sort((a, b) => b[0] - a[0]);
  for (const [size, name] of all.slice(0, Number(args.top))) console.log(`${String(size).padStart(7)}  ${crateOf(name).padEnd(12)} ${demangle(name)}`);
  process.exit(0);
}

const byCrate = new Map();
let code = 0;
bodies.forEach((size, i) => {
  const crate = crateOf(names.get(i + imported) ?? '');
  code += size;
  byCrate.set(crate, (byCrate.get(crate) ?? 0) + size);
});
const dataBytes = data.reduce((a, b) => a + b, 0);
const rows = [...byCrate].sort((a, b) => b[1] - a[1]);
const kb = (n) => (n / 1024).toFixed(1);
const releaseSize = args.release ? fs.statSync(args.release).size : null;

const lines = [
  '# gatehouse: module size by crate (issue 19)',
  '',
  `Generated by \`node wasm-test/bench/sizes.mjs --wasm ${relative(REPO_ROOT, resolve(args.wasm))}${args.release ? ` --release ${relative(REPO_ROOT, resolve(args.release))}` : ''}\` on ${new Date().toISOString()}.`,
  '',
  `- ${releaseSize ? `The release module: **${releaseSize} bytes** (${kb(releaseSize)} KB); ` : ''}code ${kb(code)} KB in ${bodies.length} functions, data ${kb(dataBytes)} KB; the rest is the module's tables, types, imports and exports`,
  '- Functions are counted for the crate that defines them (a generic function instantiated in gatehouse for a serde type counts for serde); `ring (C)` is ring\'s C and assembly, `libc (wasi)` the allocator and memory routines of wasi-libc',
  '',
  '| crate | code (KB) | share of code |',
  '|---|---:|---:|',
  ...rows.map(([c, n]) => `| ${c} | ${kb(n)} | ${((100 * n) / code).toFixed(1)}% |`),
  `| **data segments** (string constants, tables) | ${kb(dataBytes)} | |`,
  '',
];
const text = `${lines.join('\n')}\n`;
if (args.out) {
  fs.writeFileSync(args.out, text);
  console.log(`wrote ${args.out}`);
} else {
  process.stdout.write(text);
}
