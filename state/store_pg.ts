/**
 * The scoped key/value store on PostgreSQL, shared by any number of state
 * workers: no copy in memory, every read asks the database, and every write
 * is decided inside a transaction against the database's current state.
 *
 * Writes are grouped as in the libSQL store (store.ts): while a transaction
 * runs, writes queue up, and the next transaction takes the whole queue. A
 * group's transaction:
 *
 * 1. takes a transaction-level advisory lock per scope it touches, in one
 *    order, so groups of any worker touching a scope run one after another;
 * 2. reads the touched scopes and keys (each statement of READ COMMITTED
 *    sees every transaction committed before it, so all that the lock's
 *    previous holders wrote);
 * 3. computes each write's result on that state with the libSQL store's
 *    {@link Overlay}: compare-and-set, revisions, change events;
 * 4. writes the net effect with statements that check the state they were
 *    computed from (`WHERE revision = <read>`, `ON CONFLICT DO NOTHING`, row
 *    counts), so a write that did not hold the lock could not slip in between
 *    unnoticed: a mismatch rolls the group back and it is computed again;
 * 5. takes each scope's next change sequence numbers from `state_change_seq`,
 *    so events of a scope are numbered in commit order across workers;
 * 6. commits, then answers the writers and publishes the changes.
 *
 * A deadlock or serialization failure (40P01, 40001) or a mismatch in step 4
 * retries the group a bounded number of times. A group refused for one
 * write's data (class 22, 23, 54 after the retries) is split and each write
 * committed alone, so the others are not failed with it. A connection lost
 * after COMMIT was sent leaves the outcome unknown: the writers are told so
 * ({@link CommitOutcomeUnknown}); lost before, the transaction was rolled
 * back by the server.
 *
 * Idempotency keys (idempotency.ts) share the transaction: looked up with the
 * reads of step 2 (under the scope locks), a known key's stored reply answers
 * its write instead of step 3, and new keys are inserted with the writes of
 * step 4 (an unexpired key found there sends the group round again), so a
 * retried write and its first try cannot both apply, whichever worker each
 * reaches.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import { and, eq, inArray, sql } from "drizzle-orm";
import { DrizzleQueryError } from "drizzle-orm/errors";
import postgres from "postgres";
import { storageFailure } from "../storage/failure.ts";
import type { StateBackend } from "./backend.ts";
import { CommitOutcomeUnknown } from "./commit_outcome.ts";
import { type CallUse, useOf } from "../auth/call_credentials.ts";
import { type KeyedOutcome, type KeyedWrite, keyId, type StoredKey } from "./idempotency.ts";
import { type PgReads, type PgStateConnections, STATE_LOCK_CLASS } from "./db_pg.ts";
import { stateEntries, stateScopes } from "./schema_pg.ts";
import {
  type Change,
  DEFAULT_HISTORY_PER_KEY,
  type Entry,
  type HistoryEntry,
  historyKeys,
  type Mirror,
  Overlay,
  type StoreOptions,
  type Write,
  type WriteResult,
} from "./store.ts";

/** Options of {@link PgStateStore}. */
export interface PgStoreOptions extends StoreOptions {
  /** Tries of a group's transaction at most, when it has to be retried. @default 8 */
  maxAttempts?: number;
  /** Called when a group is retried, with the error that caused it. */
  onRetry?: (error: unknown, attempt: number) => void;
  /** Called when a ping succeeded: the database is reachable. */
  onReachable?: () => void;
  /** Longest wait for a ping's answer. @default 2000 */
  pingTimeoutMs?: number;
}

/** A write as queued: `keyed` when it carries an idempotency key. */
interface Pending {
  write: Write;
  keyed?: KeyedWrite;
}

interface Queued extends Pending {
  // deno-lint-ignore no-explicit-any -- a WriteResult, or a KeyedOutcome for a keyed write
  resolve: (result: any) => void;
  reject: (error: unknown) => void;
}

interface Outcome {
  results: Array<WriteResult | KeyedOutcome>;
  changes: Change[];
  wrote: boolean;
}

