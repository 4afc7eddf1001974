// Issue 11: authorization that no spelling of a path, host or method gets around, through real
// Envoy. Raw request targets (sent byte for byte) with encoded and double-encoded slashes and
// dots, backslashes, `;` parameters, repeated slashes, encoded controls, non-UTF-8 and overlong
// bytes, case, Windows trailing dots, fullwidth and invisible characters, encoded `?`,
// absolute-form targets, routing headers (X-Original-URL …), host spellings (numeric IPv4 forms
// too) and host headers (X-Forwarded-Host, Forwarded …), method overrides and form bodies.
//
// The principle: a request that upstreams could read several ways (its readings: the path as
// each known upstream transformation leaves it, every host a header names, every method an
// override or a form body could name) is held to the rules of EVERY reading. It is public only
// if every reading is public (otherwise authentication is required: 401 for an API client
// without credentials), and an authenticated request is allowed only if every reading's rule
// allows it (otherwise 403 with the first failing rule and its reason). So bob is refused
// `/Admin/` (403, admins-only) and alice, who passes every reading's rules, gets it. gatehouse
// refuses a request outright (400 and a `reason`) only when it is malformed (escaped_slash,
// encoded_control, not_utf8, bad_escape, invalid_host, invalid_method …) or unreadable: more
// than 256 readings (ambiguous_path).
//
// Each row says who sends it, the status, and for a 200 the exact path the upstream received
// (gatehouse forwards the normalized `:path`); for a 400 from gatehouse its `reason`; for a 403
// the rule that refused it (the reason is checked to be group_required: bob has no groups).
// Beyond the table, every 200 for bob or for nobody is checked against what an aggressive
// upstream makes of it (the echo's `decodedPath`, read once more with NFKC and invisible
// characters dropped; hosts as URL parsers canonicalize them; methods from override headers,
// `_method` in the query, and any method at all for a form POST): bob never reaches /admin (or
// another protected host/method), nobody reaches anything but a public path.
//
// The Envoy under test runs the harness bootstrap (lib/harness.mjs envoyBootstrap): HTTP/1 codec
// defaults, no `normalize_path`, no `merge_slashes`, no `path_with_escaped_slashes_action`
// (Envoy's default: kept unchanged), absolute URLs allowed. So Envoy itself forwards `\`, `//`,
// `..`, `;`, `%2F` and the routing headers as received (checked: a plain Envoy echoes them
// unchanged) and all the rest is gatehouse's doing, except what Envoy refuses with 400 before any
// filter runs (ENVOY below): a fragment (`#`, details path_normalization_failed), a raw
// non-ASCII byte (http1.codec_error), `*` as a GET target (http1.invalid_url). For an
// absolute-form target Envoy sets `:path` to the URL's path and `:authority` (so the upstream's
// Host) to its authority, userinfo dropped; two Host lines become one `a,b`. Raw spaces and
// control bytes are not sent: Node's client refuses to.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { posix } from 'node:path';

import { stopAll, http, waitFor, startTokenBed } from '../lib/harness.mjs';
import { signJwt } from '../lib/keys.mjs';

const WASM = process.env.WASM;
const ENVOY = 'refused by Envoy';
const now = () => Math.floor(Date.now() / 1000);

const DEMO = {
  publicPaths: [{ prefix: '/public/' }, { exact: '/healthz' }],
  rules: [{ name: 'admins-only', match: { paths: [{ prefix: '/admin/' }] }, require: { groups: ['admins'] } }],
};

/** Host-scoped rules and public path, and method rules. */
const HOSTS = {
  publicPaths: [{ prefix: '/status/', hosts: ['status.example'] }],
  rules: [
    { name: 'admin-host', match: { hosts: ['admin.example'] }, require: { groups: ['admins'] } },
    { name: 'local-ops', match: { hosts: ['127.0.0.1'], paths: [{ prefix: '/ops/' }] }, require: { groups: ['admins'] } },
    { name: 'deletes', match: { methods: ['DELETE'], paths: [{ prefix: '/api/' }] }, require: { groups: ['admins'] } },
    { name: 'reports', match: { methods: ['GET'], paths: [{ prefix: '/reports/' }] }, require: { groups: ['admins'] } },
  ],
};

