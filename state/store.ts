/**
 * The scoped key/value store: a complete in-memory mirror of the database for
 * reads, and group commit for writes.
 *
 * Writes queue up while a commit runs; the next commit takes the whole queue,
 * computes every result against the committed state plus the effects of the
 * earlier writes in the same group, persists the group's net effect in one
 * transaction, and only then updates the mirror and resolves the writers. So
 * a reply always follows its commit, throughput does not collapse to one
 * fsync per write, and reads never wait for the disk.
 *
 * The mirror assumes this process is the only writer of its database: a
 * local file is locked for it (lock.ts).
 *
 * Writes with an idempotency key (state/idempotency.ts) join the same groups:
 * the group's known keys are read before it is applied (this process being
 * the only writer, nothing changes them in between), a key met earlier in the
 * group or stored before answers with its reply instead of applying the write
 * again, and new keys are inserted in the group's transaction, so a write and
 * its key commit together or not at all.
 *
 * @module
 */
import type { InStatement, InValue } from "@libsql/client";
import { sql } from "drizzle-orm";
import type { StateBackend } from "./backend.ts";
import type { OpenDatabase } from "./db.ts";
import { entries, scopes } from "./schema.ts";
import { nextTurn } from "../support/next_turn.ts";
import {
  type KeyedOutcome,
  type KeyedWrite,
  keyId,
  resolveKeyed,
  type StoredKey,
} from "./idempotency.ts";

/** A stored value with its revision (1 on creation, +1 per write) and update time (ms). */
export interface Entry {
  value: string;
  revision: number;
  updatedAt: number;
}

/** A committed change, as published on the state bus. */
export interface Change {
  op: "set" | "delete" | "create-scope" | "delete-scope";
  scope: string;
  key?: string;
  value?: string;
  revision?: number;
  timestamp: string;
  /**
   * The change event's sequence number when the store gives it out (PostgreSQL:
   * increasing per scope across workers); else the publisher's clock does.
   */
  seq?: number;
}

/**
 * A write the store can group. `actor` is who asked for it, for the keys'
 * history (the verified caller, or "anonymous" without authentication).
 */
export type Write =
  & (
    | { kind: "create-scope"; scope: string }
    | { kind: "delete-scope"; scope: string }
    | {
      kind: "set";
      scope: string;
      entries: ReadonlyArray<readonly [string, string]>;
      /** Compare-and-set: the revision the (single) key must have now; 0 means absent. */
      expected?: number;
    }
    | { kind: "delete"; scope: string; key: string }
  )
  & { actor?: string };

/** Who made a change when no one is named (authentication off). */
export const ANONYMOUS_ACTOR = "anonymous";

/** One committed change of a key, as its history keeps it (docs/state.md#key-history). */
export interface HistoryEntry {
  /** Orders a key's changes (newer is larger) and pages them. */
  id: number;
  /** The key's revision after a set; the revision deleted by a delete. */
  revision: number;
  op: "set" | "delete";
  /** Null: the key did not exist before the change. */
  oldValue: string | null;
  /** Null: the change deleted the key. */
  newValue: string | null;
  actor: string;
  /** When it committed (ms since the epoch, the committing worker's clock). */
  at: number;
}

/** A history row to write, with its key. */
export interface HistoryRow extends Omit<HistoryEntry, "id"> {
  scope: string;
  key: string;
}

/** Rows of a key's history kept by default (docs/state.md#key-history). */
export const DEFAULT_HISTORY_PER_KEY = 100;

/** What a write did. */
export type WriteResult =
  | { kind: "scope"; changed: boolean }
  | { kind: "set"; revisions: number[] }
  | { kind: "conflict"; key: string; current: number }
  | { kind: "delete"; existed: boolean };

interface Queued {
  write: Write;
  keyed?: KeyedWrite;
  // deno-lint-ignore no-explicit-any -- a WriteResult, or a KeyedOutcome for a keyed write
  resolve: (result: any) => void;
  reject: (error: unknown) => void;
}

