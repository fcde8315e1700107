/**
 * The Redis side of the gateway's state read cache (gateway/state_read_cache.ts):
 * state entries read through any gateway replica, shared by all of them.
 *
 * One hash per scope, `<prefix>state-cache:<scope>`, field = key, value =
 * `<expires ms>|<revision, -1 for "no such key">|<entry JSON or null>`.
 * Expiry is per entry (`ttlMs` after it was written, Redis's clock) and the
 * hash itself expires `ttlMs` after its last write. A write keeps an entry
 * whose live revision is newer (like the in-process cache), so a late read
 * or change event cannot bring an older value back. Every replica applies
 * the state bus's change events (idempotent); the gateway's own writes are
 * written through before the write is answered, so a client reads its own
 * writes through any replica.
 *
 * Staleness is bounded by `ttlMs`, as in process: a change event missed
 * (bus drop, Redis outage) leaves an entry stale until it expires.
 *
 * @module
 */
import type { StateEntry } from "../../state/client.ts";
import type { RedisLink } from "./redis.ts";

/** What {@link StateCache} (gateway/state_read_cache.ts) needs from a shared cache. */
export interface SharedStateCache {
  /** Whether reads should go to it now (else the in-process cache serves). */
  readonly available: boolean;
  /** The entries of `keys`: an entry, null (cached absence) or undefined (miss). Rejects when it fails. */
  getMany(scope: string, keys: string[]): Promise<(StateEntry | null | undefined)[]>;
  put(scope: string, key: string, entry: StateEntry | null): Promise<void>;
  forget(scope: string, key: string): Promise<void>;
  forgetScope(scope: string): Promise<void>;
}

/** KEYS[1] scope hash; ARGV: key, revision (-1: absent), JSON, ttl ms. */
const PUT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local revision = tonumber(ARGV[2])
local ttl = tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and revision >= 0 then
  local expires, known = string.match(old, '^(%d+)|(%-?%d+)|')
  if expires and tonumber(expires) > now and tonumber(known) > revision then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], (now + ttl) .. '|' .. ARGV[2] .. '|' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`;

/** KEYS[1] scope hash; ARGV: keys. Returns the JSON of each live entry, '' for a miss. */
const GET_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local values = redis.call('HMGET', KEYS[1], unpack(ARGV))
local out = {}
for i = 1, #ARGV do
  local v = values[i]
  out[i] = ''
  if v then
    local expires, json = string.match(v, '^(%d+)|%-?%d+|(.*)$')
    if expires and tonumber(expires) > now then out[i] = json
    else redis.call('HDEL', KEYS[1], ARGV[i]) end
  end
end
return out
`;

/** Keys per script call (Lua's unpack has a stack limit). */
const CHUNK = 500;

/** The shared state cache in Redis, entries kept for `ttlMs`. */
export function redisStateCache(link: RedisLink, ttlMs: number): SharedStateCache {
  const hash = (scope: string) => link.key("state-cache", scope);
  return {
    get available() {
      return link.up;
    },
    async getMany(scope, keys) {
      const out: (StateEntry | null | undefined)[] = [];
      for (let i = 0; i < keys.length; i += CHUNK) {
        const chunk = keys.slice(i, i + CHUNK);
        const values = await link.redis.eval(GET_SCRIPT, 1, hash(scope), ...chunk) as string[];
        for (const value of values) {
          if (!value) out.push(undefined);
          else {
            try {
              out.push(JSON.parse(value) as StateEntry | null);
            } catch {
              out.push(undefined);
            }
          }
        }
      }
      return out;
    },
    async put(scope, key, entry) {
      await link.redis.eval(
        PUT_SCRIPT,
        1,
        hash(scope),
        key,
        String(entry ? entry.revision : -1),
        JSON.stringify(entry),
        String(ttlMs),
      );
    },
    async forget(scope, key) {
      await link.redis.hdel(hash(scope), key);
    },
    async forgetScope(scope) {
      await link.redis.del(hash(scope));
    },
  };
}
