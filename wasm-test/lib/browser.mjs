// Browser-less login flows: a cookie jar, HTML forms read from a page, and browse(), which walks
// a login the way a browser without JavaScript would.

import { http } from './http.mjs';

/** A minimal cookie jar (name/value/path; cookies ignore ports, as in browsers). */
export class CookieJar {
  #cookies = new Map(); // `${host}|${path}|${name}` -> {host, path, name, value, expires}

  /** Store the Set-Cookie headers of a response to `url`. */
  store(url, setCookie) {
    const { hostname, pathname } = new URL(url);
    for (const line of [].concat(setCookie ?? [])) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = pathname.replace(/\/[^/]*$/, '') || '/';
      let expires = Infinity;
      for (const attr of attrs) {
        const [k, ...rest] = attr.trim().split('=');
        const v = rest.join('=');
        if (k.toLowerCase() === 'path' && v.startsWith('/')) path = v;
        if (k.toLowerCase() === 'max-age') expires = Date.now() + Number(v) * 1000;
        if (k.toLowerCase() === 'expires' && expires === Infinity) expires = Date.parse(v);
      }
      const key = `${hostname}|${path}|${name}`;
      if (expires <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, { host: hostname, path, name, value, expires });
    }
  }

  /** The Cookie header value for a request to `url` ('' if none). */
  header(url) {
    const { hostname, pathname } = new URL(url);
    const now = Date.now();
    return [...this.#cookies.values()]
      .filter((c) => c.host === hostname && c.expires > now
        && (pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  /** All live cookies, e.g. to assert on names. */
  list() {
    const now = Date.now();
    return [...this.#cookies.values()].filter((c) => c.expires > now).map((c) => ({ ...c }));
  }
}

function decodeEntities(s) {
  return s
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replaceAll('&quot;', '"')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}

function attrsOf(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

/**
 * The first HTML form (or the one with `id`) of a page: absolute action URL, method, and its
 * named <input> values (type=submit inputs excluded). Returns undefined if there is none.
 */
export function formFromHtml(html, baseUrl, { id } = {}) {
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attrsOf(m[1]);
    if (id !== undefined && attrs.id !== id) continue;
    const fields = {};
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const a = attrsOf(input[1]);
      if (a.name && (a.type || 'text').toLowerCase() !== 'submit') fields[a.name] = a.value ?? '';
    }
    return {
      id: attrs.id,
      action: new URL(attrs.action || baseUrl, baseUrl).href,
      method: (attrs.method || 'GET').toUpperCase(),
      fields,
    };
  }
  return undefined;
}

/**
 * Walk a login flow the way a browser without JavaScript would: GET `url`, follow redirects
 * (across origins), fill Keycloak-style login forms (#kc-form-login) with the credentials, and
 * submit self-submitting forms (form_post, logout confirmation). Stops at the first response that
 * is neither a redirect nor such a form, at a URL for which `stopAt(url)` is true (that URL is not
 * requested), or after `maxSteps` requests (then it throws).
 *
 * @param {string} url start URL
 * @param {object} [options]
 * @param {CookieJar} [options.jar] cookies (a new jar if absent)
 * @param {string} [options.username]
 * @param {string} [options.password]
 * @param {(url: URL) => boolean} [options.stopAt]
 * @param {number} [options.maxSteps] default 20
 * @param {object} [options.headers] extra request headers (e.g. accept: text/html)
 * @returns {Promise<{url: string, response?: object, stopped: boolean, loginFailed: boolean,
 *   history: Array<{method: string, url: string, status: number}>, jar: CookieJar}>}
 */
export async function browse(url, {
  jar = new CookieJar(), username, password, stopAt = () => false, maxSteps = 20,
  headers = { accept: 'text/html,application/xhtml+xml' },
} = {}) {
  const history = [];
  let method = 'GET';
  let current = new URL(url);
  let body;
  let submittedLogin = false;
  for (let step = 0; step < maxSteps; step += 1) {
    if (stopAt(current)) {
      return { url: current.href, stopped: true, loginFailed: false, history, jar };
    }
    const cookie = jar.header(current.href);
    const t0 = performance.now();
    // eslint-disable-next-line no-await-in-loop
    const res = await http(current.href, {
      method,
      headers: { ...headers, ...(cookie ? { cookie } : {}) },
      body,
    });
    history.push({ method, url: current.href, status: res.status, ms: performance.now() - t0 });
    jar.store(current.href, res.headers['set-cookie']);
    if (res.status >= 300 && res.status < 400 && res.headers.location) {
      current = new URL(res.headers.location, current);
      method = 'GET';
      body = undefined;
      continue;
    }
    const isHtml = /text\/html/i.test(res.headers['content-type'] || '');
    const login = isHtml ? formFromHtml(res.body, current.href, { id: 'kc-form-login' }) : undefined;
    if (login) {
      if (submittedLogin || username === undefined) {
        return {
          url: current.href, response: res, stopped: false, loginFailed: submittedLogin, history, jar,
        };
      }
      submittedLogin = true;
      current = new URL(login.action);
      method = login.method;
      body = new URLSearchParams({ ...login.fields, username, password: password ?? '' });
      continue;
    }
    // Self-submitting pages (form_post response mode, logout with id_token_hint).
    if (isHtml && /document\.forms\[0\]\.submit\(\)/.test(res.body)) {
      const form = formFromHtml(res.body, current.href);
      if (form) {
        current = new URL(form.action);
        method = form.method;
        body = method === 'POST' ? new URLSearchParams(form.fields) : undefined;
        if (method === 'GET') {
          for (const [k, v] of Object.entries(form.fields)) current.searchParams.set(k, v);
        }
        continue;
      }
    }
    return { url: current.href, response: res, stopped: false, loginFailed: false, history, jar };
  }
  throw new Error(`browse(): more than ${maxSteps} requests, last ${method} ${current.href}\n`
    + `${history.map((h) => `  ${h.status} ${h.method} ${h.url}`).join('\n')}`);
}