/** Options of {@link StateStore}. */
export interface StoreOptions {
  /** Writes per transaction at most. @default 4096 */
  maxGroup?: number;
  /** Called with each group's changes after it committed. */
  onChanges?: (changes: Change[]) => void;
  /**
   * Called after each commit with its size and duration, for metrics;
   * `wrote` is false when the group changed nothing (so the disk was not tried).
   */
  onCommit?: (writes: number, seconds: number, wrote: boolean) => void;
  /** Called when a group failed to commit (its writers are rejected with `error`). */
  onCommitError?: (error: unknown, writes: number) => void;
  /** How long an idempotency key is remembered, in ms. @default 86400000 (a day) */
  idempotencyWindowMs?: number;
  /**
   * Newest history rows kept per key (older ones are deleted in the
   * transaction that adds a row); 0 keeps no history. @default 100
   */
  historyPerKey?: number;
  now?: () => number;
}

/** Scopes with their entries (all of them, or those a group touches). */
export type Mirror = Map<string, Map<string, Entry>>;

/** The effects of one group on top of the mirror. */
export class Overlay {
  readonly scopeState = new Map<string, boolean>();
  readonly scopeReset = new Set<string>();
  readonly entryState = new Map<string, Map<string, Entry | null>>();
  readonly changes: Change[] = [];
  /** The keys' history rows of the group's changes, in order. */
  readonly history: HistoryRow[] = [];
  /** Keys first used in this group, by {@link keyId}, to insert with it. */
  readonly newKeys = new Map<string, { owner: string; key: string } & StoredKey>();

  constructor(readonly mirror: Mirror, readonly now: number) {}

  /**
   * A keyed write: the reply of the key's first use (in this group, or
   * `stored` before it) when there is one, else the write applied and its
   * key staged with its reply.
   */
  applyKeyed(
    write: Write,
    keyed: KeyedWrite,
    stored: Map<string, StoredKey>,
    windowMs: number,
  ): KeyedOutcome {
    const id = keyId(keyed.owner, keyed.key);
    return resolveKeyed(this.newKeys.get(id) ?? stored.get(id), keyed.fingerprint, () => {
      const reply = keyed.reply(this.apply(write));
      this.newKeys.set(id, {
        owner: keyed.owner,
        key: keyed.key,
        fingerprint: keyed.fingerprint,
        reply,
        expiresAt: this.now + (keyed.windowMs ?? windowMs),
      });
      return reply;
    });
  }

  hasScope(scope: string): boolean {
    return this.scopeState.get(scope) ?? this.mirror.has(scope);
  }

  entry(scope: string, key: string): Entry | undefined {
    const touched = this.entryState.get(scope);
    if (touched?.has(key)) return touched.get(key) ?? undefined;
    if (this.scopeReset.has(scope)) return undefined;
    return this.mirror.get(scope)?.get(key);
  }

