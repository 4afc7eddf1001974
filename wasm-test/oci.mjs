#!/usr/bin/env node
// Wasm OCI images that Istio's image fetcher (istio/istio pkg/wasm/imagefetcher.go) accepts,
// built and pushed without Docker.
//
//   node oci.mjs image --wasm <module.wasm> --out <dir> [--tag latest] [--variant compat|oci]
//       Writes an OCI image layout (oci-layout, index.json, blobs/sha256/...) whose index names
//       the image by `org.opencontainers.image.ref.name` = tag. Byte-for-byte reproducible.
//   node oci.mjs push --layout <dir> --image host[:port]/repo:tag [--creds user:pass]
//                     [--tool skopeo|node] [--plain-http]
//       skopeo (default): `skopeo copy --dest-tls-verify=false oci:<dir>:<tag> docker://<image>`.
//       node: the OCI distribution push protocol (HEAD/POST/PUT blobs, PUT manifest) with Basic
//       or Bearer-token auth. Credentials also from REGISTRY_CREDS=user:pass.
//   node oci.mjs pull --image host[:port]/repo:tag|@sha256:... --out <plugin.wasm> [--creds ..]
//       Fetches the manifest and blobs, verifies every digest, and extracts the module the way
//       Istio's fetcher does (compat variant first, then the oci variant).
//
// Variants (both are accepted by Istio; see DESIGN.md "Wasm OCI images Istio pulls"):
//   compat (default): OCI manifest, config application/vnd.oci.image.config.v1+json, ONE layer
//     application/vnd.oci.image.layer.v1.tar+gzip holding `plugin.wasm`, manifest annotation
//     module.wasm.image/variant=compat  -> Istio extractOCIStandardImage().
//   oci: OCI manifest, config application/vnd.module.wasm.config.v1+json, EXACTLY TWO layers:
//     the same config blob as application/vnd.module.wasm.config.v1+json and the raw module as
//     application/vnd.module.wasm.content.layer.v1+wasm -> Istio extractOCIArtifactImage()
//     ("number of layers must be 2"). Never the application/vnd.wasm.* types.

import { createHash } from 'node:crypto';
import {
  mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  wasmConfig: 'application/vnd.module.wasm.config.v1+json',
  wasmLayer: 'application/vnd.module.wasm.content.layer.v1+wasm',
};
export const VARIANT_ANNOTATION = 'module.wasm.image/variant';

export const sha256 = (buf) => `sha256:${createHash('sha256').update(buf).digest('hex')}`;

// --- tar (ustar, one regular file, fixed metadata: reproducible) ---------------------------------