// --- what an upstream makes of a forwarded request ------------------------------------------------

/** Characters that render as nothing (zero-width spaces and joiners, soft hyphen, BOM …). */
const INVISIBLE = /[\u00ad\u034f\u180e\u200b-\u200f\u2060-\u2064\ufeff]/gu;
/**
 * The echo's decodedPath, and the same after NFKC (`／` is `/`), invisible characters dropped,
 * dotless `ı` as `i` (Java's equalsIgnoreCase), slashes merged, dots resolved.
 */
const readings = (echo) => [
  echo.decodedPath,
  posix.normalize(echo.decodedPath.normalize('NFKC').replace(INVISIBLE, '').toLowerCase().replaceAll('ı', 'i')),
];
const under = (p, prefix) => p === prefix.slice(0, -1) || p.startsWith(prefix);
/** A host as URL parsers take it: case, quotes, port and trailing dot dropped, numbers as IPv4. */
function canonical(value) {
  const h = value.trim().replace(/^"|"$/g, '').toLowerCase().replace(/:\d*$/, '').replace(/\.$/, '');
  if (!/(^|\.)(\d+|0x[0-9a-f]*)$/.test(h)) return h;
  try {
    return new URL(`http://${h}/`).hostname; // 127.1, 0x7f.0.0.1, 2130706433 … are 127.0.0.1
  } catch {
    return h;
  }
}

