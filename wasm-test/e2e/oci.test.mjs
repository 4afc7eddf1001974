// Wasm OCI images as Istio pulls them: build the image layout from the built gatehouse.wasm with
// oci.mjs, push it to a real registry (Debian's docker-registry, distribution 2.8) with skopeo and
// with the Node push client, pull it back by tag and by digest, check every media type the way
// istio/istio pkg/wasm/imagefetcher.go reads them, and run the pulled module in Envoy.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  mkdtempSync, readFileSync, readdirSync, rmSync, existsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';

import {
  freePort, startEcho, startEnvoy, stopAll, http, passwordToken, waitFor, REPO_ROOT,
} from '../lib/harness.mjs';
import { startKeycloak } from '../lib/keycloak.mjs';
import { which, bcryptHtpasswd, startRegistry } from '../lib/registry.mjs';
import {
  MT, VARIANT_ANNOTATION, sha256, buildImage, writeLayout, readLayout, untar, pushSkopeo, pushNode, pull,
} from '../oci.mjs';

const WASM = process.env.WASM ?? join(REPO_ROOT, 'target/gatehouse.wasm');
const OCI_MJS = resolve(REPO_ROOT, 'wasm-test/oci.mjs');
const USER = 'pusher';
const PASS = 's3cret-push';

let dir;
let wasm;
let registry; // anonymous registry {host, pid, log, stop}
let authRegistry; // htpasswd registry
const children = []; // registries to stop
const pulled = {}; // variant -> pulled module path

/** Raw GET of a manifest with an Accept header, as go-containerregistry's remote.Get sends it. */
async function getManifest(host, repo, ref, headers = {}) {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${ref}`, {
    headers: {
      accept: [MT.ociManifest, MT.dockerManifest, MT.ociIndex, 'application/vnd.docker.distribution.manifest.list.v2+json'].join(','),
      ...headers,
    },
    signal: AbortSignal.timeout(10_000),
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, bytes, contentType: res.headers.get('content-type'), digest: res.headers.get('docker-content-digest') };
}

async function getBlob(host, repo, digest) {
  const res = await fetch(`http://${host}/v2/${repo}/blobs/${digest}`, { signal: AbortSignal.timeout(30_000) });
  assert.equal(res.status, 200, `GET blob ${digest}`);
  const data = Buffer.from(await res.arrayBuffer());
  assert.equal(sha256(data), digest, `blob ${digest} verifies`);
  return data;
}

before(async () => {
  assert.ok(existsSync(WASM), `${WASM} must exist (build it first, or set WASM)`);
  for (const cmd of ['skopeo', 'docker-registry']) {
    assert.ok(which(cmd), `${cmd} is not installed (apt-get install skopeo docker-registry)`);
  }
  wasm = readFileSync(WASM);
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-oci-'));
  registry = await startRegistry(dir, 'registry');
  children.push(registry);
  authRegistry = await startRegistry(dir, 'auth-registry', { htpasswd: bcryptHtpasswd(USER, PASS) });
  children.push(authRegistry);
});

after(async () => {
  await stopAll();
  for (const c of children) await c.stop(); // eslint-disable-line no-await-in-loop
  if (dir && process.env.GATEHOUSE_KEEP_LOGS !== '1') rmSync(dir, { recursive: true, force: true });
  else if (dir) process.stderr.write(`oci.test: files kept in ${dir}\n`);
});

