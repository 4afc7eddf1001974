// Istio's own code runs gatehouse's artifacts (issue 16), through the istio-bed tool
// (wasm-test/istio, istio.io/istio pinned in its go.mod):
//   - istio-agent's Wasm pull (pkg/wasm: its file cache and MaybeConvertWasmExtensionConfig) on
//     what `make push` put in a real registry, both image variants, by tag and by digest, with
//     the WasmPlugin's sha256 checked, and the failures Istio has for a wrong digest, a missing
//     image and an image without a Wasm module;
//   - istiod's config generation (pilot/test/xds) on istio/'s WasmPlugin, made to point at this
//     bed's registry and Keycloak; the agent rewrites its ECDS resource; Envoy loads that as ECDS
//     and serves a bearer request and a browser login through it;
//   - a module the agent cannot pull: Istio's RBAC stand-in in the filter's place.
// The structural checks of the translation (filter order, env, failStrategy, components) are Go
// tests in wasm-test/istio/bed (make istio-go).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';

import {
  stopAll, http, browse, CookieJar, passwordToken, startEcho, startEnvoy, envoyBootstrap, writeBootstrap,
  envoyValidate, waitForSignIn, waitFor, freePort, REPO_ROOT,
} from '../lib/harness.mjs';
import { startKeycloak, startGatewayFor, realmFile } from '../lib/keycloak.mjs';
import { startRegistry } from '../lib/registry.mjs';
import {
  MT, buildImage, pushNode, sha256, tarOneFile, writeLayout,
} from '../oci.mjs';

const WASM = process.env.WASM ?? join(REPO_ROOT, 'target/gatehouse.wasm');
const ISTIO_BED = process.env.ISTIO_BED ?? join(REPO_ROOT, '.tools/bin/istio-bed');
const KUBECTL = process.env.KUBECTL ?? join(REPO_ROOT, '.venv/bin/kubectl');
const HTML = { accept: 'text/html,application/xhtml+xml' };
const WASM_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm';
const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const FILTER = 'extensions.istio.io/trafficextension/istio-system.gatehouse~istio-translated-wasmplugin';
const realm = realmFile('demo');
const secretOf = (clientId) => realm.clients.find((c) => c.clientId === clientId).secret;
const GATEWAY_ENV = {
  GATEHOUSE_CLIENT_SECRET: secretOf('gateway'),
  GATEHOUSE_COOKIE_KEYS: 'istio-e2e-cookie-key-0123456789abcdefghij',
};

let dir;
let wasm;
let registry;
let kc;
const digests = {}; // variant -> manifest digest (sha256:...)
let seq = 0;
const fresh = (what) => join(dir, `${(seq += 1)}-${what}`);

/** istio-bed with `args`; {status, stdout, stderr}. */
function bed(args) {
  const r = spawnSync(ISTIO_BED, args, { encoding: 'utf8', timeout: 180_000 });
  if (r.error) throw r.error;
  return r;
}

/** What `make push` does, as a user runs it: the OCI layout of the module, pushed. */
function makePush(image, variant) {
  const r = spawnSync('make', ['--no-print-directory', '-C', REPO_ROOT, 'push', `IMAGE=${image}`, `IMAGE_VARIANT=${variant}`,
    `IMAGE_TAG=v1`, `OCI_LAYOUT=${join(dir, `layout-${variant}`)}`, `WASM=${WASM}`], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `make push: ${r.stdout}\n${r.stderr}`);
  const m = /sha256:[0-9a-f]{64}/.exec(r.stdout);
  assert.ok(m, `make push printed no digest: ${r.stdout}`);
  return m[0];
}

/** istio-agent's pull of one module into a new cache; the file's bytes or Istio's error. */
function agentGet(url, checksum) {
  const args = ['get', '--url', url, '--cache', fresh('cache'), '--insecure', registry.host];
  if (checksum) args.push('--sha256', checksum);
  const r = bed(args);
  return r.status === 0 ? { bytes: readFileSync(r.stdout.trim()), path: r.stdout.trim() } : { error: r.stderr };
}