function tarHeader(name, size) {
  const h = Buffer.alloc(512, 0);
  const put = (off, len, str) => h.write(str, off, len, 'ascii');
  const oct = (off, len, n) => put(off, len, `${n.toString(8).padStart(len - 1, '0')}\0`);
  put(0, 100, name);
  oct(100, 8, 0o644); // mode
  oct(108, 8, 0); // uid
  oct(116, 8, 0); // gid
  oct(124, 12, size);
  oct(136, 12, 0); // mtime
  h.fill(0x20, 148, 156); // checksum placeholder: spaces
  put(156, 1, '0'); // regular file
  put(257, 6, 'ustar\0');
  put(263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

export function tarOneFile(name, data) {
  const pad = (512 - (data.length % 512)) % 512;
  return Buffer.concat([tarHeader(name, data.length), data, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

/** Files of a tar archive, {name: Buffer} (regular files only). */
export function untar(buf) {
  const out = {};
  let off = 0;
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a, l) => h.subarray(a, a + l).toString('ascii').replace(/\0.*$/s, '');
    const prefix = str(345, 155);
    const name = (prefix ? `${prefix}/` : '') + str(0, 100);
    const size = parseInt(str(124, 12).trim() || '0', 8);
    const type = str(156, 1) || '0';
    if (type === '0') out[name] = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

// --- image building -------------------------------------------------------------------------------

/**
 * Blobs and manifest of a Wasm image.
 * @returns {{manifest: object, manifestBytes: Buffer, manifestDigest: string, blobs: Map<string, Buffer>}}
 */
export function buildImage(wasm, { variant = 'compat' } = {}) {
  const blobs = new Map();
  const add = (mediaType, data, annotations) => {
    const digest = sha256(data);
    blobs.set(digest, data);
    return { mediaType, digest, size: data.length, ...(annotations ? { annotations } : {}) };
  };
  let manifest;
  if (variant === 'compat') {
    const tar = tarOneFile('plugin.wasm', wasm);
    const layerBytes = gzipSync(tar, { level: 9 }); // Node writes mtime 0: reproducible
    const config = Buffer.from(JSON.stringify({
      architecture: 'wasm',
      os: 'wasip1',
      config: {},
      rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
      history: [{ created_by: 'gatehouse wasm-test/oci.mjs (compat variant)' }],
    }));
    manifest = {
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: add(MT.ociConfig, config),
      layers: [add(MT.ociLayerTarGzip, layerBytes)],
      annotations: { [VARIANT_ANNOTATION]: 'compat' },
    };
  } else if (variant === 'oci') {
    // solo-io wasm spec config; Istio does not read it, but it must be one of the two layers.
    const config = Buffer.from(JSON.stringify({ type: 'envoy_proxy', abiVersions: ['v0.2.1'] }));
    const cfg = add(MT.wasmConfig, config);
    manifest = {
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: cfg,
      layers: [{ ...cfg }, add(MT.wasmLayer, wasm, { 'org.opencontainers.image.title': 'plugin.wasm' })],
    };
  } else {
    throw new Error(`unknown variant ${variant} (compat or oci)`);
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = sha256(manifestBytes);
  blobs.set(manifestDigest, manifestBytes);
  return { manifest, manifestBytes, manifestDigest, blobs };
}

/** Write an OCI image layout directory. */
export function writeLayout(dir, img, { tag = 'latest' } = {}) {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const [digest, data] of img.blobs) {
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  }
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: [{
      mediaType: MT.ociManifest,
      digest: img.manifestDigest,
      size: img.manifestBytes.length,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    }],
  };
  writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
  return { dir, tag, digest: img.manifestDigest };
}

/** The layout's tag to push: `want` if the layout has it, else its only image's tag. */
export function layoutTag(dir, want) {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const tags = (index.manifests ?? []).map((m) => m.annotations?.['org.opencontainers.image.ref.name']).filter(Boolean);
  if (want && tags.includes(want)) return want;
  if (tags.length === 1) return tags[0];
  throw new Error(`${dir}: no image tagged ${want} (tags: ${tags.join(', ') || 'none'}); pass --tag`);
}

/** Read an image (manifest + blobs, digests verified) from a layout directory by tag. */
export function readLayout(dir, tag) {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const entries = index.manifests ?? [];
  const entry = tag
    ? entries.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)
    : (entries.length === 1 ? entries[0] : undefined);
  if (!entry) throw new Error(`${dir}: no image ${tag ? `tagged ${tag}` : '(give a tag)'} in index.json`);
  const blob = (d) => {
    const data = readFileSync(join(dir, 'blobs', ...d.split(':')));
    if (sha256(data) !== d) throw new Error(`${dir}: blob ${d} does not match its digest`);
    return data;
  };
  const manifestBytes = blob(entry.digest);
  const manifest = JSON.parse(manifestBytes);
  const blobs = new Map();
  for (const d of [manifest.config, ...manifest.layers]) blobs.set(d.digest, blob(d.digest));
  return { manifest, manifestBytes, manifestDigest: entry.digest, blobs, mediaType: entry.mediaType ?? manifest.mediaType };
}

// --- extraction as Istio does it ------------------------------------------------------------------

/**
 * The module in an image, following istio/istio pkg/wasm/imagefetcher.go binaryFetcher:
 * Docker schema 2 -> last layer must be docker tar.gzip with plugin.wasm; otherwise compat
 * (last layer OCI tar+gzip with plugin.wasm), then oci (exactly 2 layers, one wasm content layer).
 * @returns {{wasm: Buffer, variant: string}}
 */
export function extractLikeIstio(manifest, blobOf) {
  const layers = manifest.layers ?? [];
  const fromTarGz = (d) => {
    const files = untar(gunzipSync(blobOf(d.digest)));
    const name = Object.keys(files).find((n) => n.split('/').pop() === 'plugin.wasm');
    if (!name) throw new Error('plugin.wasm not found in the archive');
    return files[name];
  };
  if (manifest.mediaType === MT.dockerManifest) {
    const last = layers.at(-1);
    if (!last || last.mediaType !== MT.dockerLayer) throw new Error(`docker image: invalid media type ${last?.mediaType}`);
    return { wasm: fromTarGz(last), variant: 'docker-compat' };
  }
  const errs = [];
  const last = layers.at(-1);
  if (!last) errs.push('compat: number of layers must be greater than zero');
  else if (last.mediaType !== MT.ociLayerTarGzip) errs.push(`compat: invalid media type ${last.mediaType} (expect ${MT.ociLayerTarGzip})`);
  else return { wasm: fromTarGz(last), variant: 'compat' };
  if (layers.length !== 2) errs.push(`oci: number of layers must be 2 but got ${layers.length}`);
  else {
    const l = layers.find((x) => x.mediaType === MT.wasmLayer);
    if (!l) errs.push(`oci: could not find the layer of type ${MT.wasmLayer}`);
    else return { wasm: blobOf(l.digest), variant: 'oci' };
  }
  throw new Error(`the given image is in invalid format as an OCI image: ${errs.join('; ')}`);
}

// --- registry client (OCI distribution spec) ------------------------------------------------------

/** host[:port]/repo[:tag|@digest] -> parts. */
export function parseImageRef(ref) {
  const m = /^([^/]+)\/([^:@]+(?:\/[^:@]+)*)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(ref);
  if (!m) throw new Error(`bad image reference ${ref} (want host[:port]/repo:tag or host[:port]/repo@sha256:...)`);
  const [, host, repo, tag, digest] = m;
  if (!host.includes('.') && !host.includes(':') && host !== 'localhost') {
    throw new Error(`bad image reference ${ref}: the first part must be a registry host`);
  }
  return { host, repo, tag, digest, reference: digest ?? tag ?? 'latest' };
}

function isLocal(host) {
  const h = host.replace(/:\d+$/, '');
  return h === 'localhost' || h === '127.0.0.1' || h === '[::1]';
}

export class Registry {
  /**
   * @param {string} host host[:port]
   * @param {{creds?: string, plainHttp?: boolean, timeoutMs?: number}} o creds as "user:pass"
   */
  constructor(host, { creds, plainHttp, timeoutMs = 30_000 } = {}) {
    this.base = `${plainHttp ?? isLocal(host) ? 'http' : 'https'}://${host}`;
    this.creds = creds;
    this.timeoutMs = timeoutMs;
    this.auth = undefined; // Authorization header once a challenge was answered
  }

  async #challenge(res, scope) {
    const wa = res.headers.get('www-authenticate') ?? '';
    if (!this.creds) throw new Error(`registry ${this.base} requires credentials (401: ${wa})`);
    const basic = `Basic ${Buffer.from(this.creds).toString('base64')}`;
    if (/^basic/i.test(wa)) { this.auth = basic; return; }
    if (/^bearer/i.test(wa)) {
      const params = Object.fromEntries([...wa.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      const u = new URL(params.realm);
      if (params.service) u.searchParams.set('service', params.service);
      u.searchParams.set('scope', params.scope ?? scope);
      const t = await fetch(u, { headers: { authorization: basic }, signal: AbortSignal.timeout(this.timeoutMs) });
      if (!t.ok) throw new Error(`registry token endpoint ${u.origin}${u.pathname}: ${t.status} (wrong credentials?)`);
      const j = await t.json();
      this.auth = `Bearer ${j.token ?? j.access_token}`;
      return;
    }
    throw new Error(`registry ${this.base}: unsupported challenge ${wa}`);
  }

  async request(method, path, { headers = {}, body, scope, redirect = 'follow' } = {}) {
    const url = path.startsWith('http') ? path : `${this.base}${path}`;
    for (let attempt = 0; ; attempt += 1) {
      const h = { ...headers };
      if (this.auth) h.authorization = this.auth;
      // eslint-disable-next-line no-await-in-loop
      const res = await fetch(url, { method, headers: h, body, redirect, signal: AbortSignal.timeout(this.timeoutMs) });
      if (res.status === 401 && attempt === 0) {
        // eslint-disable-next-line no-await-in-loop
        await res.arrayBuffer();
        // eslint-disable-next-line no-await-in-loop
        await this.#challenge(res, scope);
        continue;
      }
      if (res.status === 401) {
        throw new Error(`registry ${this.base}: ${method} ${path}: 401 unauthorized (wrong credentials?) ${await res.text()}`);
      }
      return res;
    }
  }

  async getManifest(repo, reference, accept = [MT.ociManifest, MT.dockerManifest, MT.ociIndex]) {
    const res = await this.request('GET', `/v2/${repo}/manifests/${reference}`, {
      headers: { accept: accept.join(', ') }, scope: `repository:${repo}:pull`,
    });
    if (res.status !== 200) throw new Error(`GET manifest ${repo}:${reference}: ${res.status} ${await res.text()}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) throw new Error(`manifest digest ${digest} != ${reference}`);
    const hdr = res.headers.get('docker-content-digest');
    if (hdr && hdr !== digest) throw new Error(`manifest digest ${digest} != Docker-Content-Digest ${hdr}`);
    return { bytes, digest, contentType: res.headers.get('content-type'), manifest: JSON.parse(bytes) };
  }

  async getBlob(repo, digest) {
    const res = await this.request('GET', `/v2/${repo}/blobs/${digest}`, { scope: `repository:${repo}:pull` });
    if (res.status !== 200) throw new Error(`GET blob ${digest}: ${res.status}`);
    const data = Buffer.from(await res.arrayBuffer());
    if (sha256(data) !== digest) throw new Error(`blob ${digest} does not match its digest (got ${sha256(data)})`);
    return data;
  }

  async pushBlob(repo, digest, data) {
    const scope = `repository:${repo}:pull,push`;
    const head = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, { scope });
    if (head.status === 200) return 'exists';
    const start = await this.request('POST', `/v2/${repo}/blobs/uploads/`, { scope });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`POST blob upload ${repo}: ${start.status}`);
    const loc = new URL(start.headers.get('location'), this.base);
    loc.searchParams.set('digest', digest);
    const put = await this.request('PUT', loc.href, {
      scope, headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.length) }, body: data,
    });
    const text = await put.text();
    if (put.status !== 201) throw new Error(`PUT blob ${digest}: ${put.status} ${text}`);
    return 'pushed';
  }

  async putManifest(repo, reference, bytes, mediaType) {
    const res = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, {
      scope: `repository:${repo}:pull,push`, headers: { 'content-type': mediaType }, body: bytes,
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`PUT manifest ${repo}:${reference}: ${res.status} ${text}`);
    return res.headers.get('docker-content-digest');
  }
}

export async function pushNode(layoutDir, image, { creds, plainHttp, tag } = {}) {
  const ref = parseImageRef(image);
  const img = readLayout(layoutDir, tag ?? layoutTag(layoutDir, ref.tag));
  const reg = new Registry(ref.host, { creds, plainHttp });
  for (const d of [img.manifest.config, ...img.manifest.layers]) {
    // eslint-disable-next-line no-await-in-loop
    await reg.pushBlob(ref.repo, d.digest, img.blobs.get(d.digest));
  }
  const digest = await reg.putManifest(ref.repo, ref.tag ?? 'latest', img.manifestBytes, img.manifest.mediaType);
  if (digest && digest !== img.manifestDigest) throw new Error(`registry stored digest ${digest}, expected ${img.manifestDigest}`);
  return img.manifestDigest;
}

/** skopeo copy oci:<dir>:<tag> docker://<image>; credentials through --dest-creds. */
export function pushSkopeo(layoutDir, image, { creds, tag, plainHttp, timeoutMs = 120_000 } = {}) {
  const ref = parseImageRef(image);
  const srcTag = tag ?? layoutTag(layoutDir, ref.tag);
  const args = ['copy', '--quiet', '--preserve-digests', `--dest-tls-verify=${plainHttp ?? isLocal(ref.host) ? 'false' : 'true'}`];
  // Credentials go through a private auth file, not the command line (visible in ps). Without
  // --creds, skopeo uses its own auth file (skopeo login / ~/.docker/config.json).
  let authDir;
  if (creds) {
    authDir = mkdtempSync(join(tmpdir(), 'oci-auth-'));
    const authFile = join(authDir, 'auth.json');
    writeFileSync(authFile, JSON.stringify({ auths: { [ref.host]: { auth: Buffer.from(creds).toString('base64') } } }), { mode: 0o600 });
    args.push('--dest-authfile', authFile);
  }
  args.push(`oci:${resolve(layoutDir)}:${srcTag}`, `docker://${image}`);
  let r;
  try {
    r = spawnSync('skopeo', args, { encoding: 'utf8', timeout: timeoutMs });
  } finally {
    if (authDir) rmSync(authDir, { recursive: true, force: true });
  }
  if (r.error) throw new Error(`skopeo: ${r.error.message}${r.error.code === 'ENOENT' ? ' (apt-get install skopeo)' : ''}`);
  if (r.status !== 0) {
    const hint = /unauthorized|authentication required|denied/i.test(r.stderr) ? ' (wrong or missing credentials?)' : '';
    throw new Error(`skopeo copy to ${image} failed (exit ${r.status})${hint}: ${r.stderr.trim()}`);
  }
  return readLayout(layoutDir, srcTag).manifestDigest;
}

export async function pull(image, { creds, plainHttp } = {}) {
  const ref = parseImageRef(image);
  const reg = new Registry(ref.host, { creds, plainHttp });
  const m = await reg.getManifest(ref.repo, ref.reference);
  const blobs = new Map();
  for (const d of [m.manifest.config, ...(m.manifest.layers ?? [])]) {
    // eslint-disable-next-line no-await-in-loop
    if (!blobs.has(d.digest)) blobs.set(d.digest, await reg.getBlob(ref.repo, d.digest));
  }
  const { wasm, variant } = extractLikeIstio(m.manifest, (d) => blobs.get(d));
  return { ...m, blobs, wasm, variant };
}

// --- command line ---------------------------------------------------------------------------------

function parseArgs(argv) {
  const o = { _: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--plain-http') o.plainHttp = true;
    else if (a.startsWith('--')) {
      const [k, v] = a.includes('=') ? [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a.slice(2), argv[++i]];
      if (v === undefined) throw new Error(`${a} needs a value`);
      o[k] = v;
    } else o._.push(a);
  }
  return o;
}

const USAGE = `usage:
  node oci.mjs image --wasm <module.wasm> --out <dir> [--tag latest] [--variant compat|oci]
  node oci.mjs push  --layout <dir> --image host[:port]/repo:tag [--tag <layout tag>] [--creds user:pass]
                     [--tool skopeo|node] [--plain-http]
  node oci.mjs pull  --image host[:port]/repo:tag|@sha256:<hex> --out <plugin.wasm> [--creds user:pass] [--plain-http]
credentials also from REGISTRY_CREDS=user:pass`;

async function main(argv) {
  const o = parseArgs(argv);
  const cmd = o._[0];
  const creds = o.creds || process.env.REGISTRY_CREDS || undefined;
  if (creds !== undefined && !creds.includes(':')) throw new Error('credentials must be user:pass');
  if (cmd === 'image') {
    if (!o.wasm || !o.out) throw new Error(USAGE);
    const wasm = readFileSync(o.wasm);
    if (wasm.subarray(0, 4).toString('latin1') !== '\0asm') throw new Error(`${o.wasm} is not a Wasm module`);
    const img = buildImage(wasm, { variant: o.variant ?? 'compat' });
    const { digest } = writeLayout(o.out, img, { tag: o.tag ?? 'latest' });
    process.stdout.write(`${o.out}: ${o.variant ?? 'compat'} variant, tag ${o.tag ?? 'latest'}, manifest ${digest}\n`);
  } else if (cmd === 'push') {
    if (!o.layout || !o.image) throw new Error(USAGE);
    if (!existsSync(join(o.layout, 'index.json'))) throw new Error(`${o.layout} is not an OCI layout (run \`oci.mjs image\` first)`);
    const tool = o.tool ?? 'skopeo';
    const opts = { creds, plainHttp: o.plainHttp, tag: o.tag };
    const digest = tool === 'node' ? await pushNode(o.layout, o.image, opts)
      : tool === 'skopeo' ? pushSkopeo(o.layout, o.image, opts)
        : (() => { throw new Error(`unknown --tool ${tool}`); })();
    const ref = parseImageRef(o.image);
    process.stdout.write(`pushed ${o.image} (${ref.host}/${ref.repo}@${digest})\n`);
  } else if (cmd === 'pull') {
    if (!o.image || !o.out) throw new Error(USAGE);
    const r = await pull(o.image, { creds, plainHttp: o.plainHttp });
    writeFileSync(o.out, r.wasm);
    process.stdout.write(`${o.out}: ${r.wasm.length} bytes, ${r.variant} variant, manifest ${r.digest}\n`);
  } else {
    throw new Error(USAGE);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`oci.mjs: ${e.message}\n`);
    process.exit(1);
  });
}
