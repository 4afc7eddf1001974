// In-memory storage adapter for oidc-provider (sessions, grants, codes, refresh tokens...).
//
// oidc-provider's bundled MemoryAdapter is an LRU capped at 1000 entries that logs a "development
// only" warning; this one keeps every entry until it expires (entries carry their TTL from
// oidc-provider; a periodic sweep drops expired ones, so memory stays bounded by what is live).
// State is lost on restart, exactly like a Keycloak started without a database would lose it.

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

/**
 * @param {object} [options]
 * @param {number} [options.sweepIntervalMs] how often expired entries are dropped
 * @param {number} [options.maxEntries] hard cap; upsert beyond it throws (a bug or a runaway test)
 * @returns {{Adapter: Function, close: Function, size: Function}}
 */
export function createMemoryStore({ sweepIntervalMs = 30_000, maxEntries = 200_000 } = {}) {
  /** key "<Model>:<id>" -> {payload, expiresAt (ms, or Infinity)} */
  const entries = new Map();
  /** session uid -> session id */
  const sessionUids = new Map();
  /** user code -> id */
  const userCodes = new Map();
  /** grantId -> Set of keys */
  const grants = new Map();

  const now = () => Date.now();
  const live = (entry) => entry && entry.expiresAt > now();

  function unindex(key, payload) {
    if (!payload) return;
    if (payload.uid && sessionUids.get(payload.uid) === key) sessionUids.delete(payload.uid);
    if (payload.userCode && userCodes.get(payload.userCode) === key) userCodes.delete(payload.userCode);
    if (payload.grantId) {
      const members = grants.get(payload.grantId);
      if (members) {
        members.delete(key);
        if (members.size === 0) grants.delete(payload.grantId);
      }
    }
  }

  function remove(key) {
    const entry = entries.get(key);
    entries.delete(key);
    if (entry) unindex(key, entry.payload);
  }

  function sweep() {
    const t = now();
    for (const [key, entry] of entries) {
      if (entry.expiresAt <= t) remove(key);
    }
  }

  const timer = setInterval(sweep, sweepIntervalMs);
  timer.unref();

  class Adapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      if (!entries.has(key) && entries.size >= maxEntries) {
        sweep();
        if (entries.size >= maxEntries) {
          throw new Error(`IdP storage is full (${maxEntries} entries): a test is leaking state`);
        }
      }
      remove(key);
      const expiresAt = typeof expiresIn === 'number' ? now() + expiresIn * 1000 : Infinity;
      const stored = structuredClone(payload);
      entries.set(key, { payload: stored, expiresAt });
      if (this.model === 'Session' && stored.uid) sessionUids.set(stored.uid, key);
      if (stored.userCode) userCodes.set(stored.userCode, key);
      if (GRANTABLE.has(this.model) && stored.grantId) {
        if (!grants.has(stored.grantId)) grants.set(stored.grantId, new Set());
        grants.get(stored.grantId).add(key);
      }
    }

    async find(id) {
      const entry = entries.get(this.key(id));
      if (!live(entry)) return undefined;
      return structuredClone(entry.payload);
    }

    async findByUid(uid) {
      const key = sessionUids.get(uid);
      const entry = key && entries.get(key);
      return live(entry) ? structuredClone(entry.payload) : undefined;
    }

    async findByUserCode(userCode) {
      const key = userCodes.get(userCode);
      const entry = key && entries.get(key);
      return live(entry) ? structuredClone(entry.payload) : undefined;
    }

    async consume(id) {
      const entry = entries.get(this.key(id));
      if (entry) entry.payload.consumed = Math.floor(now() / 1000);
    }

    async destroy(id) {
      remove(this.key(id));
    }

    async revokeByGrantId(grantId) {
      const members = grants.get(grantId);
      if (!members) return;
      const prefix = `${this.model}:`;
      for (const key of [...members]) {
        if (key.startsWith(prefix)) remove(key);
      }
    }
  }

  return {
    Adapter,
    size: () => entries.size,
    close: () => clearInterval(timer),
  };
}
