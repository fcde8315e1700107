/**
 * The gateway's cache of state reads: entries read through the state service
 * are replaced or dropped by the state bus's change events, and written
 * through by the gateway's own writes, so a client reads its own writes.
 *
 * How long an entry is served depends on whether the gateway can tell that
 * it sees every change event (`coherent`, gateway/state_coherence.ts): while
 * it can, an entry lives until a change replaces it, `coherentTtlMs` at most,
 * and every entry is dropped ({@link StateCache.flush}) as soon as it cannot;
 * otherwise `ttlMs` bounds how long a missed change goes unseen.
 *
 * A read answered after a change to its key was applied here may carry the
 * value from before it (a delete has no revision to compare): reads pass the
 * {@link StateCache.mark} taken before they were sent to `put`, which keeps
 * nothing that was invalidated (or flushed) since.
 *
 * In process by default. With a shared cache (`shared`, the Redis one of
 * gateway/shared/redis_state_cache.ts), {@link StateCache.lookupMany} reads from it
 * while it is available, so every replica serves what any replica read, and
 * every write and change event goes to both; while Redis is down the
 * in-process entries serve, with the same semantics as without Redis.
 *
 * Staleness is bounded: a change made by another writer shows once its event
 * arrives; if the event was lost (a bus drops messages for a subscriber that
 * falls behind), the next heartbeat shows the gap and the cache is flushed,
 * or, without coherence, the entry expires after `ttlMs`. With a shared cache
 * entries always live `ttlMs` at most: another replica's view is not known.
 *
 * @module
 */
import type { SharedStateCache } from "./shared/redis_state_cache.ts";
import type { StateEntry } from "../state/client.ts";

interface Cached {
  entry: StateEntry | null;
  /** Date.now() after which the entry is not used. */
  expires: number;
}

/** Invalidations remembered per key, beyond which the oldest raise the floor. */
const MAX_INVALIDATIONS = 10_000;

/** A committed change as the state service publishes it (docs/state.md). */
export interface StateChange {
  op: string;
  scope: string;
  key: string | null;
  value: string | null;
  revision: number | null;
  timestamp: string;
}

/** Options of {@link StateCache}. */
export interface StateCacheOptions {
  /** Longest time an entry is served without coherence. @default 2000 */
  ttlMs?: number;
  /** Longest time an entry cached with coherence is served. @default 60000 */
  coherentTtlMs?: number;
  /** Whether every change event reaches this cache now (absent: never known). */
  coherent?: () => boolean;
  /** Entries kept at most; the oldest go first. @default 100000 */
  maxEntries?: number;
  now?: () => number;
  /** A cache shared by gateway replicas (Redis), read first while available. */
  shared?: SharedStateCache;
}

/** Cached state entries by scope and key; `null` caches "no such key". */
export class StateCache {
  #entries = new Map<string, Cached>();
  #ttlMs: number;
  #coherentTtlMs: number;
  #coherent: () => boolean;
  #maxEntries: number;
  #now: () => number;
  #shared: SharedStateCache | undefined;
  /** Counts invalidations; a read's mark is its value when the read was sent. */
  #tick = 0;
  /** Tick of the last invalidation per key id and per scope, oldest first. */
  #invalidated = new Map<string, number>();
  /** Reads marked before this tick are not kept (a flush, or an invalidation forgotten). */
  #floor = 0;
  hits = 0;
  misses = 0;

  constructor(options: StateCacheOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 2000;
    this.#coherentTtlMs = options.coherentTtlMs ?? 60_000;
    // A shared entry may have missed a change another replica did not see.
    const coherent = options.shared ? undefined : options.coherent;
    this.#coherent = coherent ?? (() => false);
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#now = options.now ?? Date.now;
    this.#shared = options.shared;
  }

  /** To pass to {@link put} with what a read returns: taken before the read is sent. */
  mark(): number {
    return this.#tick;
  }

  /** Drops every entry (the view of changes has a hole) and every read in flight. */
  flush(): void {
    this.#entries.clear();
    this.#invalidated.clear();
    this.#floor = ++this.#tick;
  }

