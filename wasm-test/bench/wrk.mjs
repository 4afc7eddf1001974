// make bench: one wrk run (bounded by its -d plus a kill timeout), parsed.

import { execFile } from 'node:child_process';

export function wrk(url, {
  headers = {}, script, scriptArgs = [], duration, connections, threads,
} = {}) {
  const args = [`-c${connections}`, `-t${threads}`, `-d${duration}s`, '--latency', '--timeout', '5s'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  if (script) args.push('-s', script);
  args.push(url);
  if (scriptArgs.length) args.push('--', ...scriptArgs);
  return new Promise((res, rej) => {
    execFile('wrk', args, { timeout: (duration + 20) * 1000, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) { rej(new Error(`wrk failed: ${err.message}\n${stdout}${stderr}`)); return; }
      res(parseWrk(stdout));
    });
  });
}

function toMs(s) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s);
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60000 }[m[2]];
}

function parseWrk(text) {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const total = Number(/(\d+) requests in/.exec(text)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const errors = /Socket errors:.*/.exec(text)?.[0] ?? '';
  if (!Number.isFinite(rps)) throw new Error(`cannot parse wrk output:\n${text}`);
  return { rps, p50, p99, total, non2xx, errors, raw: text };
}