/** Every host the upstream could take the request for (Host and the headers some frameworks believe). */
function hostsOf(echo) {
  const h = echo.headers;
  const forwarded = [...(h.forwarded ?? '').matchAll(/host=("[^"]*"|[^;,]*)/gi)].map((m) => m[1]);
  return [h.host, ...(h['x-forwarded-host'] ?? '').split(','), ...forwarded, h['x-host'], h['x-original-host']]
    .filter(Boolean).map(canonical);
}

/** Methods a `_method` in a form body could name (the echo does not return the body). */
const ANY_METHOD = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/**
 * Every method the upstream could take the request for: the method, override headers, `_method`
 * in the query (`&` or `;` separated), and any method for a form POST (its body may hold one).
 */
function methodsOf(echo) {
  const h = echo.headers;
  const query = new URLSearchParams((echo.path.split('?')[1] ?? '').replaceAll(';', '&'));
  const fromQuery = [...query].filter(([k]) => k.toLowerCase() === '_method').map(([, v]) => v);
  const form = echo.method === 'POST' && /^\s*(application\/x-www-form-urlencoded|multipart\/form-data)\b/i.test(h['content-type'] ?? '');
  return [echo.method, h['x-http-method-override'], h['x-http-method'], h['x-method-override'], ...fromQuery, ...(form ? ANY_METHOD : [])]
    .filter(Boolean).map((m) => m.toUpperCase());
}

/** Per bed: what only admins may reach, and what anybody may. */
const DEMO_READS = {
  // Trailing dots and spaces and ::$DATA too (Windows drops them), and a decoded `?` or `#`.
  admin: (echo) => readings(echo).some((p) => /^\/admin[. ]*(::\$data)?([/?#]|$)/.test(p)),
  public: (echo) => readings(echo).every((p) => under(p, '/public/') || p === '/healthz'),
};
const HOSTS_READS = {
  admin: (echo) => {
    const paths = readings(echo);
    const methods = methodsOf(echo);
    const onPath = (prefix) => paths.some((p) => under(p, prefix));
    return hostsOf(echo).some((h) => h === 'admin.example' || (h === '127.0.0.1' && onPath('/ops/')))
      || (methods.includes('DELETE') && onPath('/api/'))
      || (methods.some((m) => m === 'GET' || m === 'HEAD') && onPath('/reports/'));
  },
  public: (echo) => hostsOf(echo).every((h) => h === 'status.example') && readings(echo).every((p) => under(p, '/status/')),
};

const BEDS = {
  main: { config: DEMO, reads: DEMO_READS },
  hosts: { config: HOSTS, reads: HOSTS_READS },
  keep: { config: { ...DEMO, pathNormalization: { escapedSlashes: 'KEEP_UNCHANGED' } }, reads: DEMO_READS },
  decode: { config: { ...DEMO, pathNormalization: { normalization: 'DECODE_AND_MERGE_SLASHES' } }, reads: DEMO_READS },
};

// --- the cases ------------------------------------------------------------------------------------

const ROUTING_HEADERS = {
  'x-original-url': '/admin/', 'x-rewrite-url': '/admin/', 'x-original-uri': '/admin/', 'x-forwarded-uri': '/admin/',
  'x-forwarded-path': '/admin/', 'x-forwarded-prefix': '/admin', 'x-envoy-original-path': '/admin/',
};

// [who, raw target, status, forwarded path (200) | reason (400) | ENVOY | refusing rule (403),
// options] options: bed (default main), method, headers (an object, or [name, value] pairs; a
// `host` replaces the default), body, absent (headers the upstream must not receive). A 403 for
// bob is checked to come from that rule with reason group_required. `{authority}` and `{port}`
// are the gateway's.
const ADMINS = 'admins-only';
/** A path whose readings are more than 256 (each layer of encoding and each transformation in
 *  every order): refused as unreadable, public prefix or not, whoever asks. */
const UNREADABLE = '/public/a;x/b%3Bx/c%253Bx/A/B%2541/C%252541/h%20/i%2520/%EF%BC%A1/%25EF%25BC%25A1/';
/** Built the same way, with fewer than 256 readings: read, and every reading is public. */
const READABLE = '/public/a;x/b%253Bx/A/B%252541/c%2520/%EF%BC%A1/%25EF%25BC%25A1/';

const CASES = [
  // Ordinary paths still work, and are forwarded as sent.
  ['bob', '/echo', 200, '/echo'],
  ['none', '/echo', 401],
  ['bob', '/search/caf%C3%A9', 200, '/search/caf%C3%A9'],
  ['bob', '/a;jsessionid=1/b', 200, '/a;jsessionid=1/b'],
  ['none', '/public/a;b/c', 200, '/public/a;b/c'],
  ['bob', '/api/x?q=%2F&r=%00', 200, '/api/x?q=%2F&r=%00'], // the query is not the path
  ['none', '/healthz', 200, '/healthz'],
  ['none', '/healthz/', 401],
  ['none', '/public', 200, '/public'],
  ['bob', '/admin/', 403, ADMINS],
  ['bob', '/admin', 403, ADMINS],
  ['alice', '/admin/', 200, '/admin/'],

  // Encoded / and \ (either case, any depth): refused by default (escapedSlashes REJECT_REQUEST).
  ['none', '/public/..%2fadmin/', 400, 'escaped_slash'],
  ['bob', '/public/..%2fadmin/', 400, 'escaped_slash'],
  ['none', '/public/..%2Fadmin/', 400, 'escaped_slash'],
  ['none', '/public/..%5cadmin/', 400, 'escaped_slash'],
  ['none', '/public/..%5Cadmin/', 400, 'escaped_slash'],
  ['bob', '/api/a%2Fb', 400, 'escaped_slash'],
  ['none', '/public/..%252fadmin/', 400, 'escaped_slash'],
  ['bob', '/public/..%255Cadmin/', 400, 'escaped_slash'],

  // Encoded and double-encoded dots and letters: a proxy that decodes twice reads /admin/.
  ['none', '/public/%2e%2e/admin/', 401], // normalized: the upstream would get /admin/
  ['bob', '/public/%2e%2e/admin/', 403, ADMINS],
  ['alice', '/public/%2e%2e/admin/', 200, '/admin/'],
  ['alice', '/public/%2e%2e/admin/?q=%2F', 200, '/admin/?q=%2F'], // query kept as sent
  ['alice', '/%61dmin/', 200, '/admin/'],
  ['bob', '/%61dmin/', 403, ADMINS],
  ['bob', '/public/%252e%252e/admin/', 403, ADMINS],
  ['bob', '/%2561dmin/', 403, ADMINS],
  ['bob', '/%25%36%31dmin/', 403, ADMINS],
  ['alice', '/%2561dmin/', 200, '/%2561dmin/'],
  ['none', '/public/%25%32%65%25%32%65/admin/', 401],
  ['none', '/public/%2561dmin/x', 200, '/public/%2561dmin/x'], // public however often decoded
  ['none', '/public/%2525252e', 400, 'too_many_encodings'],
  ['none', '/public/x%', 400, 'bad_escape'],
  ['none', '/public/%u002e', 400, 'bad_escape'],

  // Backslashes are slashes (Envoy forwards them raw; gatehouse normalizes them).
  ['none', '/public\\..\\admin/', 401],
  ['bob', '/public\\..\\admin/', 403, ADMINS],
  ['alice', '/public\\..\\admin/', 200, '/admin/'],
  ['none', '/public/..\\admin/', 401],
  // `\` is `/`, and `..` removes the empty segment before it (RFC 3986, as normalize_path).
  ['bob', '/public/\\..\\admin/', 200, '/public/admin/'],

  // Repeated slashes are merged.
  ['none', '//admin//x', 401],
  ['bob', '//admin//x', 403, ADMINS],
  ['alice', '//admin//x', 200, '/admin/x'],
  ['none', '//public//x', 200, '/public/x'],
  ['none', '/public//../admin/', 200, '/public/admin/'],
  ['none', '/public/./x', 200, '/public/x'],
  ['none', '/%2e/public/x', 200, '/public/x'],
  ['none', '/public/.%2e/admin/', 401],
  ['bob', '/admin/..', 200, '/'],
  ['bob', '/admin/%2e%2e/x', 200, '/x'],

  // `;` path parameters (servlet containers drop them: /..;/ is /../): the rules of /admin/
  // hold too, so alice passes and bob does not; nobody is asked to authenticate.
  ['none', '/public/..;/admin/', 401],
  ['bob', '/public/..;/admin/', 403, ADMINS],
  ['alice', '/public/..;/admin/', 200, '/public/..;/admin/'],
  ['none', '/public/..;/x/', 401], // /x/ to Tomcat: not public
  ['bob', '/admin;x/', 403, ADMINS],
  ['none', '/public;x/../admin/', 401], // normalized to /admin/ first
  ['bob', '/public;x/../admin/', 403, ADMINS],
  ['none', '/healthz;/../admin/', 401],
  ['none', '/public/x;/../../admin/', 401],
  ['none', '/healthz/..%3b/admin/', 401],

  // Encoded controls, non-UTF-8, overlong forms.
  ['none', '/public/%00', 400, 'encoded_control'],
  ['none', '/public/%0d%0a', 400, 'encoded_control'],
  ['bob', '/admin%00/', 400, 'encoded_control'],
  ['none', '/public/%2500', 400, 'encoded_control'],
  ['none', '/public/%ff', 400, 'not_utf8'],
  ['none', '/public/%c0%af', 400, 'not_utf8'],
  ['bob', '/%c0%afadmin/', 400, 'not_utf8'],

  // Case: some upstreams route case-insensitively, so the rules of /admin/ hold too.
  ['bob', '/Admin/', 403, ADMINS],
  ['bob', '/ADMIN/x', 403, ADMINS],
  ['alice', '/Admin/', 200, '/Admin/'],
  ['bob', '/adm%C4%B1n/', 403, ADMINS], // dotless ı: Java's equalsIgnoreCase takes it for i
  ['none', '/PUBLIC/x', 401], // /public/x to some upstreams, but not to all: not public
  ['none', '/Public/x', 401],

  // Windows drops trailing dots and spaces, and ::$DATA.
  ['bob', '/admin./', 403, ADMINS],
  ['bob', '/admin%2e/', 403, ADMINS],
  ['bob', '/admin%20/', 403, ADMINS],
  ['bob', '/admin::$DATA/', 403, ADMINS],
  ['none', '/public./x', 401],
  ['none', '/healthz.', 401],

  // Fullwidth characters, which NFKC folds into ASCII (／ is /, ａ is a).
  ['bob', '/%EF%BC%8Fadmin/', 403, ADMINS],
  ['bob', '/%EF%BD%81dmin/', 403, ADMINS],
  ['none', '/public/..%EF%BC%8Fadmin/', 401],
  ['bob', '/admin%C2%A0/', 403, ADMINS], // no-break space: NFKC makes it a space, Windows drops it

  // Invisible characters (zero-width space, soft hyphen, BOM), which some servers drop.
  ['bob', '/admin%E2%80%8B/', 403, ADMINS],
  ['bob', '/admin%C2%AD/', 403, ADMINS],
  ['bob', '/admin%EF%BB%BF/', 403, ADMINS],
  ['alice', '/admin%E2%80%8B/', 200, '/admin%E2%80%8B/'],
  ['none', '/public%E2%80%8B/x', 401],

  // A decoded `?` or `#` ends the path for servers that decode before parsing.
  ['bob', '/admin%3f.css', 403, ADMINS],
  ['bob', '/admin%3F.css', 403, ADMINS],
  ['bob', '/admin%23.css', 403, ADMINS],
  ['none', '/public/x?/../../admin/', 200, '/public/x?/../../admin/'], // a query, not a path
  ['none', '/public/%3f/../../admin/', 401],

  // Too many readings to check: refused, even on a public prefix, alice too.
  ['none', UNREADABLE, 400, 'ambiguous_path'],
  ['bob', UNREADABLE, 400, 'ambiguous_path'],
  ['alice', UNREADABLE, 400, 'ambiguous_path'],
  ['none', READABLE, 200, READABLE],

  // Refused by Envoy itself, before any filter.
  ['none', '/public/x#frag', 400, ENVOY],
  ['bob', '/admin/#x', 400, ENVOY],
  ['none', '/public/\u00e9', 400, ENVOY],
  ['none', '*', 400, ENVOY],

  // Absolute form: Envoy takes the path (and the authority) out of the URL.
  ['bob', 'http://{authority}/admin/', 403, ADMINS],
  ['bob', 'https://{authority}/admin/', 403, ADMINS],
  ['alice', 'http://{authority}/admin/', 200, '/admin/'],
  ['none', 'http://{authority}/public/x', 200, '/public/x'],
  ['none', 'http://{authority}/public/..%2fadmin/', 400, 'escaped_slash'],

  // Routing headers some servers take the path from never reach the upstream.
  ['none', '/public/x', 200, '/public/x', { headers: ROUTING_HEADERS, absent: Object.keys(ROUTING_HEADERS) }],
  ['bob', '/echo', 200, '/echo', { headers: ROUTING_HEADERS, absent: Object.keys(ROUTING_HEADERS) }],

  // Other settings: escaped slashes kept (and then the rules of every reading hold) ...
  ['bob', '/api/a%2Fb', 200, '/api/a%2Fb', { bed: 'keep' }],
  ['none', '/public/a%2Fb', 200, '/public/a%2Fb', { bed: 'keep' }],
  ['none', '/public/..%2fadmin/', 401, undefined, { bed: 'keep' }],
  ['bob', '/public/..%2fadmin/', 403, ADMINS, { bed: 'keep' }],
  ['bob', '/admin%2fx', 403, ADMINS, { bed: 'keep' }],
  ['alice', '/admin%2fx', 200, '/admin%2Fx', { bed: 'keep' }],
  // ... or decoded and merged, then matched as what they are.
  ['none', '/public/..%2fadmin/', 401, undefined, { bed: 'decode' }],
  ['bob', '/public/..%2fadmin/', 403, ADMINS, { bed: 'decode' }],
  ['alice', '/public/..%2fadmin/', 200, '/admin/', { bed: 'decode' }],
  ['bob', '/api/a%2Fb', 200, '/api/a/b', { bed: 'decode' }],
  ['none', '/public/a%5Cb', 200, '/public/a/b', { bed: 'decode' }],

  // Hosts: canonical (case, trailing dot, port), malformed ones refused.
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'ADMIN.EXAMPLE' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'admin.example.' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'Admin.Example.:443' } }],
  ['alice', '/', 200, '/', { bed: 'hosts', headers: { host: 'admin.example' } }],
  ['bob', '/', 200, '/', { bed: 'hosts', headers: { host: 'app.example' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '127.0.0.1.:{port}' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '127.0.0.1.' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts' }],
  ['alice', '/ops/x', 200, '/ops/x', { bed: 'hosts', headers: { host: '127.0.0.1.:{port}' } }],
  // Numeric hosts are IPv4 addresses, as URL parsers and inet_aton read them: all 127.0.0.1.
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '127.000.0.1' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '127.1' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '0x7f.0.0.1' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '0X7F.0.0.1:{port}' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '2130706433' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: '0177.0.0.1' } }],
  ['bob', '/ops/x', 403, 'local-ops', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': '127.1' } }],
  ['alice', '/ops/x', 200, '/ops/x', { bed: 'hosts', headers: { host: '127.1' } }],
  ['bob', '/ops/x', 200, '/ops/x', { bed: 'hosts', headers: { host: '127.0.0.2' } }], // another address
  ['bob', '/ops/x', 400, 'invalid_host', { bed: 'hosts', headers: { host: '999.0.0.1' } }],
  ['bob', '/ops/x', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'example.123' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'bob@admin.example' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'adm%69n.example' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'admin..example' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'admin.example:x' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: [['host', 'app.example'], ['host', 'admin.example']] }],
  ['none', '/status/x', 200, '/status/x', { bed: 'hosts', headers: { host: 'status.example' } }],
  ['none', '/status/x', 200, '/status/x', { bed: 'hosts', headers: { host: 'STATUS.example.:80' } }],
  ['none', '/status/x', 401, undefined, { bed: 'hosts', headers: { host: 'app.example' } }],
  // A path that starts like a network-path reference (`//host/…`) never names a host upstream.
  ['bob', '//admin.example/', 200, '/admin.example/', { bed: 'hosts', headers: { host: 'app.example' } }],
  ['bob', '/\\admin.example/', 200, '/admin.example/', { bed: 'hosts', headers: { host: 'app.example' } }],
  ['bob', '/%2fadmin.example/', 400, 'escaped_slash', { bed: 'hosts', headers: { host: 'app.example' } }],
  // Absolute form: the URL's authority wins over Host, for gatehouse and the upstream alike.
  ['bob', 'http://admin.example/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example' } }],
  ['bob', 'http://app.example/', 200, '/', { bed: 'hosts', headers: { host: 'admin.example' } }],

  // Host headers some upstreams believe are readings too: the rules of every host they name hold.
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': 'admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': 'app.example, admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', forwarded: 'for=192.0.2.1;host=admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', forwarded: 'host="ADMIN.example:443"' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', 'x-host': 'admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: { host: 'app.example', 'x-original-host': 'admin.example' } }],
  ['bob', '/', 403, 'admin-host', { bed: 'hosts', headers: [['host', 'app.example'], ['x-forwarded-host', 'app.example'], ['x-forwarded-host', 'admin.example']] }],
  ['alice', '/', 200, '/', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': 'admin.example' } }],
  ['bob', '/', 400, 'invalid_host', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': 'bad host' } }],
  ['bob', '/', 200, '/', { bed: 'hosts', headers: { host: 'app.example', 'x-forwarded-host': 'app.example' } }],
  // Public only if public on every host named.
  ['none', '/status/x', 401, undefined, { bed: 'hosts', headers: { host: 'status.example', 'x-forwarded-host': 'app.example' } }],
  ['none', '/status/x', 401, undefined, { bed: 'hosts', headers: { host: 'app.example', forwarded: 'host=status.example' } }],

  // Method overrides are readings: the rules of every method named hold.
  ['bob', '/api/x', 200, '/api/x', { bed: 'hosts', method: 'POST' }],
  ['bob', '/api/x', 403, 'deletes', { bed: 'hosts', method: 'DELETE' }],
  ['bob', '/api/x', 403, 'deletes', { bed: 'hosts', method: 'POST', headers: { 'x-http-method-override': 'DELETE' } }],
  ['alice', '/api/x', 200, '/api/x', { bed: 'hosts', method: 'POST', headers: { 'x-http-method-override': 'DELETE' } }],
  ['bob', '/api/x', 403, 'deletes', { bed: 'hosts', method: 'POST', headers: { 'x-http-method': 'delete' } }],
  ['bob', '/api/x', 403, 'deletes', { bed: 'hosts', method: 'POST', headers: { 'x-method-override': 'DELETE' } }],
  ['bob', '/api/x?_method=DELETE', 403, 'deletes', { bed: 'hosts', method: 'POST' }],
  ['bob', '/api/x?a=1&_METHOD=delete', 403, 'deletes', { bed: 'hosts', method: 'POST' }],
  ['bob', '/api/x?a=1;_method=DELETE', 403, 'deletes', { bed: 'hosts', method: 'POST' }], // `;` separates too
  ['bob', '/api/x?%5Fmethod=DEL%45TE', 403, 'deletes', { bed: 'hosts', method: 'POST' }],
  ['alice', '/api/x?a=1;_method=DELETE', 200, '/api/x?a=1;_method=DELETE', { bed: 'hosts', method: 'POST' }],
  ['bob', '/reports/q3', 403, 'reports', { bed: 'hosts', method: 'POST', headers: { 'x-http-method-override': 'GET' } }],
  ['bob', '/api/x?_method=POST', 200, '/api/x?_method=POST', { bed: 'hosts', method: 'POST' }],
  ['bob', '/api/x', 400, 'invalid_method', { bed: 'hosts', method: 'POST', headers: { 'x-http-method-override': 'DEL ETE' } }],
  // Rack::MethodOverride (Rails), Laravel and Symfony read `_method` from a form body, which
  // gatehouse does not read: a form POST is held to every method a rule names, `_method` in
  // its body or not.
  ['bob', '/api/x', 403, 'deletes', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_method=DELETE',
  }],
  ['bob', '/api/x', 403, 'deletes', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'Application/X-WWW-Form-Urlencoded; charset=utf-8' }, body: '_method=DELETE',
  }],
  ['bob', '/api/x', 403, 'deletes', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=x' },
    body: '--x\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--x--\r\n',
  }],
  ['bob', '/api/x', 403, 'deletes', { bed: 'hosts', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' }],
  ['bob', '/reports/q3', 403, 'reports', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_method=GET',
  }],
  ['alice', '/api/x', 200, '/api/x', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_method=DELETE',
  }],
  // Where no rule names a method, a form POST is what it is.
  ['bob', '/other', 200, '/other', {
    bed: 'hosts', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_method=DELETE',
  }],
  // A GET rule covers HEAD.
  ['bob', '/reports/q3', 403, undefined, { bed: 'hosts', method: 'HEAD' }],
  ['bob', '/reports/q3', 403, 'reports', { bed: 'hosts' }],
  ['alice', '/reports/q3', 200, '/reports/q3', { bed: 'hosts' }],
];

