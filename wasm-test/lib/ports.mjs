// TCP ports on 127.0.0.1: free ones for the test bed's processes, checks that one is free, that
// one accepts connections, and that a value is a port number.

import { createServer, connect } from 'node:net';

const handedOut = new Set();

/** A TCP port that is free on 127.0.0.1 now (never the same one twice in this process). */
export async function freePort() {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    // eslint-disable-next-line no-await-in-loop
    const port = await new Promise((resolvePort, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port: p } = srv.address();
        srv.close(() => resolvePort(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: no unused port found after 50 attempts');
}

/** Throw a clear error if something already listens on 127.0.0.1:port. */
export async function assertPortFree(port, what = 'port') {
  await new Promise((resolveFree, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err) => {
      reject(err.code === 'EADDRINUSE'
        ? new Error(`${what} ${port} on 127.0.0.1 is already in use (a demo or another test bed still running?)`)
        : err);
    });
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolveFree()));
  });
}

/** Whether a TCP connection to host:port succeeds within `timeoutMs` (false on any error). */
export function tcpAccepts(port, host = '127.0.0.1', timeoutMs = 1_000) {
  return new Promise((resolveConn) => {
    const sock = connect({ port, host });
    const done = (ok) => { sock.destroy(); resolveConn(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** `value` if it is a TCP port number, else a TypeError naming `name`. */
export function checkPort(value, name) {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new TypeError(`${name} must be a TCP port number, got ${JSON.stringify(value)}`);
  }
  return value;
}