/** What the database held, as read by a group that changed it meanwhile: compute again. */
class ConcurrentChange extends Error {
  /** A serialization failure's SQLSTATE: STORAGE_BUSY once the retries ran out. */
  readonly code = "40001";
  constructor(what: string) {
    super(`concurrent change: ${what}`);
    this.name = "ConcurrentChange";
  }
}

// ignoreBOM: a value that starts with U+FEFF keeps it.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const encoder = new TextEncoder();

const bytes = (text: string): Uint8Array => encoder.encode(text);
const text = (value: Uint8Array): string => utf8.decode(value);
/** Names and values travel in arrays as hex text (`decode(x, 'hex')` in SQL). */
const hex = (text: string): string => Buffer.from(text, "utf8").toString("hex");

/**
 * The second key of a scope's advisory lock: 32 bits of its SHA-256, never
 * the migration lock's 0. Two scopes on one key only wait for each other.
 */
export function scopeLockKey(scope: string): number {
  const key = createHash("sha256").update(scope).digest().readInt32BE(0);
  return key === 0 ? 1 : key;
}

/** SQLSTATEs after which the group is computed again. */
const RETRIED = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "23505", // unique_violation: a row another transaction inserted meanwhile
  "23503", // foreign_key_violation: a scope another transaction deleted meanwhile
]);

function sqlState(error: unknown): string | undefined {
  return error instanceof postgres.PostgresError ? error.code : undefined;
}

function retried(error: unknown): boolean {
  return error instanceof ConcurrentChange || RETRIED.has(sqlState(error) ?? "");
}

/** Refused for its data (not for the database's state): one write of the group is at fault. */
function dataError(error: unknown): boolean {
  const code = sqlState(error) ?? "";
  return code.startsWith("22") || code.startsWith("23") || code.startsWith("54");
}

/**
 * The connection is gone: postgres.js's own connection errors and the OS's,
 * or the server ending the session (a FATAL error, such as 57P01 after
 * pg_terminate_backend or a shutdown). A statement's error leaves it usable.
 */
function connectionLost(error: unknown): boolean {
  if (error instanceof postgres.PostgresError) {
    return error.severity === "FATAL" || error.severity === "PANIC";
  }
  return storageFailure(error) === "STORAGE_UNAVAILABLE";
}

/**
 * Waits for pipelined statements; throws the error of the first that failed
 * in the order they were sent (the later ones then fail only because the
 * transaction is aborted, 25P02).
 */