// --- the beds -------------------------------------------------------------------------------------

const beds = {};

before(async () => {
  assert.ok(WASM, 'WASM must point at the built gatehouse.wasm (run through `make test`)');
  for (const [name, { config }] of Object.entries(BEDS)) {
    // eslint-disable-next-line no-await-in-loop
    const bed = await startTokenBed({
      wasmPath: WASM,
      filterConfig: (iss) => ({ provider: { issuer: iss, cluster: 'idp', audiences: ['api'] }, ...config }),
    });
    const token = (sub, groups) => signJwt(bed.jwks, {
      iss: bed.issuer, sub, aud: 'api', exp: now() + 3600, iat: now(), preferred_username: sub, groups,
    });
    // eslint-disable-next-line no-await-in-loop
    bed.tokens = { bob: await token('bob', []), alice: await token('alice', ['/admins']) };
    // eslint-disable-next-line no-await-in-loop
    await waitFor(async () => (await send(bed, 'bob', '/echo')).status === 200, { timeoutMs: 20000, what: `gatehouse (${name}) to load keys` });
    beds[name] = bed;
  }
});

after(stopAll);

/** Headers as [name, value] pairs: an object, or pairs already (to send one name twice). */
const pairsOf = (headers = {}) => (Array.isArray(headers) ? headers : Object.entries(headers));