  #touch(scope: string): Map<string, Entry | null> {
    let map = this.entryState.get(scope);
    if (!map) this.entryState.set(scope, map = new Map());
    return map;
  }

  #change(change: Omit<Change, "timestamp">): void {
    this.changes.push({ ...change, timestamp: new Date(this.now).toISOString() });
  }

  /** The keys the scope holds now (with the group's changes so far), sorted. */
  #liveKeys(scope: string): string[] {
    const keys = new Set<string>();
    if (!this.scopeReset.has(scope)) {
      for (const key of this.mirror.get(scope)?.keys() ?? []) keys.add(key);
    }
    for (const key of this.entryState.get(scope)?.keys() ?? []) keys.add(key);
    return [...keys].filter((key) => this.entry(scope, key) !== undefined).sort();
  }

  /** A key's deletion, in its history. */
  #deleted(scope: string, key: string, entry: Entry, actor: string): void {
    this.history.push({
      scope,
      key,
      revision: entry.revision,
      op: "delete",
      oldValue: entry.value,
      newValue: null,
      actor,
      at: this.now,
    });
  }

  apply(write: Write): WriteResult {
    const actor = write.actor ?? ANONYMOUS_ACTOR;
    switch (write.kind) {
      case "create-scope": {
        if (this.hasScope(write.scope)) return { kind: "scope", changed: false };
        this.scopeState.set(write.scope, true);
        this.#change({ op: "create-scope", scope: write.scope });
        return { kind: "scope", changed: true };
      }
      case "delete-scope": {
        if (!this.hasScope(write.scope)) return { kind: "scope", changed: false };
        // Its keys go with it: each one's history says so.
        for (const key of this.#liveKeys(write.scope)) {
          this.#deleted(write.scope, key, this.entry(write.scope, key)!, actor);
        }
        this.scopeState.set(write.scope, false);
        this.scopeReset.add(write.scope);
        this.entryState.delete(write.scope);
        this.#change({ op: "delete-scope", scope: write.scope });
        return { kind: "scope", changed: true };
      }
      case "set": {
        if (write.expected !== undefined) {
          const key = write.entries[0]![0];
          const current = this.entry(write.scope, key)?.revision ?? 0;
          if (current !== write.expected) return { kind: "conflict", key, current };
        }
        if (!this.hasScope(write.scope)) {
          this.scopeState.set(write.scope, true);
          this.#change({ op: "create-scope", scope: write.scope });
        }
        const touched = this.#touch(write.scope);
        const revisions = write.entries.map(([key, value]) => {
          const before = this.entry(write.scope, key);
          const revision = (before?.revision ?? 0) + 1;
          this.history.push({
            scope: write.scope,
            key,
            revision,
            op: "set",
            oldValue: before?.value ?? null,
            newValue: value,
            actor,
            at: this.now,
          });
          touched.set(key, { value, revision, updatedAt: this.now });
          this.#change({ op: "set", scope: write.scope, key, value, revision });
          return revision;
        });
        return { kind: "set", revisions };
      }
      case "delete": {
        const before = this.entry(write.scope, write.key);
        const existed = before !== undefined;
        if (existed) {
          this.#deleted(write.scope, write.key, before, actor);
          this.#touch(write.scope).set(write.key, null);
          this.#change({ op: "delete", scope: write.scope, key: write.key });
        }
        return { kind: "delete", existed };
      }
    }
  }

  applyTo(mirror: Mirror): void {
    for (const scope of this.scopeReset) mirror.delete(scope);
    for (const [scope, exists] of this.scopeState) {
      if (exists && !mirror.has(scope)) mirror.set(scope, new Map());
    }
    for (const [scope, touched] of this.entryState) {
      const map = mirror.get(scope);
      if (!map) continue;
      for (const [key, entry] of touched) {
        if (entry) map.set(key, entry);
        else map.delete(key);
      }
    }
  }
}

const ROWS_PER_INSERT = 500;
const ENTRY_COLUMNS = 5;
const KEY_COLUMNS = 6;
const HISTORY_COLUMNS = 8;

type StatementKind =
  | "delete-entries-of-scopes"
  | "delete-scopes"
  | "insert-scopes"
  | "delete-keys"
  | "upsert-entries"
  | "select-idempotency-keys"
  | "upsert-idempotency-keys"
  | "insert-history";

const texts = new Map<string, string>();

/**
 * The SQL of a statement of `kind` for `n` rows or names (schema.ts's tables
 * and columns). Only the number of placeholders varies: every value is a bound
 * argument.
 */
