// A fault-injecting HTTP proxy in front of Keycloak, for the calls gatehouse itself makes to
// the provider (discovery, keys, token endpoint). It forwards everything unchanged until a test
// tells it to misbehave on some paths: answer an error status, garbage, a huge body or the wrong
// content type, wait longer than the callout timeout, drop the connection, or rewrite the answer
// (re-sign the ID token with a flaw: the OpenID relying-party conformance cases).
//
// Only Envoy's cluster "idp" points here; browsers keep talking to Keycloak directly, so a login
// is real up to the point where gatehouse redeems the code.
//
//   const proxy = await startFaultProxy({ targetPort: kc.port });
//   proxy.set('token', /\/token$/, faults.status(500));   // until proxy.clear('token')
//   proxy.hits(/\/certs$/)                                 // requests seen on matching paths
//   await proxy.close();
//
// Listens on 127.0.0.1 only. Every wait it makes is bounded and is cut short by close().

import { createServer, request as httpRequest } from 'node:http';

const MAX_UPSTREAM_BYTES = 16 * 1024 * 1024;

/** Ready-made misbehaviours for proxy.set(). Each is `async (ctx) => answer | undefined`. */
export const faults = {
  /** Answer `status` with a small JSON error body. */
  status: (status, body = { error: 'server_error' }) => async () => ({
    status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  }),
  /** 200 with bytes that are not what was asked for. */
  garbage: (contentType = 'application/json') => async () => ({
    status: 200, headers: { 'content-type': contentType }, body: '{"keys": [ \u0000\u00ff not json <html>',
  }),
  /** 200 with a body of `bytes` bytes (valid JSON: a long string member). */
  huge: (bytes = 8 * 1024 * 1024) => async () => ({
    status: 200, headers: { 'content-type': 'application/json' }, body: `{"padding":"${'x'.repeat(Math.max(0, bytes - 15))}"}`,
  }),
  /** The real answer, with another content type (e.g. an HTML error page's). */
  contentType: (type) => async ({ forward }) => {
    const up = await forward();
    return { ...up, headers: { ...up.headers, 'content-type': type } };
  },
  /** The real answer, `ms` later. */
  delay: (ms) => async ({ forward, sleep }) => {
    await sleep(ms);
    return forward();
  },
  /** Close the connection without answering. */
  reset: () => async ({ res }) => { res.socket?.destroy(); return null; },
  /** The real answer with its JSON body changed by `fn(json, ctx)` (which may be async). */
  rewriteJson: (fn) => async (ctx) => {
    const up = await ctx.forward();
    if (up.status !== 200) return up;
    const json = JSON.parse(up.body.toString('utf8'));
    const changed = (await fn(json, ctx)) ?? json;
    return { status: up.status, headers: { ...up.headers, 'content-type': 'application/json' }, body: JSON.stringify(changed) };
  },
};

/**
 * Start the proxy.
 * @param {object} o
 * @param {number} o.targetPort the port of Keycloak (or any HTTP server) on 127.0.0.1
 * @param {number} [o.port] default: any free port
 * @returns {Promise<{port: number, set: Function, clear: Function, hits: Function, requests: object[], close: Function}>}
 */
export async function startFaultProxy({ targetPort, port = 0 }) {
  if (!Number.isInteger(targetPort) || targetPort < 1 || targetPort > 65535) throw new TypeError(`targetPort must be a port, got ${targetPort}`);
  /** name -> {pattern: RegExp, action} */
  const rules = new Map();
  /** {method, path, status, at, ms} of every request, oldest first (bounded); ms: time to answer. */
  const requests = [];
  const timers = new Set();
  const sockets = new Set();
  let closed = false;

  const sleep = (ms) => new Promise((resolve) => {
    const t = setTimeout(() => { timers.delete(t); resolve(); }, ms);
    timers.add(t);
  });

  function forwardRequest(req, body) {
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers };
      delete headers['content-length'];
      delete headers['transfer-encoding'];
      if (body.length) headers['content-length'] = String(body.length);
      const up = httpRequest({
        host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, timeout: 10_000,
      }, (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (c) => {
          size += c.length;
          if (size > MAX_UPSTREAM_BYTES) { up.destroy(new Error('upstream answer too large')); return; }
          chunks.push(c);
        });
        res.on('end', () => {
          const h = { ...res.headers };
          delete h['content-length'];
          delete h['transfer-encoding'];
          delete h.connection;
          delete h['keep-alive'];
          resolve({ status: res.statusCode, headers: h, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      });
      up.on('timeout', () => up.destroy(new Error('upstream timeout')));
      up.on('error', reject);
      up.end(body);
    });
  }

  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const path = req.url.split('?')[0];
    const entry = { method: req.method, path, status: 0, at: Date.now() };
    requests.push(entry);
    if (requests.length > 10_000) requests.shift();
    // The rule set last wins where several match (a test's fault over a file's standing rule).
    const rule = [...rules.values()].reverse().find((r) => r.pattern.test(path));
    const forward = () => forwardRequest(req, body);
    let answer;
    try {
      answer = rule ? await rule.action({ req, res, path, body, forward, sleep }) : await forward();
    } catch (err) {
      answer = { status: 502, headers: { 'content-type': 'text/plain' }, body: `fault proxy: ${err.message}` };
    }
    if (answer === null || closed || res.destroyed) return;
    entry.status = answer.status;
    entry.ms = Date.now() - entry.at;
    const payload = Buffer.isBuffer(answer.body) ? answer.body : Buffer.from(answer.body ?? '');
    res.writeHead(answer.status, { ...answer.headers, 'content-length': payload.length });
    res.end(payload);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.keepAliveTimeout = 5_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });

  return {
    port: server.address().port,
    requests,
    /**
     * Misbehave with `action` on paths matching `pattern` (replaces an earlier rule of that name).
     * Where the patterns of several rules match, the one set last applies.
     */
    set(name, pattern, action) {
      if (!(pattern instanceof RegExp) || typeof action !== 'function') throw new TypeError('set(name, RegExp, action)');
      rules.delete(name);
      rules.set(name, { pattern, action });
    },
    /** Stop misbehaving: one rule by name, or all. */
    clear(name) {
      if (name === undefined) rules.clear(); else rules.delete(name);
    },
    /** How many requests to paths matching `pattern` were seen (since `since`, ms epoch). */
    hits(pattern, since = 0) {
      return requests.filter((r) => r.at >= since && pattern.test(r.path)).length;
    },
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => { server.close(() => resolve()); });
    },
  };
}
