// The HTTP client of the tests: one request, never following redirects; every exchange's
// credentials are noted for the scan of Envoy's logs (credential-scan.mjs).

import { request as httpRequest } from 'node:http';

import { noteExchange } from './credential-scan.mjs';

/**
 * One HTTP request, never following redirects.
 *
 * @param {string} url
 * @param {object} [options]
 * @param {string} [options.method] default GET
 * @param {object|Array<[string,string]>} [options.headers] an object (an array value sends the
 *   header once per element) or a list of [name, value] pairs; a `host` header replaces the default
 * @param {string|Buffer|URLSearchParams|object} [options.body] URLSearchParams is sent as a form,
 *   a plain object as JSON
 * @param {number} [options.timeoutMs] whole-exchange timeout (default 10 s)
 * @param {string} [options.rawPath] the request target exactly as sent, instead of the URL's
 * @returns {Promise<{status: number, headers: object, rawHeaders: string[], body: string,
 *   json: any, url: string}>} `headers` has lower-case names (set-cookie is an array); `json` is
 *   the parsed body when it is JSON, else undefined
 */
export function http(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000, rawPath } = {}) {
  const target = new URL(url);
  if (target.protocol !== 'http:') throw new TypeError(`http(): only http: URLs, got ${url}`);
  const pairs = Array.isArray(headers)
    ? headers.map(([k, v]) => [k, v])
    : Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]));
  let payload;
  const has = (name) => pairs.some(([k]) => k.toLowerCase() === name);
  if (body instanceof URLSearchParams) {
    payload = Buffer.from(body.toString());
    if (!has('content-type')) pairs.push(['content-type', 'application/x-www-form-urlencoded']);
  } else if (typeof body === 'string' || Buffer.isBuffer(body)) {
    payload = Buffer.from(body);
  } else if (body !== undefined && body !== null) {
    payload = Buffer.from(JSON.stringify(body));
    if (!has('content-type')) pairs.push(['content-type', 'application/json']);
  }
  if (payload && !has('content-length')) pairs.push(['content-length', String(payload.length)]);
  if (!has('host')) pairs.unshift(['host', target.host]);
  const flat = pairs.flatMap(([k, v]) => [k, String(v)]);

  return new Promise((resolveRes, reject) => {
    const req = httpRequest({
      host: target.hostname.replace(/^\[|\]$/g, ''),
      port: target.port || 80,
      // `rawPath` is sent as it is (URL parsing would turn `\` into `/`, for one).
      path: rawPath ?? `${target.pathname}${target.search}`,
      method,
      headers: flat,
      setHost: false,
      agent: false,
      // Chunked session cookies make large Set-Cookie answers (Node's default limit is 16 KB).
      maxHeaderSize: 128 * 1024,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        if (/[/+]json\b/i.test(res.headers['content-type'] || '')) {
          try { json = JSON.parse(text); } catch { json = undefined; }
        }
        const out = {
          status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: text, json, url,
        };
        noteExchange(pairs, payload, out);
        resolveRes(out);
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${url}: no complete response within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${method} ${target.origin}${target.pathname}: ${err.message}`));
    });
    req.end(payload);
  });
}

/** One GET of `url` (bounded by `timeoutMs`), judged by `accept(response)`: a readiness check. */
export async function waitHttp(url, accept, timeoutMs = 1_000) {
  const res = await http(url, { timeoutMs });
  return accept(res);
}