function sqlText(kind: StatementKind, n: number): string {
  const id = `${kind}:${n}`;
  let text = texts.get(id);
  if (text !== undefined) return text;
  const marks = (count: number, group: string) => Array(count).fill(group).join(", ");
  switch (kind) {
    case "delete-entries-of-scopes":
      text = `DELETE FROM entries WHERE scope IN (${marks(n, "?")})`;
      break;
    case "delete-scopes":
      text = `DELETE FROM scopes WHERE name IN (${marks(n, "?")})`;
      break;
    case "insert-scopes":
      text = `INSERT INTO scopes (name, created_at) VALUES ${
        marks(n, "(?, ?)")
      } ON CONFLICT DO NOTHING`;
      break;
    case "delete-keys":
      text = `DELETE FROM entries WHERE scope = ? AND key IN (${marks(n, "?")})`;
      break;
    case "upsert-entries":
      text = `INSERT INTO entries (scope, key, value, revision, updated_at) VALUES ${
        marks(n, "(?, ?, ?, ?, ?)")
      } ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, revision = excluded.revision, updated_at = excluded.updated_at`;
      break;
    // Blobs, as exactText below: an owner or reply holding NUL reads back whole.
    case "select-idempotency-keys":
      text =
        `SELECT cast(owner as blob), cast(key as blob), fingerprint, cast(reply as blob), expires_at FROM idempotency_keys WHERE expires_at > ? AND (owner, key) IN (VALUES ${
          marks(n, "(?, ?)")
        })`;
      break;
    // A conflict is a key that expired but was not purged yet: the new use replaces it.
    case "upsert-idempotency-keys":
      text =
        `INSERT INTO idempotency_keys (owner, key, fingerprint, reply, created_at, expires_at) VALUES ${
          marks(n, "(?, ?, ?, ?, ?, ?)")
        } ON CONFLICT (owner, key) DO UPDATE SET fingerprint = excluded.fingerprint, reply = excluded.reply, created_at = excluded.created_at, expires_at = excluded.expires_at`;
      break;
    case "insert-history":
      text =
        `INSERT INTO key_history (scope, key, revision, op, old_value, new_value, actor, at) VALUES ${
          marks(n, "(?, ?, ?, ?, ?, ?, ?, ?)")
        }`;
      break;
  }
  texts.set(id, text);
  return text;
}

/**
 * Deletes a key's rows but the newest N (the last argument): the id of the
 * (N+1)th newest bounds them; with N rows or fewer it is null and nothing goes.
 */
const PRUNE_HISTORY =
  "DELETE FROM key_history WHERE scope = ? AND key = ? AND id <= (SELECT id FROM key_history WHERE scope = ? AND key = ? ORDER BY id DESC LIMIT 1 OFFSET ?)";

/**
 * A key's history is pruned to its newest rows at every PRUNE_EVERY-th
 * revision and at each delete, not at every change: pruning each touched key
 * in each group made history-keeping writes several times slower (measured),
 * and this way a key holds at most PRUNE_EVERY - 1 rows beyond its retention.
 * A key created and deleted over and over is pruned at its deletes.
 */
export const PRUNE_EVERY = 16;

/** The (scope, key) pairs whose history the group prunes, each once. */
export function historyKeys(rows: readonly HistoryRow[]): Array<[string, string]> {
  const pairs = new Map<string, [string, string]>();
  for (const row of rows) {
    if (row.op === "delete" || row.revision % PRUNE_EVERY === 0) {
      pairs.set(`${row.scope}\0${row.key}`, [row.scope, row.key]);
    }
  }
  return [...pairs.values()];
}

// ignoreBOM: a value that starts with U+FEFF keeps it.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * A text column read as its bytes: libSQL returns TEXT through C strings, so a
 * name or value holding NUL would load cut at the NUL (stored intact, read
 * back short). Read as a blob and decoded, it loads exactly as written.
 */
// deno-lint-ignore no-explicit-any
function exactText(column: any) {
  return sql<string>`cast(${column} as blob)`.mapWith((bytes: ArrayBuffer | Uint8Array) =>
    utf8.decode(bytes)
  );
}