async function firstFailure(statements: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(statements);
  const failed = settled.find((result) => result.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** The reads as Drizzle prepared statements (named, prepared once per connection). */
function prepareReads(reads: PgReads) {
  const db = reads.db;
  const scope = sql.placeholder("scope");
  return {
    reads,
    getOne: db.select({
      value: stateEntries.value,
      revision: stateEntries.revision,
      updatedAt: stateEntries.updatedAt,
    }).from(stateEntries)
      .where(and(eq(stateEntries.scope, scope), eq(stateEntries.key, sql.placeholder("key"))))
      .prepare("state_get"),
    // One statement, so one point in time: a row per found key, or a row of
    // nulls for a scope without them; no row when the scope does not exist.
    getMany: db.select({
      key: stateEntries.key,
      value: stateEntries.value,
      revision: stateEntries.revision,
      updatedAt: stateEntries.updatedAt,
    }).from(stateScopes).leftJoin(
      stateEntries,
      and(
        eq(stateEntries.scope, stateScopes.name),
        inArray(
          stateEntries.key,
          sql`(select decode(h, 'hex') from unnest(${sql.placeholder("keys")}::text[]) h)`,
        ),
      ),
    ).where(eq(stateScopes.name, scope)).prepare("state_get_many"),
    keys: db.select({ key: stateEntries.key }).from(stateScopes)
      .leftJoin(stateEntries, eq(stateEntries.scope, stateScopes.name))
      .where(eq(stateScopes.name, scope)).prepare("state_keys"),
    scopes: db.select({ name: stateScopes.name }).from(stateScopes).prepare("state_scopes"),
  };
}

/** The state store on PostgreSQL. Reads and writes resolve once the database answered. */
export class PgStateStore implements StateBackend {
  #open: PgStateConnections;
  #queue: Queued[] = [];
  #committing = false;
  #idle: Array<() => void> = [];
  #maxGroup: number;
  #maxAttempts: number;
  #pingTimeoutMs: number;
  #onChanges: (changes: Change[]) => void;
  #onCommit: (writes: number, seconds: number, wrote: boolean) => void;
  #onCommitError: (error: unknown, writes: number) => void;
  #onRetry: (error: unknown, attempt: number) => void;
  #onReachable: () => void;
  #windowMs: number;
  #historyPerKey: number;
  #now: () => number;

  /** The reads' prepared statements, for the reads client they were made on. */
  #prepared: ReturnType<typeof prepareReads> | undefined;

  constructor(open: PgStateConnections, options: PgStoreOptions = {}) {
    this.#open = open;
    this.#maxGroup = options.maxGroup ?? 4096;
    this.#maxAttempts = options.maxAttempts ?? 8;
    this.#pingTimeoutMs = options.pingTimeoutMs ?? 2000;
    this.#onChanges = options.onChanges ?? (() => {});
    this.#onCommit = options.onCommit ?? (() => {});
    this.#onCommitError = options.onCommitError ?? (() => {});
    this.#onRetry = options.onRetry ?? (() => {});
    this.#onReachable = options.onReachable ?? (() => {});
    this.#windowMs = options.idempotencyWindowMs ?? 86_400_000;
    this.#historyPerKey = options.historyPerKey ?? DEFAULT_HISTORY_PER_KEY;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Runs a read on the current reads client; a lost connection renews the
   * client ({@link PgStateConnections.renew}) and fails this read.
   */
  async #read<T>(run: (queries: ReturnType<typeof prepareReads>) => Promise<T>): Promise<T> {
    const reads = this.#open.reads;
    if (this.#prepared?.reads !== reads) this.#prepared = prepareReads(reads);
    try {
      return await run(this.#prepared);
    } catch (error) {
      if (connectionLost(error)) this.#open.renew(reads.sql);
      // The driver's error, not Drizzle's wrapper (whose message is the statement's text).
      throw error instanceof DrizzleQueryError && error.cause ? error.cause : error;
    }
  }

  scopes(): Promise<string[]> {
    // Sorted here, in JavaScript's order as the libSQL store does, not by a collation.
    return this.#read(async (q) => (await q.scopes.execute()).map((row) => text(row.name)).sort());
  }

  keys(scope: string): Promise<string[] | undefined> {
    return this.#read(async (q) => {
      const rows = await q.keys.execute({ scope: bytes(scope) });
      if (rows.length === 0) return undefined;
      return rows.flatMap((row) => row.key === null ? [] : [text(row.key)]).sort();
    });
  }

  get(scope: string, key: string): Promise<Entry | undefined> {
    return this.#read(async (q) => {
      const [row] = await q.getOne.execute({ scope: bytes(scope), key: bytes(key) });
      return row
        ? { value: text(row.value), revision: row.revision, updatedAt: row.updatedAt }
        : undefined;
    });
  }

  getMany(scope: string, keys: readonly string[]): Promise<(Entry | undefined)[] | undefined> {
    return this.#read(async (q) => {
      const rows = await q.getMany.execute({ scope: bytes(scope), keys: keys.map(hex) });
      if (rows.length === 0) return undefined;
      const found = new Map<string, Entry>();
      for (const row of rows) {
        if (row.key === null || row.value === null) continue;
        found.set(text(row.key), {
          value: text(row.value),
          revision: row.revision!,
          updatedAt: row.updatedAt!,
        });
      }
      return keys.map((key) => found.get(key));
    });
  }

  /** Queues a write; resolves once it is committed. */
  write(write: Write): Promise<WriteResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, resolve, reject });
      this.#kick();
    });
  }

  #kick(): void {
    if (!this.#committing) {
      this.#committing = true;
      // Let writes that arrive in the same turn join the first group.
      queueMicrotask(() => this.#commitLoop());
    }
  }

  /**
   * Queues a write guarded by an idempotency key: applied and its key stored
   * in one transaction, or answered with the reply of the key's first use
   * (`replayed`), or `reused` when that use was another request, whichever
   * worker had it (store.ts's writeKeyed, across workers).
   */
  writeKeyed(write: Write, keyed: KeyedWrite): Promise<KeyedOutcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, keyed, resolve, reject });
      this.#kick();
    });
  }

  /**
   * Deletes at most `limit` expired idempotency keys, after the expired call
   * credential ids. Every worker purges; rows another worker is deleting are
   * skipped, not waited for.
   */
  async purgeExpiredKeys(limit: number): Promise<number> {
    // Call credential ids first, all of them: they come with every write and read.
    while (await this.purgeExpiredCalls(limit) >= limit);
    return await this.#read(async () => {
      const result = await this.#open.reads.sql`delete from state_idempotency_keys where ctid in (
        select ctid from state_idempotency_keys where expires_at <= ${this.#now()}::int8
        order by expires_at limit ${limit} for update skip locked)`;
      return result.count;
    });
  }

  /** A key's history, newest first: at most `limit` rows, with ids below `before` if given. */
  history(scope: string, key: string, limit: number, before?: number): Promise<HistoryEntry[]> {
    return this.#read(async () => {
      const rows = await this.#open.reads.sql<
        {
          id: string;
          revision: string;
          op: string;
          old_value: Uint8Array | null;
          new_value: Uint8Array | null;
          actor: Uint8Array;
          at: string;
        }[]
      >`select id, revision, op, old_value, new_value, actor, at from state_key_history
        where scope = ${bytes(scope)} and key = ${bytes(key)}
          and id < ${before ?? Number.MAX_SAFE_INTEGER}::int8
        order by id desc limit ${limit}`;
      return rows.map((row) => ({
        id: Number(row.id),
        revision: Number(row.revision),
        op: row.op as HistoryEntry["op"],
        oldValue: row.old_value === null ? null : text(row.old_value),
        newValue: row.new_value === null ? null : text(row.new_value),
        actor: text(row.actor),
        at: Number(row.at),
      }));
    });
  }

  /** Deletes a key's history; resolves with how many rows went. */
  deleteHistory(scope: string, key: string): Promise<number> {
    return this.#read(async () => {
      const result = await this.#open.reads.sql`delete from state_key_history
        where scope = ${bytes(scope)} and key = ${bytes(key)}`;
      return result.count;
    });
  }

  /**
   * Records a call credential's id for every worker on this database
   * (auth/call_credentials.ts CallLedger): `first` when this insert made the
   * row, else what the row's delivery makes of this one. The insert and the
   * read are two statements: a row committed by another worker after the
   * insert's snapshot is seen by the read.
   */
  claimCallCredential(
    jti: string,
    delivery: string | undefined,
    expS: number,
  ): Promise<CallUse> {
    return this.#read(async () => {
      const sql = this.#open.reads.sql;
      const made = await sql`insert into state_call_credentials (jti, delivery, expires_at)
        values (${jti}, ${delivery ?? null}, ${expS}::int8) on conflict (jti) do nothing`;
      if (made.count === 1) return "first";
      const [row] = await sql<{ delivery: string | null }[]>`select delivery
        from state_call_credentials where jti = ${jti}`;
      return useOf(row?.delivery, delivery);
    });
  }

  /** Deletes at most `limit` call credential ids past their `exp`. */
  purgeExpiredCalls(limit: number): Promise<number> {
    return this.#read(async () => {
      const result = await this.#open.reads.sql`delete from state_call_credentials where ctid in (
        select ctid from state_call_credentials
        where expires_at < ${Math.floor(this.#now() / 1000)}::int8
        order by expires_at limit ${limit} for update skip locked)`;
      return result.count;
    });
  }

  /** Checks that the database answers within the ping timeout. */
  async ping(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            Object.assign(
              new Error(`the database did not answer within ${this.#pingTimeoutMs} ms`),
              { code: "ETIMEDOUT" },
            ),
          ),
        this.#pingTimeoutMs,
      );
    });
    const reads = this.#open.reads.sql;
    try {
      await Promise.race([reads`select 1`, timeout]);
    } catch (error) {
      // No answer at all may be a statement stuck on a lost connection: a new client.
      if (connectionLost(error)) this.#open.renew(reads);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    this.#onReachable();
  }

  drain(): Promise<void> {
    if (!this.#committing) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async close(): Promise<void> {
    await this.drain();
    await this.#open.close();
  }

  async #commitLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        await this.#commitGroup(this.#queue.splice(0, this.#maxGroup));
      }
    } finally {
      this.#committing = false;
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  async #commitGroup(group: Queued[]): Promise<void> {
    const started = performance.now();
    let outcome: Outcome;
    try {
      outcome = await this.#transact(group);
    } catch (error) {
      if (group.length > 1 && dataError(error)) {
        // One write's data was refused: commit each alone, so only that one fails.
        for (const q of group) await this.#commitGroup([q]);
        return;
      }
      this.#onCommitError(error, group.length);
      for (const q of group) q.reject(error);
      return;
    }
    this.#onCommit(group.length, (performance.now() - started) / 1000, outcome.wrote);
    group.forEach((q, i) => q.resolve(outcome.results[i]!));
    if (outcome.changes.length > 0) this.#onChanges(outcome.changes);
  }

  /** Runs the group's transaction, again after a retryable failure. */
  async #transact(writes: readonly Pending[]): Promise<Outcome> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#transaction(writes);
      } catch (error) {
        if (!retried(error) || attempt >= this.#maxAttempts) throw error;
        this.#onRetry(error, attempt);
        // Jittered, growing: two workers that collided should not collide again.
        await new Promise((resolve) =>
          setTimeout(resolve, Math.random() * Math.min(100, 2 ** attempt))
        );
      }
    }
  }

  /** One try of the group, on the commit connection ({@link PgStateConnections.commits}). */
  async #transaction(writes: readonly Pending[]): Promise<Outcome> {
    const tx = this.#open.commits;
    let committing = false;
    try {
      // Not awaited: BEGIN goes out in one round trip with the group's first statements.
      const begun = Promise.resolve(tx`begin`.execute());
      const outcome = await this.#group(tx, writes, begun);
      committing = true;
      await tx`commit`;
      return outcome;
    } catch (error) {
      if (connectionLost(error)) {
        // The server rolled the transaction back; the next group starts on a new client.
        this.#open.renew(tx);
        throw committing ? new CommitOutcomeUnknown(error) : error;
      }
      // The statement failed, the session did not: queued ahead of the next group's BEGIN.
      tx`rollback`.catch(() => {});
      throw error;
    }
  }

  /** Steps 1-5 of the module doc inside transaction `tx`. */
  async #group(
    tx: postgres.Sql,
    writes: readonly Pending[],
    begun: Promise<unknown>,
  ): Promise<Outcome> {
    const scopes = new Set<string>();
    const pairs = new Map<string, [string, string]>();
    const history = this.#historyPerKey > 0;
    // A deleted scope's keys each get a history row: all of them are read.
    const dropped = new Set<string>();
    for (const { write } of writes) {
      scopes.add(write.scope);
      if (write.kind === "delete-scope" && history) dropped.add(write.scope);
      if (write.kind === "set") {
        for (const [key] of write.entries) pairs.set(`${write.scope}\0${key}`, [write.scope, key]);
      } else if (write.kind === "delete") {
        pairs.set(`${write.scope}\0${write.key}`, [write.scope, write.key]);
      }
    }
    const locks = [...new Set([...scopes].map(scopeLockKey))].sort((a, b) => a - b);
    // Pipelined after BEGIN, run by the server one after the other: each read starts
    // (and takes its snapshot) only once the locks are held.
    const locked = Promise.resolve(
      tx`select pg_advisory_xact_lock(${STATE_LOCK_CLASS}::int4, k)
        from unnest(${locks}::int4[]) with ordinality as l(k, i) order by i`.execute(),
    );
    const scopeHex = [...scopes].map(hex);
    const pairList = [...pairs.values()];
    const existing = Promise.resolve(
      tx<{ name: Uint8Array }[]>`select name from state_scopes
        where name in (select decode(h, 'hex') from unnest(${scopeHex}::text[]) h)`.execute(),
    );
    type Row = { scope: Uint8Array; key: Uint8Array; revision: string; value: Uint8Array | null };
    // The old values only for the history (a value can be large).
    const value = history ? tx`e.value` : tx`null::bytea`;
    const read = pairList.length === 0 ? Promise.resolve([]) : Promise.resolve(
      tx<Row[]>`
        select e.scope, e.key, e.revision, ${value} as value from state_entries e
        join unnest(${pairList.map(([s]) => hex(s))}::text[], ${
        pairList.map(([, k]) => hex(k))
      }::text[]) as t(s, k) on e.scope = decode(t.s, 'hex') and e.key = decode(t.k, 'hex')`
        .execute(),
    );
    const droppedKeys = dropped.size === 0 ? Promise.resolve([]) : Promise.resolve(
      tx<Row[]>`select e.scope, e.key, e.revision, e.value from state_entries e
        where e.scope in (select decode(h, 'hex') from unnest(${[...dropped].map(hex)}::text[]) h)`
        .execute(),
    );
    const storedKeys = this.#readKeys(tx, writes);
    await firstFailure([begun, locked, existing, read, droppedKeys, storedKeys]);
    // The touched part of the store, as the mirror the overlay computes on.
    const base: Mirror = new Map();
    for (const row of await existing) base.set(text(row.name), new Map());
    for (const row of [...await read, ...await droppedKeys]) {
      base.get(text(row.scope))?.set(text(row.key), {
        value: row.value === null ? "" : text(row.value),
        revision: Number(row.revision),
        updatedAt: 0,
      });
    }
    const overlay = new Overlay(base, this.#now());
    const stored = await storedKeys;
    const results = writes.map(({ write, keyed }) =>
      keyed ? overlay.applyKeyed(write, keyed, stored, this.#windowMs) : overlay.apply(write)
    );
    if (overlay.changes.length === 0 && overlay.newKeys.size === 0) {
      return { results, changes: [], wrote: false };
    }
    await this.#persist(tx, overlay, base);
    return { results, changes: overlay.changes, wrote: true };
  }

  /**
   * The unexpired stored keys of the group's keyed writes, by {@link keyId}:
   * read under the scope locks, so a retry of a write in the same scope,
   * whichever worker took it, sees the first one's key.
   */
  async #readKeys(
    tx: postgres.Sql,
    writes: readonly Pending[],
  ): Promise<Map<string, StoredKey>> {
    const stored = new Map<string, StoredKey>();
    const owners: string[] = [];
    const keys: string[] = [];
    for (const { keyed } of writes) {
      if (keyed) {
        owners.push(hex(keyed.owner));
        keys.push(keyed.key);
      }
    }
    if (owners.length === 0) return stored;
    const rows = await tx<
      { owner: Uint8Array; key: string; fingerprint: string; reply: string; expires_at: string }[]
    >`select owner, key, fingerprint, reply, expires_at from state_idempotency_keys
      where expires_at > ${this.#now()}::int8 and (owner, key) in (
        select decode(o, 'hex'), k from unnest(${owners}::text[], ${keys}::text[]) as t(o, k))`;
    for (const row of rows) {
      stored.set(keyId(text(row.owner), row.key), {
        fingerprint: row.fingerprint,
        reply: row.reply,
        expiresAt: Number(row.expires_at),
      });
    }
    return stored;
  }

  /** Steps 4 and 5: the group's net effect, checked against `base`, and the sequence numbers. */
  async #persist(tx: postgres.Sql, overlay: Overlay, base: Mirror): Promise<void> {
    const now = overlay.now;
    // Sent at once, in this order, and answered in it (one connection, pipelined); each
    // promise here is awaited below, so a failure of any is the group's.
    const statements: Promise<unknown>[] = [];
    const send = <T>(query: { execute(): PromiseLike<T> }, check?: (result: T) => void) => {
      const sent = Promise.resolve(query.execute());
      const checked = check ? sent.then((result) => (check(result), result)) : sent;
      statements.push(checked);
      return checked;
    };
    const expect = (
      what: string,
      count: number,
      query: { execute(): PromiseLike<{ count: number }> },
    ) =>
      send(query, (result) => {
        if (result.count !== count) {
          throw new ConcurrentChange(`${what}: ${result.count} rows of ${count}`);
        }
      });

    const reset = [...overlay.scopeReset].map(hex);
    if (reset.length > 0) {
      send(tx`delete from state_entries
        where scope in (select decode(h, 'hex') from unnest(${reset}::text[]) h)`);
      expect(
        "deleted scopes",
        reset.length,
        tx`delete from state_scopes
          where name in (select decode(h, 'hex') from unnest(${reset}::text[]) h)`,
      );
    }
    const created = [...overlay.scopeState].filter(([scope, exists]) =>
      exists && (overlay.scopeReset.has(scope) || !base.has(scope))
    ).map(([scope]) => hex(scope));
    if (created.length > 0) {
      expect(
        "created scopes",
        created.length,
        tx`insert into state_scopes (name, created_at)
          select decode(h, 'hex'), ${now}::int8 from unnest(${created}::text[]) h
          on conflict do nothing`,
      );
    }

    // Rows as read (base revision) to update, absent ones to insert, present ones to delete.
    const update = { s: [] as string[], k: [] as string[], v: [] as string[], r: [] as string[] };
    const updateBase: string[] = [];
    const insert = { s: [] as string[], k: [] as string[], v: [] as string[], r: [] as string[] };
    const remove = { s: [] as string[], k: [] as string[], r: [] as string[] };
    for (const [scope, touched] of overlay.entryState) {
      const wasReset = overlay.scopeReset.has(scope);
      for (const [key, entry] of touched) {
        const read = wasReset ? undefined : base.get(scope)?.get(key);
        if (entry) {
          const rows = read ? update : insert;
          rows.s.push(hex(scope));
          rows.k.push(hex(key));
          rows.v.push(hex(entry.value));
          rows.r.push(String(entry.revision));
          if (read) updateBase.push(String(read.revision));
        } else if (read) {
          remove.s.push(hex(scope));
          remove.k.push(hex(key));
          remove.r.push(String(read.revision));
        }
      }
    }
    if (remove.s.length > 0) {
      expect(
        "deleted keys",
        remove.s.length,
        tx`delete from state_entries e
          using unnest(${remove.s}::text[], ${remove.k}::text[], ${remove.r}::int8[]) as d(s, k, r)
          where e.scope = decode(d.s, 'hex') and e.key = decode(d.k, 'hex') and e.revision = d.r`,
      );
    }
    if (update.s.length > 0) {
      expect(
        "updated keys",
        update.s.length,
        tx`update state_entries e set value = decode(u.v, 'hex'), revision = u.r, updated_at = ${now}::int8
          from unnest(${update.s}::text[], ${update.k}::text[], ${update.v}::text[], ${update.r}::int8[],
            ${updateBase}::int8[]) as u(s, k, v, r, b)
          where e.scope = decode(u.s, 'hex') and e.key = decode(u.k, 'hex') and e.revision = u.b`,
      );
    }
    if (insert.s.length > 0) {
      expect(
        "inserted keys",
        insert.s.length,
        tx`insert into state_entries (scope, key, value, revision, updated_at)
          select decode(s, 'hex'), decode(k, 'hex'), decode(v, 'hex'), r, ${now}::int8
          from unnest(${insert.s}::text[], ${insert.k}::text[], ${insert.v}::text[], ${insert.r}::int8[])
            as u(s, k, v, r)
          on conflict do nothing`,
      );
    }

    // Keys first used in this group, with their replies. An unexpired key stored meanwhile
    // by another worker (whose write took another scope's lock) is not replaced: the
    // count check sends this group round again, to find it and answer with it.
    const newKeys = [...overlay.newKeys.values()];
    if (newKeys.length > 0) {
      expect(
        "new idempotency keys",
        newKeys.length,
        tx`insert into state_idempotency_keys as i
            (owner, key, fingerprint, reply, created_at, expires_at)
          select decode(o, 'hex'), k, f, r, ${now}::int8, e
          from unnest(${newKeys.map((k) => hex(k.owner))}::text[], ${
          newKeys.map((k) => k.key)
        }::text[], ${newKeys.map((k) => k.fingerprint)}::text[], ${
          newKeys.map((k) => k.reply)
        }::text[], ${newKeys.map((k) => k.expiresAt)}::int8[]) as u(o, k, f, r, e)
          on conflict (owner, key) do update set fingerprint = excluded.fingerprint,
            reply = excluded.reply, created_at = excluded.created_at, expires_at = excluded.expires_at
          where i.expires_at <= ${now}::int8`,
      );
    }

    if (this.#historyPerKey > 0 && overlay.history.length > 0) {
      const h = overlay.history;
      const orNull = (value: string | null) => value === null ? null : hex(value);
      // Rows in the group's order: identity values follow it, and the scope locks
      // held until COMMIT make a key's ids follow its commits across workers.
      send(
        tx`insert into state_key_history (scope, key, revision, op, old_value, new_value, actor, at)
        select decode(s, 'hex'), decode(k, 'hex'), r, o, decode(ov, 'hex'), decode(nv, 'hex'),
          decode(a, 'hex'), ${now}::int8
        from unnest(${h.map((r) => hex(r.scope))}::text[], ${h.map((r) => hex(r.key))}::text[],
          ${h.map((r) => r.revision)}::int8[], ${h.map((r) => r.op)}::text[],
          ${h.map((r) => orNull(r.oldValue))}::text[], ${h.map((r) => orNull(r.newValue))}::text[],
          ${h.map((r) => hex(r.actor))}::text[])
          with ordinality as u(s, k, r, o, ov, nv, a, i)
        order by i`,
      );
      const touched = historyKeys(h);
      // All but the newest rows of each touched key.
      send(tx`delete from state_key_history d using (
          select old.id from unnest(${touched.map(([s]) => hex(s))}::text[],
            ${touched.map(([, k]) => hex(k))}::text[]) as t(s, k)
          cross join lateral (select id from state_key_history
            where scope = decode(t.s, 'hex') and key = decode(t.k, 'hex')
            order by id desc offset ${this.#historyPerKey}) as old
        ) as p where d.id = p.id`);
    }

    // Sequence numbers: per scope, above the last one given out and not below this clock (µs).
    const counts = new Map<string, number>();
    for (const change of overlay.changes) {
      counts.set(change.scope, (counts.get(change.scope) ?? 0) + 1);
    }
    if (counts.size === 0) {
      await firstFailure(statements);
      return;
    }
    const clock = String(Math.floor(now) * 1000);
    const seqScopes = [...counts.keys()];
    const seqRows = send(tx<{ scope: string; seq: string }[]>`
      insert into state_change_seq as c (scope, seq)
      select decode(s, 'hex'), ${clock}::int8 + n - 1
        from unnest(${seqScopes.map(hex)}::text[], ${[...counts.values()]}::int8[]) as u(s, n)
      on conflict (scope) do update
        set seq = greatest(c.seq + 1, ${clock}::int8) + (excluded.seq - ${clock}::int8)
      returning encode(scope, 'hex') as scope, seq`);
    await firstFailure(statements);
    const next = new Map<string, number>();
    for (const row of await seqRows) {
      const scope = text(Buffer.from(row.scope, "hex"));
      next.set(scope, Number(row.seq) - counts.get(scope)! + 1);
    }
    for (const change of overlay.changes) {
      const seq = next.get(change.scope)!;
      change.seq = seq;
      next.set(change.scope, seq + 1);
    }
  }
}