test('oci.mjs image writes a reproducible OCI layout (CLI)', () => {
  for (const variant of ['compat', 'oci']) {
    const outs = ['a', 'b'].map((n) => join(dir, `layout-${variant}-${n}`));
    for (const out of outs) {
      const r = spawnSync(process.execPath, [OCI_MJS, 'image', '--wasm', WASM, '--out', out, '--variant', variant, '--tag', 'v1'],
        { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
    }
    assert.deepEqual(readFileSync(join(outs[0], 'index.json')), readFileSync(join(outs[1], 'index.json')), 'same digests twice');
    assert.deepEqual(JSON.parse(readFileSync(join(outs[0], 'oci-layout'))), { imageLayoutVersion: '1.0.0' });
    const img = readLayout(outs[0], 'v1');
    assert.equal(img.mediaType, MT.ociManifest);
    assert.equal(readdirSync(join(outs[0], 'blobs', 'sha256')).length, 3);
  }
  const bad = spawnSync(process.execPath, [OCI_MJS, 'image', '--wasm', join(REPO_ROOT, 'Cargo.toml'), '--out', join(dir, 'x')], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /not a Wasm module/);
});

/** What Istio's fetcher requires, asserted field by field. */
function assertIstioShape(variant, manifest, blobs) {
  assert.equal(manifest.schemaVersion, 2);
  assert.equal(manifest.mediaType, MT.ociManifest);
  for (const d of [manifest.config, ...manifest.layers]) {
    assert.ok(!d.mediaType.startsWith('application/vnd.wasm.'), `no application/vnd.wasm.* types (${d.mediaType})`);
  }
  if (variant === 'compat') {
    // imagefetcher.go extractOCIStandardImage: last layer application/vnd.oci.image.layer.v1.tar+gzip,
    // a tar.gz holding plugin.wasm.
    assert.equal(manifest.annotations[VARIANT_ANNOTATION], 'compat');
    assert.equal(manifest.config.mediaType, MT.ociConfig);
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0].mediaType, MT.ociLayerTarGzip);
    const files = untar(gunzipSync(blobs.get(manifest.layers[0].digest)));
    assert.deepEqual(Object.keys(files), ['plugin.wasm']);
    assert.ok(files['plugin.wasm'].equals(wasm), 'plugin.wasm is the built module');
    const config = JSON.parse(blobs.get(manifest.config.digest));
    assert.deepEqual(config.rootfs.diff_ids, [sha256(gunzipSync(blobs.get(manifest.layers[0].digest)))]);
  } else {
    // imagefetcher.go extractOCIArtifactImage: exactly 2 layers, one of them
    // application/vnd.module.wasm.content.layer.v1+wasm holding the raw module.
    assert.equal(manifest.config.mediaType, MT.wasmConfig);
    assert.equal(manifest.layers.length, 2);
    assert.deepEqual(manifest.layers.map((l) => l.mediaType), [MT.wasmConfig, MT.wasmLayer]);
    assert.ok(blobs.get(manifest.layers[1].digest).equals(wasm), 'the wasm layer is the built module');
    // Not the compat shape: Istio must fall through to the oci variant.
    assert.notEqual(manifest.layers.at(-1).mediaType, MT.ociLayerTarGzip);
  }
  for (const d of [manifest.config, ...manifest.layers]) assert.equal(blobs.get(d.digest).length, d.size);
}

for (const variant of ['compat', 'oci']) {
  test(`${variant} variant: skopeo push, pull by tag and by digest, media types as Istio expects`, async () => {
    const layout = join(dir, `push-${variant}`);
    const img = buildImage(wasm, { variant });
    writeLayout(layout, img, { tag: 'v1' });
    const repo = `gatehouse/${variant}`;
    const cli = spawnSync(process.execPath, [OCI_MJS, 'push', '--layout', layout, '--image', `${registry.host}/${repo}:v1`],
      { encoding: 'utf8', timeout: 120_000 });
    assert.equal(cli.status, 0, `oci.mjs push: ${cli.stderr}`);
    assert.match(cli.stdout, new RegExp(img.manifestDigest));

    const byTag = await getManifest(registry.host, repo, 'v1');
    assert.equal(byTag.status, 200);
    assert.equal(byTag.contentType, MT.ociManifest);
    assert.ok(byTag.bytes.equals(img.manifestBytes), 'skopeo stored the manifest byte for byte (no media type rewrite)');
    assert.equal(byTag.digest, img.manifestDigest);
    assert.equal(sha256(byTag.bytes), img.manifestDigest);

    const byDigest = await getManifest(registry.host, repo, img.manifestDigest);
    assert.equal(byDigest.status, 200);
    assert.equal(byDigest.contentType, MT.ociManifest);
    assert.ok(byDigest.bytes.equals(byTag.bytes));
    assert.equal(sha256(byDigest.bytes), img.manifestDigest);

    const manifest = JSON.parse(byDigest.bytes);
    const blobs = new Map();
    for (const d of [manifest.config, ...manifest.layers]) {
      // eslint-disable-next-line no-await-in-loop
      if (!blobs.has(d.digest)) blobs.set(d.digest, await getBlob(registry.host, repo, d.digest));
    }
    assertIstioShape(variant, manifest, blobs);

    // And through oci.mjs pull (Istio's decision order), by digest, to a file for Envoy.
    const out = join(dir, `pulled-${variant}.wasm`);
    const p = spawnSync(process.execPath, [OCI_MJS, 'pull', '--image', `${registry.host}/${repo}@${img.manifestDigest}`, '--out', out],
      { encoding: 'utf8', timeout: 60_000 });
    assert.equal(p.status, 0, p.stderr);
    assert.match(p.stdout, new RegExp(`${variant} variant`));
    assert.ok(readFileSync(out).equals(wasm), 'pulled module identical to the built file');
    pulled[variant] = out;
  });
}

