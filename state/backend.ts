/**
 * What the state operations need of a store: the embedded libSQL store
 * (store.ts, reads from its in-memory mirror, answered at once) and the
 * PostgreSQL store shared by several workers (store_pg.ts, reads from the
 * database) both provide it.
 *
 * @module
 */
import type { KeyedOutcome, KeyedWrite } from "./idempotency.ts";
import type { Entry, HistoryEntry, Write, WriteResult } from "./store.ts";

/** A value now, or once the database answered. */
export type Awaitable<T> = T | Promise<T>;

/** The state store behind `org.plantd.State`. */
export interface StateBackend {
  /** Scope names, sorted (JavaScript's string order). */
  scopes(): Awaitable<string[]>;
  /** Key names of a scope, sorted, or undefined when the scope does not exist. */
  keys(scope: string): Awaitable<string[] | undefined>;
  get(scope: string, key: string): Awaitable<Entry | undefined>;
  /**
   * The entries of `keys` in their order (undefined: no such key), read at one
   * point in time; undefined when the scope does not exist.
   */
  getMany(scope: string, keys: readonly string[]): Awaitable<(Entry | undefined)[] | undefined>;
  /** Resolves once the write is committed. */
  write(write: Write): Promise<WriteResult>;
  /**
   * A write guarded by an idempotency key (idempotency.ts): applied and its
   * key stored in one transaction, or answered with the key's stored reply.
   */
  writeKeyed(write: Write, keyed: KeyedWrite): Promise<KeyedOutcome>;
  /**
   * A key's history (docs/state.md#key-history), newest first: at most
   * `limit` rows, with ids below `before` when given (the next page).
   */
  history(scope: string, key: string, limit: number, before?: number): Promise<HistoryEntry[]>;
  /** Deletes a key's history; resolves with how many rows went. */
  deleteHistory(scope: string, key: string): Promise<number>;
  /** Deletes at most `limit` expired idempotency keys; resolves with how many went. */
  purgeExpiredKeys(limit: number): Promise<number>;
  /** Checks that the database answers (for /healthz). */
  ping(): Promise<void>;
  /** Resolves when no write is queued or committing. */
  drain(): Promise<void>;
  /** Waits for queued writes, then closes the database. */
  close(): Promise<void>;
}