/** The state store. Reads are synchronous; writes resolve after their commit. */
export class StateStore implements StateBackend {
  #open: OpenDatabase;
  #mirror: Mirror;
  #queue: Queued[] = [];
  #committing = false;
  #idle: Array<() => void> = [];
  #maxGroup: number;
  #onChanges: (changes: Change[]) => void;
  #onCommit: (writes: number, seconds: number, wrote: boolean) => void;
  #onCommitError: (error: unknown, writes: number) => void;
  #windowMs: number;
  #historyPerKey: number;
  /** Work run by the commit loop between groups, so it never overlaps a commit. */
  #tasks: Array<() => Promise<void>> = [];
  #now: () => number;

  private constructor(open: OpenDatabase, mirror: Mirror, options: StoreOptions) {
    this.#open = open;
    this.#mirror = mirror;
    this.#maxGroup = options.maxGroup ?? 4096;
    this.#onChanges = options.onChanges ?? (() => {});
    this.#onCommit = options.onCommit ?? (() => {});
    this.#onCommitError = options.onCommitError ?? (() => {});
    this.#windowMs = options.idempotencyWindowMs ?? 86_400_000;
    this.#historyPerKey = options.historyPerKey ?? DEFAULT_HISTORY_PER_KEY;
    this.#now = options.now ?? Date.now;
  }

  /** Loads every scope and entry into memory. */
  static async load(open: OpenDatabase, options: StoreOptions = {}): Promise<StateStore> {
    const mirror: Mirror = new Map();
    for (const row of await open.db.select({ name: exactText(scopes.name) }).from(scopes)) {
      mirror.set(row.name, new Map());
    }
    const rows = await open.db.select({
      scope: exactText(entries.scope),
      key: exactText(entries.key),
      value: exactText(entries.value),
      revision: entries.revision,
      updatedAt: entries.updatedAt,
    }).from(entries);
    for (const row of rows) {
      mirror.get(row.scope)?.set(row.key, {
        value: row.value,
        revision: row.revision,
        updatedAt: row.updatedAt,
      });
    }
    return new StateStore(open, mirror, options);
  }

  hasScope(scope: string): boolean {
    return this.#mirror.has(scope);
  }

