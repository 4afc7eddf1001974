// make bench: the bootstrap edits every benchmarked Envoy shares (lib/envoy.mjs `customize`).

/** Route everything to a direct 200 and drop the access log (identical for every variant). */
export function directResponse(extraFilters = []) {
  return (b) => {
    withoutAccessLog(b);
    const hcm = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    hcm.route_config.virtual_hosts[0].routes = [{
      match: { prefix: '/' },
      direct_response: { status: 200, body: { inline_string: 'ok\n' } },
    }];
    hcm.http_filters.splice(hcm.http_filters.length - 1, 0, ...extraFilters);
    return b;
  };
}

/** No access log (as every benchmarked Envoy), routes left as they are. */
export function withoutAccessLog(b) {
  delete b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log;
  return b;
}
