// make bench: the stack gatehouse replaces (seeds 002 and 000), measured in the same run as
// gatehouse — oauth2-proxy v7.15.6 behind Envoy's ext_authz as istiod renders it
// (lib/oauth2proxy.mjs), with cookie sessions and with Redis sessions, each with one Envoy worker
// as gatehouse's Envoy has, answering 200 itself (`direct_response`) or routing to the echo service.

import { browse, CookieJar, http, stopProcess } from '../lib/harness.mjs';
import { rssKiB } from '../lib/processes.mjs';
import { faults } from '../lib/faultproxy.mjs';
import { startExtAuthzEnvoy, startOauth2ProxyStack, startRedis } from '../lib/oauth2proxy.mjs';
import { directResponse, withoutAccessLog } from './envoy-configs.mjs';

/** alice's sign-in through a gateway: the Cookie header her browser then sends. */
async function signIn(url) {
  const jar = new CookieJar();
  const r = await browse(`${url}/app`, { jar, username: 'alice', password: 'alice' });
  if (r.response?.status !== 200) throw new Error(`sign-in through ${url} ended with ${r.response?.status} at ${r.url}`);
  return jar.header(`${url}/app`);
}

/**
 * Starts both stacks (`idpPort`: where their calls to Keycloak go) and signs alice in on each. Returns their benchmark cases and what the report needs.
 */
export async function startSeedStacks({
  kc, idpPort, echoPort, realEchoPort,
}) {
  const redis = await startRedis();
  // idpPort: oauth2-proxy's own calls to Keycloak take the same way as gatehouse's (the proxy).
  const common = {
    kc, idpPort, echoPort, concurrency: 1, logLevel: 'warn',
  };
  const cookie = await startOauth2ProxyStack({ ...common, customize: directResponse() });
  const redisStack = await startOauth2ProxyStack({ ...common, redis, customize: directResponse() });
  const behindEcho = (stack) => startExtAuthzEnvoy({
    kc, proxyPort: stack.proxy.port, echoPort: realEchoPort, concurrency: 1, logLevel: 'warn', customize: withoutAccessLog,
  });
  const cookieEcho = await behindEcho(cookie);
  const redisEcho = await behindEcho(redisStack);
  const cookieHeader = await signIn(cookie.url);
  const redisHeader = await signIn(redisStack.url);
  return {
    redis,
    cookie,
    redisStack,
    cookieHeader,
    redisHeader,
    cases: [
      { id: 'o-cookie', name: 'oauth2-proxy behind ext_authz, cookie session (seed 002)', url: `${cookie.url}/x`, headers: { cookie: cookieHeader } },
      { id: 'o-redis', name: 'oauth2-proxy behind ext_authz, Redis session (seed 000)', url: `${redisStack.url}/x`, headers: { cookie: redisHeader } },
    ],
    echoCases: [
      { id: 'o-cookie-echo', name: 'oauth2-proxy, cookie session, echo upstream', url: `${cookieEcho.url}/x`, headers: { cookie: cookieHeader } },
      { id: 'o-redis-echo', name: 'oauth2-proxy, Redis session, echo upstream', url: `${redisEcho.url}/x`, headers: { cookie: redisHeader } },
    ],
    /** Resident memory, KiB, of every process each stack needs (its direct_response Envoy). */
    memory: () => ({
      cookieEnvoy: rssKiB(cookie.envoy.pid),
      cookieProxy: rssKiB(cookie.proxy.pid),
      redisEnvoy: rssKiB(redisStack.envoy.pid),
      redisProxy: rssKiB(redisStack.proxy.pid),
      redis: rssKiB(redis.pid),
    }),
  };
}

/**
 * What a signed-in user's request gets when a piece is down, taken last (it stops processes):
 * gatehouse with Keycloak unreachable (the fault proxy drops every call), oauth2-proxy stopped,
 * Redis stopped. Rows: [stack, what is down, status, what the user sees].
 */
export async function downBehaviour({
  seeds, ghUrl, ghCookie, idpProxy,
}) {
  const rows = [];
  const describe = (r) => (r.status === 200 ? 'the page' : `${r.status}${r.body ? '' : ', empty body'}`);
  idpProxy.set('down', /./, faults.reset());
  try {
    const r = await http(`${ghUrl}/x`, { headers: { cookie: ghCookie } });
    rows.push(['gatehouse', 'Keycloak unreachable', r.status, `${describe(r)}: sessions and cached-key tokens keep working; new sign-ins get the 503 page`]);
  } finally {
    idpProxy.clear('down');
  }
  await stopProcess(seeds.redis.pid);
  const r1 = await http(`${seeds.redisStack.url}/x`, { headers: { cookie: seeds.redisHeader } });
  rows.push(['oauth2-proxy, Redis sessions', 'Redis', r1.status, `${r1.status === 302 ? 'sent to Keycloak' : describe(r1)}: every signed-in user is treated as signed out`]);
  await stopProcess(seeds.cookie.proxy.pid);
  const r2 = await http(`${seeds.cookie.url}/x`, { headers: { cookie: seeds.cookieHeader } });
  rows.push(['oauth2-proxy, cookie sessions', 'oauth2-proxy', r2.status, `${describe(r2)}: every request it checks is refused (ext_authz's statusOnError)`]);
  return rows;
}
