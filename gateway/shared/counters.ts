/**
 * Rate-limit counters: fixed windows of `windowMs`, counted per key.
 *
 * - {@link memoryCounters}: this process only (the fallback).
 * - {@link redisCounters}: in Redis, shared by every gateway replica. The
 *   window is computed from the Redis server's clock (`TIME`, in a script),
 *   so replicas with skewed clocks still count into the same window. One
 *   hash per (key, window length) under `<prefix>rl:<windowMs>:<key>`
 *   holding the window start and its count, expiring when the window ends.
 *   Its calls reject when Redis fails.
 * - {@link sharedCounters}: Redis while the {@link RedisLink} is up, memory
 *   while it is down or a command fails. During an outage each replica
 *   counts on its own (a client spread over N replicas may get up to N times
 *   the limit); after it, counting continues from what Redis holds.
 *
 * Callers on a hot path try {@link RateCounters.hitNow} first: in-process
 * counts come back without a promise.
 *
 * @module
 */
import type { RedisLink } from "./redis.ts";

/** Hits of a key in its current window, and ms until the window resets. */
export interface RateHit {
  count: number;
  resetMs: number;
}

export interface RateCounters {
  /** Counts one hit for `key` in the current fixed window of `windowMs`; returns the hits in this window (including this one) and ms until the window resets. */
  hit(key: string, windowMs: number): Promise<RateHit>;
  /**
   * {@link hit} without a promise when the count lives in this process (the
   * hot path of every request); undefined when it needs a round trip, and
   * then nothing was counted: call {@link hit}.
   */
  hitNow?(key: string, windowMs: number): RateHit | undefined;
  close(): Promise<void>;
}

function checkWindow(windowMs: number): void {
  if (!Number.isFinite(windowMs) || windowMs < 1) {
    throw new RangeError(`windowMs must be >= 1, got ${windowMs}`);
  }
}

/** Counters in this process; `now` is for tests. */
export function memoryCounters(now: () => number = Date.now): RateCounters {
  // Per window length, then per key: no key string is built per hit (hashing a
  // new string was a measurable share of a cached read).
  const windows = new Map<number, Map<string, { start: number; end: number; count: number }>>();
  let size = 0;
  let nextSweep = 0;
  const hitNow = (key: string, windowMs: number): RateHit => {
    checkWindow(windowMs);
    windowMs = Math.floor(windowMs);
    const t = now();
    if (size > 10_000 && t >= nextSweep) {
      size = 0;
      for (const byKey of windows.values()) {
        for (const [id, w] of byKey) if (w.end <= t) byKey.delete(id);
        size += byKey.size;
      }
      nextSweep = t + 1000;
    }
    const start = t - (t % windowMs);
    let byKey = windows.get(windowMs);
    if (!byKey) windows.set(windowMs, byKey = new Map());
    let w = byKey.get(key);
    if (!w) {
      w = { start, end: start + windowMs, count: 0 };
      byKey.set(key, w);
      size++;
    } else if (w.start !== start) {
      w.start = start;
      w.end = start + windowMs;
      w.count = 0;
    }
    w.count++;
    return { count: w.count, resetMs: w.end - t };
  };
  return {
    hitNow,
    hit(key, windowMs) {
      try {
        return Promise.resolve(hitNow(key, windowMs));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    close() {
      windows.clear();
      size = 0;
      return Promise.resolve();
    },
  };
}

/** KEYS[1] = counter hash, ARGV[1] = window ms. Returns {count, ms until reset}. */
const HIT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local start = now - (now % w)
local c
if redis.call('HGET', KEYS[1], 's') == tostring(start) then
  c = redis.call('HINCRBY', KEYS[1], 'c', 1)
else
  redis.call('HSET', KEYS[1], 's', tostring(start), 'c', 1)
  c = 1
end
local reset = start + w - now
redis.call('PEXPIRE', KEYS[1], reset)
return {c, reset}
`;

/** Counters in Redis only: rejects when Redis fails (see {@link sharedCounters}). */
export function redisCounters(link: RedisLink): RateCounters {
  return {
    async hit(key, windowMs) {
      checkWindow(windowMs);
      windowMs = Math.floor(windowMs);
      const [count, resetMs] = await link.redis.eval(
        HIT_SCRIPT,
        1,
        link.key("rl", String(windowMs), key),
        String(windowMs),
      ) as [number, number];
      return { count, resetMs };
    },
    close: () => Promise.resolve(),
  };
}

/** Redis counters shared by replicas, falling back to this process's while Redis is down. */
export function sharedCounters(link: RedisLink): RateCounters {
  const shared = redisCounters(link);
  const local = memoryCounters();
  return {
    // While Redis is down this process counts alone, at once (what hit() would do).
    hitNow: (key, windowMs) => link.up ? undefined : local.hitNow!(key, windowMs),
    async hit(key, windowMs) {
      checkWindow(windowMs);
      return await link.attempt(() => shared.hit(key, windowMs), () => local.hit(key, windowMs));
    },
    close: () => local.close(),
  };
}

/** {@link sharedCounters} when a link is given, else {@link memoryCounters}. */
export function createCounters(link?: RedisLink): RateCounters {
  return link ? sharedCounters(link) : memoryCounters();
}