/** istio/ rendered by kubectl kustomize, as documents. */
function renderIstio() {
  const out = execFileSync(KUBECTL, ['kustomize', join(REPO_ROOT, 'istio')], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS()).filter(Boolean);
}

/**
 * istio/'s WasmPlugin, pointed at this bed: the image in `url`, Keycloak as the provider. With
 * `inlineCookieKey`, the cookie keys come from a vmConfig.env INLINE entry instead of the host.
 */
function bedManifests(url, { sha256: sum, failStrategy, inlineCookieKey } = {}) {
  const docs = renderIstio();
  const wp = docs.find((d) => d.kind === 'WasmPlugin');
  wp.spec.url = url;
  if (sum) wp.spec.sha256 = sum;
  if (failStrategy) wp.spec.failStrategy = failStrategy;
  const cfg = wp.spec.pluginConfig;
  if (inlineCookieKey) {
    wp.spec.vmConfig.env.push({ name: 'GATEHOUSE_TEST_COOKIE_KEYS', valueFrom: 'INLINE', value: inlineCookieKey });
    cfg.session.keysEnv = 'GATEHOUSE_TEST_COOKIE_KEYS';
  }
  cfg.provider.issuer = kc.issuer;
  cfg.provider.cluster = 'idp';
  cfg.provider.authority = new URL(kc.issuer).host;
  cfg.session.secure = false; // plain HTTP here
  const file = fresh('manifests.yaml');
  writeFileSync(file, docs.map((d) => stringify(d)).join('---\n'));
  return file;
}

