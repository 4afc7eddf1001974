// A real image registry for the tests: Debian's docker-registry (distribution 2.8) on
// 127.0.0.1:<free port> with storage of its own, anonymous or behind htpasswd. Used by the OCI
// tests (e2e/oci.test.mjs) and by Istio's agent pulling from it (e2e/istio.test.mjs).

import { spawn, spawnSync } from 'node:child_process';
import {
  openSync, closeSync, readFileSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import { freePort } from './ports.mjs';
import { http } from './http.mjs';
import { waitFor } from './processes.mjs';

/** Whether `cmd` is on PATH. */
export function which(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** An htpasswd line with a bcrypt hash (the only kind distribution accepts). */
export function bcryptHtpasswd(user, pass) {
  if (which('htpasswd')) {
    const r = spawnSync('htpasswd', ['-Bbn', user, pass], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0) return r.stdout;
  }
  // python3's crypt (libcrypt) also makes bcrypt hashes.
  const r = spawnSync('python3', ['-W', 'ignore', '-c',
    'import crypt,sys;print(sys.argv[1]+":"+crypt.crypt(sys.argv[2],crypt.mksalt(crypt.METHOD_BLOWFISH)))', user, pass],
  { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`cannot make a bcrypt htpasswd (apt-get install apache2-utils): ${r.stderr}`);
  return r.stdout;
}

/**
 * docker-registry serve on 127.0.0.1:<free port>, its files in `dir`/`name`*; ready when /v2/
 * answers. Returns {host, pid, log, stop()}; stop() ends it by its PID.
 */
export async function startRegistry(dir, name, { htpasswd } = {}) {
  if (!which('docker-registry')) throw new Error('docker-registry is not installed (apt-get install docker-registry)');
  const port = await freePort();
  const cfg = [
    'version: 0.1',
    'log: {level: info, accesslog: {disabled: false}}',
    `storage: {filesystem: {rootdirectory: ${JSON.stringify(join(dir, name, 'storage'))}}, delete: {enabled: true}}`,
    `http: {addr: "127.0.0.1:${port}", secret: "gatehouse-test-${name}"}`,
  ];
  if (htpasswd) {
    writeFileSync(join(dir, `${name}.htpasswd`), htpasswd);
    cfg.push(`auth: {htpasswd: {realm: gatehouse-test, path: ${JSON.stringify(join(dir, `${name}.htpasswd`))}}}`);
  }
  const cfgPath = join(dir, `${name}.yml`);
  writeFileSync(cfgPath, `${cfg.join('\n')}\n`);
  const log = join(dir, `${name}.log`);
  const fd = openSync(log, 'a');
  const child = spawn('docker-registry', ['serve', cfgPath], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.unref();
  const exited = new Promise((r) => { child.once('exit', (code) => r(code)); child.once('error', (e) => r(e)); });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try { process.kill(child.pid, 'SIGTERM'); } catch { return; }
    const done = await Promise.race([exited.then(() => true), new Promise((r) => { setTimeout(() => r(false), 5_000); })]);
    if (!done) { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }
  };
  const host = `127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      const r = await http(`http://${host}/v2/`, { timeoutMs: 1_000 });
      return r.status === (htpasswd ? 401 : 200);
    }, { timeoutMs: 15_000, what: `registry ${name} on ${host}` });
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n${readFileSync(log, 'utf8').slice(-2000)}`);
  }
  return {
    host, pid: child.pid, log, stop,
  };
}