function send(bed, who, target, { method = 'GET', headers, body } = {}) {
  const { host: authority, port } = new URL(bed.gateway);
  const fill = (s) => String(s).replaceAll('{authority}', authority).replaceAll('{port}', port);
  const h = pairsOf(headers).map(([k, v]) => [k, fill(v)]);
  if (who !== 'none') h.push(['authorization', `Bearer ${bed.tokens[who]}`]);
  return http(`${bed.gateway}/`, { method, rawPath: fill(target), headers: h, body });
}

for (const [who, target, status, detail, opts = {}] of CASES) {
  const headers = pairsOf(opts.headers).map(([k, v]) => `${k}: ${v}`).concat(opts.body ? [`body ${opts.body}`] : []).join(', ');
  const name = [
    opts.bed ? `[${opts.bed}]` : '', who, opts.method ?? 'GET', target, headers && `(${headers})`, '→', status, detail ?? '',
  ].filter(Boolean).join(' ');
  test(name, async () => {
    const r = await send(beds[opts.bed ?? 'main'], who, target, opts);
    // First the invariant, whatever the table says: what bob or nobody got through is what it
    // seems to be for an upstream that reads the path aggressively.
    if (r.status === 200 && who !== 'alice') {
      const { reads } = BEDS[opts.bed ?? 'main'];
      const what = `${JSON.stringify(readings(r.json))} on ${JSON.stringify(hostsOf(r.json))} (upstream got ${r.json.path})`;
      assert.ok(!reads.admin(r.json), `BYPASS: ${who} reached ${what}`);
      if (who === 'none') assert.ok(reads.public(r.json), `BYPASS: no credentials reached ${what}`);
    }
    const seen = r.json?.path !== undefined ? ` (upstream got ${r.json.path}, reads ${r.json.decodedPath})` : ` ${r.body.slice(0, 200)}`;
    assert.equal(r.status, status, `status${seen}`);
    if (status === 200) {
      assert.equal(r.json.path, detail, 'the path the upstream received');
      for (const h of opts.absent ?? []) assert.equal(r.json.headers[h], undefined, `${h} reached the upstream`);
    } else if (detail === ENVOY) {
      assert.equal(r.json, undefined, 'Envoy answers before gatehouse (no JSON body)');
    } else if (status === 400) {
      assert.deepEqual([r.json?.error, r.json?.reason], ['invalid_request', detail], r.body);
    } else if (status === 403 && (opts.method ?? 'GET') !== 'HEAD') {
      assert.equal(r.json?.error, 'access_denied', r.body);
      if (detail !== undefined) assert.deepEqual([r.json.rule, r.json.reason], [detail, 'group_required'], r.body);
    }
  });
}