/** istiod's translation of `manifests` for the ingress gateway. */
function translate(manifests) {
  const out = fresh('translation.json');
  const r = bed(['translate', '--manifests', manifests, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(readFileSync(out, 'utf8'));
}

/** The agent's rewrite of istiod's ECDS response: {resources, stderr, file}. */
function agentConvert(ecds) {
  const inFile = fresh('ecds.json');
  writeFileSync(inFile, JSON.stringify(ecds));
  const file = fresh('ecds-local.json');
  const r = bed(['pull', '--in', inFile, '--out', file, '--cache', fresh('cache'), '--insecure', registry.host]);
  assert.equal(r.status, 0, r.stderr);
  return { ...JSON.parse(readFileSync(file, 'utf8')), stderr: r.stderr, file };
}

/**
 * Envoy with the agent-rewritten ECDS resource as the gateway gets it: the HTTP filter named as
 * istiod names it, its config discovered from `ecdsFile` (Envoy's filesystem config source, in
 * place of the agent's ADS stream), the secrets in Envoy's own environment (vmConfig.env HOST).
 */
async function envoyWithEcds(ecdsFile, env = GATEWAY_ENV) {
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  return startEnvoy({
    idpPort: kc.port,
    echoPort,
    concurrency: 2,
    env,
    customize: (b) => {
      const hcm = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      hcm.http_filters.unshift({
        name: FILTER,
        config_discovery: {
          config_source: { path_config_source: { path: ecdsFile }, resource_api_version: 'V3' },
          type_urls: [WASM_TYPE, RBAC_TYPE],
        },
      });
    },
  });
}

before(async () => {
  assert.ok(existsSync(WASM), `${WASM} must exist (make build)`);
  assert.ok(existsSync(ISTIO_BED), `${ISTIO_BED} must exist (make deps builds it)`);
  assert.ok(existsSync(KUBECTL), `${KUBECTL} must exist (make deps installs it)`);
  wasm = readFileSync(WASM);
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-istio-'));
  registry = await startRegistry(dir, 'registry');
  for (const variant of ['compat', 'oci']) digests[variant] = makePush(`${registry.host}/gatehouse/${variant}:v1`, variant);
  kc = await startKeycloak();
});

after(async () => {
  await stopAll();
  await registry?.stop();
  if (dir && process.env.GATEHOUSE_KEEP_LOGS !== '1') rmSync(dir, { recursive: true, force: true });
  else if (dir) process.stderr.write(`istio.test: files kept in ${dir}\n`);
});

for (const variant of ['compat', 'oci']) {
  test(`istio-agent pulls the ${variant} variant by tag and by digest, sha256 checked: the module byte for byte`, () => {
    const repo = `oci://${registry.host}/gatehouse/${variant}`;
    const hex = digests[variant].slice('sha256:'.length);
    for (const [url, sum] of [[`${repo}:v1`], [`${repo}@${digests[variant]}`], [`${repo}:v1`, hex]]) {
      const got = agentGet(url, sum);
      assert.ok(got.bytes, `${url} ${sum ?? ''}: ${got.error}`);
      assert.ok(got.bytes.equals(wasm), `${url}: the agent wrote ${got.bytes.length} bytes, not the build's ${wasm.length}`);
    }
  });
}

test('the agent refuses a wrong digest, a missing image and images without a Wasm module, as Istio does', async () => {
  const repo = `oci://${registry.host}/gatehouse/compat`;
  const other = 'ab'.repeat(32);
  const wrong = agentGet(`${repo}:v1`, other);
  assert.match(wrong.error ?? '', new RegExp(`module downloaded from ${repo}:v1 has checksum ${digests.compat.slice(7)}, which does not match: ${other}`));

  const missing = agentGet(`oci://${registry.host}/gatehouse/missing:v1`);
  assert.match(missing.error ?? '', /could not fetch Wasm OCI image: could not fetch manifest: .*MANIFEST_UNKNOWN/);

  // A compat-shaped image whose plugin.wasm is not a Wasm module.
  const notWasm = buildImage(Buffer.from('#!/bin/sh\necho this is not a Wasm module\n'), { variant: 'compat' });
  writeLayout(join(dir, 'layout-notwasm'), notWasm, { tag: 'v1' });
  await pushNode(join(dir, 'layout-notwasm'), `${registry.host}/gatehouse/notwasm:v1`, { plainHttp: true });
  const bad = agentGet(`oci://${registry.host}/gatehouse/notwasm:v1`);
  assert.match(bad.error ?? '', /fetched Wasm binary from oci:\/\/.*notwasm:v1 is invalid/);

  // A container image's layer (an uncompressed tar of a file system) instead of a Wasm layer.
  const tar = tarOneFile('etc/hostname', Buffer.from('gatehouse\n'));
  const blobs = new Map();
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }));
  blobs.set(sha256(config), config);
  blobs.set(sha256(tar), tar);
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(tar), size: tar.length }],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  blobs.set(sha256(manifestBytes), manifestBytes);
  writeLayout(join(dir, 'layout-container'), { manifest, manifestBytes, manifestDigest: sha256(manifestBytes), blobs }, { tag: 'v1' });
  await pushNode(join(dir, 'layout-container'), `${registry.host}/gatehouse/container:v1`, { plainHttp: true });
  const layer = agentGet(`oci://${registry.host}/gatehouse/container:v1`);
  assert.match(layer.error ?? '', /the given image is in invalid format as an OCI image/);
  assert.match(layer.error ?? '', /could not parse as compat variant/);
});

