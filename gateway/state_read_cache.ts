/**
 * The gateway's cache of state reads: entries read through the state service
 * are kept for at most `ttlMs`, replaced or dropped by the state bus's change
 * events, and written through by the gateway's own writes, so a client reads
 * its own writes.
 *
 * In process by default. With a shared cache (`shared`, the Redis one of
 * gateway/shared/redis_state_cache.ts), {@link StateCache.lookupMany} reads from it
 * while it is available, so every replica serves what any replica read, and
 * every write and change event goes to both; while Redis is down the
 * in-process entries serve, with the same semantics as without Redis.
 *
 * Staleness is bounded: a change made by another writer shows once its event
 * arrives, and after `ttlMs` at the latest if the event was lost (a bus drops
 * messages for a subscriber that falls behind).
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
  /** Longest time an entry is served. @default 2000 */
  ttlMs?: number;
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
  #maxEntries: number;
  #now: () => number;
  #shared: SharedStateCache | undefined;
  hits = 0;
  misses = 0;

  constructor(options: StateCacheOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 2000;
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#now = options.now ?? Date.now;
    this.#shared = options.shared;
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

  /** Runs `write` on the shared cache; its failure only costs cache hits. */
  #toShared(write: (shared: SharedStateCache) => Promise<void>): Promise<void> | void {
    const shared = this.#shared;
    if (shared?.available) return write(shared).catch(() => {});
  }

  #id(scope: string, key: string): string {
    return `${scope.length}:${scope}/${key}`;
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
   * Stores what a read returned, unless a newer revision is already known;
   * with a shared cache, the promise resolves once it has it too.
   */
  put(scope: string, key: string, entry: StateEntry | null): Promise<void> | void {
    this.#putLocal(scope, key, entry);
    return this.#toShared((shared) => shared.put(scope, key, entry));
  }

  #putLocal(scope: string, key: string, entry: StateEntry | null): void {
    const id = this.#id(scope, key);
    const known = this.#entries.get(id);
    if (known?.entry && entry && known.entry.revision > entry.revision) return;
    this.#entries.delete(id); // re-inserted last: Map order is age order
    this.#entries.set(id, { entry, expires: this.#now() + this.#ttlMs });
    if (this.#entries.size > this.#maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  /** Forgets one key (after the gateway's own delete or a failed write). */
  forget(scope: string, key: string): Promise<void> | void {
    this.#entries.delete(this.#id(scope, key));
    return this.#toShared((shared) => shared.forget(scope, key));
  }

  /** Forgets every key of a scope. */
  forgetScope(scope: string): Promise<void> | void {
    const prefix = `${scope.length}:${scope}/`;
    for (const id of [...this.#entries.keys()]) if (id.startsWith(prefix)) this.#entries.delete(id);
    return this.#toShared((shared) => shared.forgetScope(scope));
  }

  /** Applies a change event from the state bus. */
  apply(change: StateChange): Promise<void> | void {
    if (change.op === "delete-scope") return this.forgetScope(change.scope);
    if (change.key === null) return;
    if (change.op === "delete") return this.forget(change.scope, change.key);
    if (change.op === "set" && change.value !== null && change.revision !== null) {
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
