#!/usr/bin/env node
// An upstream that makes a business decision from the identity gatehouse passes on (seed 000:
// "custom role claims in tokens for services to use in business logic"). It trusts the
// x-auth-request-* headers because gatehouse strips client-sent copies; it never sees a token.
//
//   node role-app/server.mjs --port 8082
//
// GET /payments/approve → 200 if the user holds the realm role `backendaccess`, else 403.
// GET /whoami           → who gatehouse says the user is.

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '8082' } } });

const server = createServer((req, res) => {
  const user = req.headers['x-auth-request-preferred-username'];
  const roles = (req.headers['x-auth-request-roles'] ?? '').split(',').filter(Boolean);
  const send = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/whoami') return send(200, { user, email: req.headers['x-auth-request-email'] ?? null, roles });
  if (path === '/payments/approve') {
    return roles.includes('backendaccess')
      ? send(200, { approved: true, by: user })
      : send(403, { approved: false, reason: 'the backendaccess role is required to approve payments' });
  }
  return send(404, { error: 'not found' });
});
server.listen(Number(values.port), '127.0.0.1', () => console.log(`role-app listening on http://127.0.0.1:${values.port}`));
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => server.close(() => process.exit(0)));