test('istiod translates the WasmPlugin, the agent rewrites it, Envoy serves a bearer request and a browser login through it', async () => {
  // The client secret from the host environment (HOST), the cookie keys from the config (INLINE).
  const inlineKey = 'istio-e2e-inline-cookie-key-0123456789abcdef';
  const tr = translate(bedManifests(`oci://${registry.host}/gatehouse/compat:v1`, { sha256: digests.compat.slice(7), inlineCookieKey: inlineKey }));
  const listeners = Object.entries(tr.httpFilters).filter(([, fs]) => fs.includes(FILTER)).map(([l]) => l).sort();
  assert.deepEqual(listeners, ['0.0.0.0_80', '0.0.0.0_443'].sort(), JSON.stringify(tr.httpFilters));
  const sent = tr.ecds.resources;
  assert.equal(sent.length, 1);
  assert.equal(sent[0].name, FILTER);
  assert.equal(sent[0].typedConfig['@type'], WASM_TYPE);
  assert.equal(sent[0].typedConfig.config.vmConfig.code.remote.httpUri.uri, `oci://${registry.host}/gatehouse/compat:v1`);

  const local = agentConvert(tr.ecds);
  const ec = local.resources[0];
  assert.equal(ec.typedConfig['@type'], WASM_TYPE);
  const vm = ec.typedConfig.config.vmConfig;
  const file = vm.code.local?.filename;
  assert.ok(file, `the agent left no local file: ${JSON.stringify(vm.code)}`);
  assert.ok(readFileSync(file).equals(wasm), 'the file the agent wrote is the build, byte for byte');
  assert.deepEqual(vm.environmentVariables.hostEnvKeys, ['GATEHOUSE_CLIENT_SECRET', 'GATEHOUSE_COOKIE_KEYS']);
  assert.deepEqual(vm.environmentVariables.keyValues, { GATEHOUSE_TEST_COOKIE_KEYS: inlineKey },
    'INLINE entries stay; the agent strips its own ISTIO_META_ entries before Envoy sees them');

  const envoy = await envoyWithEcds(local.file, { GATEHOUSE_CLIENT_SECRET: GATEWAY_ENV.GATEHOUSE_CLIENT_SECRET });
  await waitForSignIn(envoy.url);

  const { access_token: token } = await passwordToken({ tokenUrl: kc.urls.token, username: 'alice', password: 'alice' });
  const bearer = await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(bearer.status, 200, bearer.body);
  assert.equal(bearer.json.headers['x-auth-request-email'], 'alice@example.com');
  assert.equal(bearer.json.headers.authorization, undefined, 'forwardAuthorization: false removes the token');
  const none = await http(`${envoy.url}/echo`);
  assert.equal(none.status, 401);

  const jar = new CookieJar();
  const login = await browse(`${envoy.url}/echo?via=istio`, { jar, username: 'alice', password: 'alice' });
  assert.equal(login.response.status, 200, JSON.stringify(login.history));
  assert.equal(login.response.json.path, '/echo?via=istio');
  assert.equal(login.response.json.headers['x-auth-request-preferred-username'], 'alice');
  assert.equal(login.response.json.headers['x-auth-request-groups'], '/admins');
  const bob = await browse(`${envoy.url}/admin/x`, { jar: new CookieJar(), username: 'bob', password: 'bob' });
  assert.equal(bob.response.status, 403, 'the base rule admins-only holds through istiod');
});

test('a module the agent cannot pull: Istio puts its RBAC filter in the plugin\'s place (deny under FAIL_CLOSE, allow under FAIL_OPEN)', async () => {
  const missing = `oci://${registry.host}/gatehouse/compat:no-such-tag`;
  const closed = agentConvert(translate(bedManifests(missing)).ecds);
  assert.match(closed.stderr, /error in converting the wasm config to local: .*applying deny RBAC filter/);
  assert.equal(closed.resources[0].typedConfig['@type'], RBAC_TYPE);
  const deny = await envoyWithEcds(closed.file);
  const r = await http(`${deny.url}/echo`, { headers: HTML });
  assert.equal(r.status, 403);
  assert.equal(r.body, 'RBAC: access denied');

  const open = agentConvert(translate(bedManifests(missing, { failStrategy: 'FAIL_OPEN' })).ecds);
  assert.match(open.stderr, /applying allow RBAC filter/);
  const allow = await envoyWithEcds(open.file);
  const through = await http(`${allow.url}/echo`, { headers: HTML });
  assert.equal(through.status, 200, 'FAIL_OPEN lets everything through unauthenticated');
  assert.equal(through.json.headers['x-auth-request-user'], undefined);
});

