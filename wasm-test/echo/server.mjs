#!/usr/bin/env node
// Echo upstream: answers every request with 200 and the request it received as JSON,
//   {"method": "GET", "path": "/x?y=1", "decodedPath": "/x", "headers": {"lower-case-name": "value", ...}}
// "path" is the request target exactly as received (path and query); headers sent more than once
// are joined with ", " in the order received. The request body is read (bounded) and dropped.
// "decodedPath" is the path (without query) as an aggressive upstream would read it, to check
// what a request really reached: percent-decoded until stable (at most 4 times, bytewise,
// invalid UTF-8 as U+FFFD), `\` as `/`, `;params` dropped from each segment, repeated slashes
// merged, `.` and `..` segments resolved, lower case.
//
//   node echo/server.mjs --port 8081 [--host 127.0.0.1] [--quiet]

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const MAX_BODY_BYTES = 1024 * 1024;
const USAGE = 'usage: node echo/server.mjs --port PORT [--host 127.0.0.1] [--quiet]';

function fail(message) {
  console.error(`echo: ${message}\n${USAGE}`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(err.message);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (values.port === undefined || !/^\d+$/.test(values.port) || Number(values.port) > 65535) {
  fail('--port PORT (0-65535) is required');
}
const { host } = values;
if (!(host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host))) {
  fail(`--host must be a loopback address, got ${host}`);
}

/** Request headers as a lower-case map, repeated headers joined with ", " (rawHeaders keeps every line). */
function headerMap(rawHeaders) {
  const out = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    out[name] = Object.hasOwn(out, name) ? `${out[name]}, ${rawHeaders[i + 1]}` : rawHeaders[i + 1];
  }
  return out;
}

/** Decodes every `%HH` once, bytewise; malformed escapes stay, invalid UTF-8 becomes U+FFFD. */
function percentDecode(text) {
  const bytes = Buffer.from(text, 'utf8');
  const hex = (c) => (c >= 0x30 && c <= 0x39 ? c - 0x30 : (c | 0x20) >= 0x61 && (c | 0x20) <= 0x66 ? (c | 0x20) - 0x57 : -1);
  const out = [];
  for (let i = 0; i < bytes.length; i += 1) {
    const hi = bytes[i] === 0x25 && i + 2 < bytes.length ? hex(bytes[i + 1]) : -1;
    const lo = hi >= 0 ? hex(bytes[i + 2]) : -1;
    if (lo >= 0) {
      out.push(hi * 16 + lo);
      i += 2;
    } else {
      out.push(bytes[i]);
    }
  }
  return new TextDecoder('utf-8', { fatal: false }).decode(Uint8Array.from(out));
}

/** The path of a request target as an aggressive upstream reads it (see the header comment). */
function decodedPath(target) {
  // Node hands the target over as latin1 text of the bytes received.
  let path = String(target).split('?', 1)[0];
  if ([...path].every((c) => c.charCodeAt(0) < 0x100)) path = Buffer.from(path, 'latin1').toString('utf8');
  for (let round = 0; round < 4; round += 1) {
    const next = percentDecode(path);
    if (next === path) break;
    path = next;
  }
  const segments = path.replaceAll('\\', '/').split('/').map((s) => s.split(';', 1)[0]);
  const out = [];
  for (const [i, segment] of segments.entries()) {
    const last = i === segments.length - 1;
    if (segment === '..') out.pop();
    if (segment === '.' || segment === '..') {
      if (last) out.push('');
    } else if (segment !== '' || last) {
      out.push(segment);
    }
  }
  return `/${out.join('/')}`.toLowerCase();
}

const server = createServer((req, res) => {
  let size = 0;
  let answered = false;
  const answer = (status, body) => {
    if (answered) return;
    answered = true;
    const data = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(data),
      'cache-control': 'no-store',
    });
    res.end(data);
    if (!values.quiet) console.log(`echo: ${req.method} ${req.url.split('?')[0]} ${status}`);
  };
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      answer(413, { error: 'request body too large' });
      req.destroy();
    }
  });
  req.on('end', () => answer(200, {
    method: req.method, path: req.url, decodedPath: decodedPath(req.url), headers: headerMap(req.rawHeaders),
  }));
  req.on('error', () => {});
});
server.headersTimeout = 10_000;
server.requestTimeout = 30_000;
server.keepAliveTimeout = 5_000;

server.on('error', (err) => {
  console.error(`echo: cannot start: ${err.code === 'EADDRINUSE' ? `port ${values.port} on ${host} is already in use` : err.message}`);
  process.exit(1);
});

server.listen(Number(values.port), host, () => {
  const { port } = server.address();
  console.log(`echo listening on http://${host.includes(':') ? `[${host}]` : host}:${port}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 2000).unref();
  server.close(() => {
    console.log(`echo: stopped (${signal})`);
    process.exit(0);
  });
  server.closeAllConnections();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