test('the Node push client stores the same manifest digest as skopeo', async () => {
  const img = buildImage(wasm, { variant: 'compat' });
  const layout = join(dir, 'push-node');
  writeLayout(layout, img, { tag: 'v2' });
  const digest = await pushNode(layout, `${registry.host}/gatehouse/node:v2`);
  assert.equal(digest, img.manifestDigest);
  const r = await pull(`${registry.host}/gatehouse/node:v2`);
  assert.equal(r.digest, img.manifestDigest);
  assert.equal(r.contentType, MT.ociManifest);
  assert.ok(r.wasm.equals(wasm));
});

test('pushing with wrong or missing credentials fails clearly; right ones work', async () => {
  const img = buildImage(wasm, { variant: 'compat' });
  const layout = join(dir, 'push-auth');
  writeLayout(layout, img, { tag: 'v1' });
  const image = `${authRegistry.host}/gatehouse/auth:v1`;
  const run = (args, env = {}) => spawnSync(process.execPath, [OCI_MJS, 'push', '--layout', layout, '--image', image, ...args],
    { encoding: 'utf8', timeout: 120_000, env: { ...process.env, REGISTRY_CREDS: '', ...env } });

  const wrong = run(['--creds', `${USER}:wrong`]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /skopeo copy to .* failed .*wrong or missing credentials/);
  const wrongNode = run(['--creds', `${USER}:wrong`, '--tool', 'node']);
  assert.equal(wrongNode.status, 1);
  assert.match(wrongNode.stderr, /401 unauthorized \(wrong credentials\?\)/);
  assert.ok(!wrong.stderr.includes('wrong@') && !wrong.stderr.includes(`${USER}:wrong`), 'no password in the error');
  const none = run(['--tool', 'node']);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /requires credentials/);
  assert.equal((await getManifest(authRegistry.host, 'gatehouse/auth', 'v1')).status, 401);

  const ok = run([], { REGISTRY_CREDS: `${USER}:${PASS}` });
  assert.equal(ok.status, 0, ok.stderr);
  const r = await pull(image, { creds: `${USER}:${PASS}` });
  assert.equal(r.digest, img.manifestDigest);
  assert.ok(r.wasm.equals(wasm));
  await assert.rejects(pull(image), /requires credentials/);
});

for (const variant of ['compat', 'oci']) {
  test(`Envoy serves with the module pulled from the ${variant} image`, async (t) => {
    if (!pulled[variant]) { t.skip('push/pull test failed'); return; }
    const kc = await startKeycloak();
    const idpPort = kc.port;
    const echoPort = await freePort();
    await startEcho({ port: echoPort });
    const envoy = await startEnvoy({
      idpPort,
      echoPort,
      wasmPath: pulled[variant],
      filterConfig: {
        provider: {
          issuer: kc.issuer, cluster: 'idp', clientId: 'gateway', audiences: ['api', 'gateway'],
        },
      },
    });
    const noToken = await http(`${envoy.url}/echo`);
    assert.equal(noToken.status, 401);
    assert.match(noToken.headers['www-authenticate'] ?? '', /^Bearer/);
    const token = (await passwordToken({ idpPort, username: 'alice', password: 'alice' })).access_token;
    await waitFor(async () => (await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } })).status === 200,
      { timeoutMs: 20_000, what: 'alice\'s token to pass the pulled module' });
    const ok = await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(ok.json.headers['x-auth-request-preferred-username'], 'alice');
    await stopAll();
  });
}