test('gatehouse accepts the pluginConfig of istio/ exactly as istiod renders it (a JSON string, keys sorted)', async () => {
  const manifests = fresh('istio.yaml');
  writeFileSync(manifests, renderIstio().map((d) => stringify(d)).join('---\n'));
  const tr = translate(manifests);
  const cfg = tr.ecds.resources[0].typedConfig.config;
  const rendered = cfg.configuration.value;
  assert.equal(typeof rendered, 'string');
  assert.equal(cfg.failurePolicy, 'FAIL_CLOSED');
  const file = writeBootstrap(fresh('validate.json'), envoyBootstrap({
    listenPort: 8080,
    adminPort: 9901,
    idpPort: 8180,
    echoPort: 8081,
    wasmPath: WASM,
    filterConfig: rendered,
    vmEnv: { keyValues: GATEWAY_ENV },
  }));
  const { ok, output } = await envoyValidate(file);
  assert.ok(ok, output.split('\n').filter((l) => /invalid|error/i.test(l)).slice(0, 5).join('\n'));
});

test('Keycloak with a public hostname and callouts in-mesh (the install steps\' hostname settings): the public issuer everywhere, callouts on the in-mesh host', async () => {
  const pub = 'https://sso.example.com';
  const issuer = `${pub}/realms/demo`;
  const own = await startKeycloak({ shared: false, hostname: pub });
  // Discovery fetched in-mesh names the public issuer and login page, and back-channel endpoints
  // on the host it was called by.
  const d = (await http(own.urls.discovery)).json;
  assert.equal(d.issuer, issuer);
  assert.ok(d.authorization_endpoint.startsWith(`${issuer}/`), d.authorization_endpoint);
  for (const k of ['token_endpoint', 'jwks_uri']) assert.ok(d[k].startsWith(`http://127.0.0.1:${own.port}/`), `${k}: ${d[k]}`);

  const envoy = await startGatewayFor(own, {
    wasmPath: WASM,
    filterConfig: {
      provider: {
        issuer, cluster: 'idp', authority: `127.0.0.1:${own.port}`, clientId: 'gateway', clientSecret: secretOf('gateway'), audiences: ['api', 'gateway'],
      },
      session: { keys: [GATEWAY_ENV.GATEHOUSE_COOKIE_KEYS], secure: false },
    },
  });
  const { access_token: token } = await passwordToken({ tokenUrl: own.urls.token, username: 'alice', password: 'alice' });
  assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).iss, issuer, 'a token got in-mesh carries the public issuer');
  const bearer = await http(`${envoy.url}/echo`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(bearer.status, 200, bearer.body);
  const nav = await http(`${envoy.url}/echo`, { headers: HTML });
  assert.equal(nav.status, 302);
  assert.ok(nav.headers.location.startsWith(`${issuer}/protocol/openid-connect/auth?`), 'browsers go to the public login page');

  // Without the hostname setting, Keycloak names the issuer after the scheme and host it is called
  // by, and gatehouse refuses that discovery document: protected requests get 503.
  const echoPort = await freePort();
  await startEcho({ port: echoPort });
  const plain = await startEnvoy({
    idpPort: kc.port,
    echoPort,
    wasmPath: WASM,
    filterConfig: { provider: { issuer, cluster: 'idp', clientId: 'gateway', clientSecret: secretOf('gateway') } },
    extraArgs: ['--file-flush-interval-msec', '200'],
  });
  // (The callouts carry the issuer's host; Keycloak answers with the scheme and host it was
  // called by: "http://sso.example.com/realms/demo".)
  const refusal = /discovery document names issuer \\?"http:\/\/[^"\\]+\/realms\/demo\\?", expected \\?"https:\/\/sso\.example\.com\/realms\/demo/;
  await waitFor(() => refusal.test(plain.log()), { timeoutMs: 20_000, what: 'the discovery refusal in the log' })
    .catch((e) => { throw new Error(`${e.message}\n${plain.log().split('\n').filter((l) => /gatehouse|wasm/.test(l)).slice(-15).join('\n')}`); });
  assert.equal((await http(`${plain.url}/echo`, { headers: { authorization: `Bearer ${token}` } })).status, 503);
});