  /** Records that `id` (a key's, or a scope's prefix) changed now. */
  #invalidate(id: string): void {
    this.#invalidated.delete(id);
    this.#invalidated.set(id, ++this.#tick);
    if (this.#invalidated.size > MAX_INVALIDATIONS) {
      const [oldest, tick] = this.#invalidated.entries().next().value!;
      this.#invalidated.delete(oldest);
      this.#floor = tick;
    }
  }

  /** Whether a read marked `since` of `scope`'s `id` may still be kept. */
  #unchangedSince(since: number, scope: string, id: string): boolean {
    if (since < this.#floor) return false;
    const key = this.#invalidated.get(id);
    if (key !== undefined && key > since) return false;
    const whole = this.#invalidated.get(this.#scopeId(scope));
    return whole === undefined || whole <= since;
  }

  /**
   * The entries of `keys` (entry, null for a cached absence, undefined for a
   * miss): from the shared cache while it is available (a promise), else from
   * this process (at once).
   */
  lookupMany(
    scope: string,
    keys: string[],
  ): (StateEntry | null | undefined)[] | Promise<(StateEntry | null | undefined)[]> {
    const shared = this.#shared;
    if (!shared?.available) return keys.map((key) => this.get(scope, key));
    return shared.getMany(scope, keys).then((found) => {
      for (let i = 0; i < keys.length; i++) {
        const entry = found[i];
        if (entry === undefined) this.misses++;
        else {
          this.hits++;
          this.#putLocal(scope, keys[i]!, entry);
        }
      }
      return found;
    }, () => keys.map((key) => this.get(scope, key)));
  }

  /** {@link lookupMany} of one key. */
  lookup(
    scope: string,
    key: string,
  ): StateEntry | null | undefined | Promise<StateEntry | null | undefined> {
    if (!this.#shared?.available) return this.get(scope, key);
    const found = this.lookupMany(scope, [key]);
    return found instanceof Promise ? found.then((entries) => entries[0]) : found[0];
  }

  /** Runs `write` on the shared cache; its failure only costs cache hits. */
  #toShared(write: (shared: SharedStateCache) => Promise<void>): Promise<void> | void {
    const shared = this.#shared;
    if (shared?.available) return write(shared).catch(() => {});
  }

  #id(scope: string, key: string): string {
    return `${scope.length}:${scope}/${key}`;
  }

  #scopeId(scope: string): string {
    return `${scope.length}:${scope}/`;
  }

  /** The cached entry, `null` for a cached absence, undefined on a miss. */
  get(scope: string, key: string): StateEntry | null | undefined {
    const cached = this.#entries.get(this.#id(scope, key));
    if (!cached || cached.expires <= this.#now()) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    return cached.entry;
  }

  /**
   * Stores what a read returned, unless a newer revision is already known or,
   * with `since` (the read's {@link mark}), the key changed since the read was
   * sent; with a shared cache, the promise resolves once it has it too.
   */
  put(
    scope: string,
    key: string,
    entry: StateEntry | null,
    since?: number,
  ): Promise<void> | void {
    if (since !== undefined && !this.#unchangedSince(since, scope, this.#id(scope, key))) return;
    this.#putLocal(scope, key, entry);
    return this.#toShared((shared) => shared.put(scope, key, entry));
  }

  #putLocal(scope: string, key: string, entry: StateEntry | null): void {
    const id = this.#id(scope, key);
    const known = this.#entries.get(id);
    if (known?.entry && entry && known.entry.revision > entry.revision) return;
    const ttl = this.#coherent() ? this.#coherentTtlMs : this.#ttlMs;
    this.#entries.delete(id); // re-inserted last: Map order is age order
    this.#entries.set(id, { entry, expires: this.#now() + ttl });
    if (this.#entries.size > this.#maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  /** Forgets one key (after the gateway's own delete or a failed write). */
  forget(scope: string, key: string): Promise<void> | void {
    const id = this.#id(scope, key);
    this.#entries.delete(id);
    this.#invalidate(id);
    return this.#toShared((shared) => shared.forget(scope, key));
  }

  /** Forgets every key of a scope. */
  forgetScope(scope: string): Promise<void> | void {
    const prefix = this.#scopeId(scope);
    for (const id of [...this.#entries.keys()]) if (id.startsWith(prefix)) this.#entries.delete(id);
    this.#invalidate(prefix);
    return this.#toShared((shared) => shared.forgetScope(scope));
  }

  /** Applies a change event from the state bus. */
  apply(change: StateChange): Promise<void> | void {
    if (change.op === "delete-scope") return this.forgetScope(change.scope);
    if (change.key === null) return;
    if (change.op === "delete") return this.forget(change.scope, change.key);
    if (change.op === "set" && change.value !== null && change.revision !== null) {
      // Reads in flight may answer with the value from before this one.
      this.#invalidate(this.#id(change.scope, change.key));
      return this.put(change.scope, change.key, {
        value: change.value,
        revision: change.revision,
        updated_at: Date.parse(change.timestamp),
      });
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}