  /** Scope names, sorted. */
  scopes(): string[] {
    return [...this.#mirror.keys()].sort();
  }

  /** Key names of a scope, sorted, or undefined when the scope does not exist. */
  keys(scope: string): string[] | undefined {
    const map = this.#mirror.get(scope);
    return map ? [...map.keys()].sort() : undefined;
  }

  get(scope: string, key: string): Entry | undefined {
    return this.#mirror.get(scope)?.get(key);
  }

  getMany(scope: string, keys: readonly string[]): (Entry | undefined)[] | undefined {
    const map = this.#mirror.get(scope);
    return map ? keys.map((key) => map.get(key)) : undefined;
  }

  /** Queues a write; resolves once it is committed. */
  write(write: Write): Promise<WriteResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, resolve, reject });
      this.#kick();
    });
  }

  /**
   * Queues a write guarded by an idempotency key; resolves once it and its
   * key are committed, or at once after the group's commit with the reply
   * of the key's first use (`replayed`), or `reused` when that use was
   * another request. Same-key writes queued together are answered in order:
   * the first is applied, the others get its reply.
   */
  writeKeyed(write: Write, keyed: KeyedWrite): Promise<KeyedOutcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, keyed, resolve, reject });
      this.#kick();
    });
  }

  /** Runs `work` on the database between commits, never inside a group's transaction. */
  #between<T>(work: () => Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => {
      this.#tasks.push(() => work().then(resolve, reject));
      this.#kick();
    });
  }

  /** Deletes at most `limit` expired idempotency keys, between commits. */
  purgeExpiredKeys(limit: number): Promise<number> {
    return this.#between(async () => {
      const result = await this.#open.client.execute({
        sql:
          "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
        args: [this.#now(), limit],
      });
      return result.rowsAffected;
    });
  }

  /** A key's history, newest first: at most `limit` rows, with ids below `before` if given. */
  history(scope: string, key: string, limit: number, before?: number): Promise<HistoryEntry[]> {
    return this.#between(async () => {
      // Blobs, as exactText: values holding NUL read back whole.
      const { rows } = await this.#open.client.execute({
        sql:
          "SELECT id, revision, op, cast(old_value as blob), cast(new_value as blob), cast(actor as blob), at FROM key_history WHERE scope = ? AND key = ? AND id < ? ORDER BY id DESC LIMIT ?",
        args: [scope, key, before ?? Number.MAX_SAFE_INTEGER, limit],
      });
      const decoded = (value: unknown) => value === null ? null : utf8.decode(value as ArrayBuffer);
      return rows.map((row) => ({
        id: Number(row[0]),
        revision: Number(row[1]),
        op: String(row[2]) as HistoryEntry["op"],
        oldValue: decoded(row[3]),
        newValue: decoded(row[4]),
        actor: decoded(row[5]) ?? "",
        at: Number(row[6]),
      }));
    });
  }

  /** Deletes a key's history; resolves with how many rows went. */
  deleteHistory(scope: string, key: string): Promise<number> {
    return this.#between(async () => {
      const result = await this.#open.client.execute({
        sql: "DELETE FROM key_history WHERE scope = ? AND key = ?",
        args: [scope, key],
      });
      return result.rowsAffected;
    });
  }

  #kick(): void {
    if (!this.#committing) {
      this.#committing = true;
      // Let writes that arrive in the same turn join the first group.
      queueMicrotask(() => this.#commitLoop());
    }
  }

  /** Checks that the database answers (for /healthz). */
  async ping(): Promise<void> {
    await this.#open.client.execute("SELECT 1");
  }

  /** Resolves when no write is queued or committing. */
  drain(): Promise<void> {
    if (!this.#committing) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #commitLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0 || this.#tasks.length > 0) {
        // libSQL runs a local commit synchronously, holding the event loop through
        // the fsync: requests that arrive meanwhile are read only after it. One
        // turn of the loop before each commit lets them in, so they join this
        // group instead of each waiting for a commit of its own.
        await nextTurn();
        for (const task of this.#tasks.splice(0)) await task();
        if (this.#queue.length === 0) continue;
        const group = this.#queue.splice(0, this.#maxGroup);
        const started = performance.now();
        const overlay = new Overlay(this.#mirror, this.#now());
        let results: Array<WriteResult | KeyedOutcome>;
        let wrote: boolean;
        try {
          const stored = await this.#storedKeys(group, overlay.now);
          results = group.map((q) =>
            q.keyed
              ? overlay.applyKeyed(q.write, q.keyed, stored, this.#windowMs)
              : overlay.apply(q.write)
          );
          wrote = await this.#persist(overlay);
        } catch (error) {
          this.#onCommitError(error, group.length);
          for (const q of group) q.reject(error);
          continue;
        }
        overlay.applyTo(this.#mirror);
        this.#onCommit(group.length, (performance.now() - started) / 1000, wrote);
        group.forEach((q, i) => q.resolve(results[i]));
        if (overlay.changes.length > 0) this.#onChanges(overlay.changes);
      }
    } finally {
      this.#committing = false;
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  /** The unexpired stored keys of the group's keyed writes, by {@link keyId}. */
  async #storedKeys(group: Queued[], now: number): Promise<Map<string, StoredKey>> {
    const stored = new Map<string, StoredKey>();
    const pairs: string[] = [];
    for (const q of group) if (q.keyed) pairs.push(q.keyed.owner, q.keyed.key);
    for (let i = 0; i < pairs.length; i += ROWS_PER_INSERT * 2) {
      const args = pairs.slice(i, i + ROWS_PER_INSERT * 2);
      const { rows } = await this.#open.client.execute({
        sql: sqlText("select-idempotency-keys", args.length / 2),
        args: [now, ...args],
      });
      for (const row of rows) {
        const bytes = (i: number) => utf8.decode(row[i] as ArrayBuffer);
        stored.set(keyId(bytes(0), bytes(1)), {
          fingerprint: String(row[2]),
          reply: bytes(3),
          expiresAt: Number(row[4]),
        });
      }
    }
    return stored;
  }

  /**
   * The group's net effect in one transaction. Plain SQL with positional
   * arguments rather than Drizzle's builder: building the group's statements
   * took ~9% of a busy state worker's CPU (profiled), and the texts repeat, so
   * each is built once per row count.
   */
  async #persist(overlay: Overlay): Promise<boolean> {
    const statements: InStatement[] = [];
    const reset = [...overlay.scopeReset];
    for (let i = 0; i < reset.length; i += ROWS_PER_INSERT) {
      const names = reset.slice(i, i + ROWS_PER_INSERT);
      statements.push({ sql: sqlText("delete-entries-of-scopes", names.length), args: names });
      statements.push({ sql: sqlText("delete-scopes", names.length), args: names });
    }
    const created = [...overlay.scopeState].filter(([, exists]) => exists).map(([name]) => name);
    for (let i = 0; i < created.length; i += ROWS_PER_INSERT) {
      const names = created.slice(i, i + ROWS_PER_INSERT);
      statements.push({
        sql: sqlText("insert-scopes", names.length),
        args: names.flatMap((name) => [name, overlay.now]),
      });
    }
    const rows: InValue[] = [];
    for (const [scope, touched] of overlay.entryState) {
      const removed: string[] = [];
      for (const [key, entry] of touched) {
        if (entry) rows.push(scope, key, entry.value, entry.revision, entry.updatedAt);
        else removed.push(key);
      }
      for (let i = 0; i < removed.length; i += ROWS_PER_INSERT) {
        const keys = removed.slice(i, i + ROWS_PER_INSERT);
        statements.push({ sql: sqlText("delete-keys", keys.length), args: [scope, ...keys] });
      }
    }
    for (let i = 0; i < rows.length; i += ROWS_PER_INSERT * ENTRY_COLUMNS) {
      const args = rows.slice(i, i + ROWS_PER_INSERT * ENTRY_COLUMNS);
      statements.push({ sql: sqlText("upsert-entries", args.length / ENTRY_COLUMNS), args });
    }
    const keys: InValue[] = [];
    for (const k of overlay.newKeys.values()) {
      keys.push(k.owner, k.key, k.fingerprint, k.reply, overlay.now, k.expiresAt);
    }
    for (let i = 0; i < keys.length; i += ROWS_PER_INSERT * KEY_COLUMNS) {
      const args = keys.slice(i, i + ROWS_PER_INSERT * KEY_COLUMNS);
      statements.push({ sql: sqlText("upsert-idempotency-keys", args.length / KEY_COLUMNS), args });
    }
    if (this.#historyPerKey > 0 && overlay.history.length > 0) {
      const history: InValue[] = [];
      for (const h of overlay.history) {
        history.push(h.scope, h.key, h.revision, h.op, h.oldValue, h.newValue, h.actor, h.at);
      }
      for (let i = 0; i < history.length; i += ROWS_PER_INSERT * HISTORY_COLUMNS) {
        const args = history.slice(i, i + ROWS_PER_INSERT * HISTORY_COLUMNS);
        statements.push({ sql: sqlText("insert-history", args.length / HISTORY_COLUMNS), args });
      }
      for (const [scope, key] of historyKeys(overlay.history)) {
        statements.push({
          sql: PRUNE_HISTORY,
          args: [scope, key, scope, key, this.#historyPerKey],
        });
      }
    }
    if (statements.length === 0) return false;
    // One batch is one transaction: the whole group commits or none of it.
    await this.#open.client.batch(statements, "write");
    return true;
  }

  /** Waits for queued writes, then closes the database. */
  async close(): Promise<void> {
    await this.drain();
    this.#open.close();
  }
}
