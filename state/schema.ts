/**
 * The state store's tables: the single source of truth for drizzle-kit, which
 * generates migrations/state from this file.
 *
 * @module
 */
import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** A scope (plantd calls it "service"): a named set of keys. */
export const scopes = sqliteTable("scopes", {
  name: text("name").primaryKey(),
  createdAt: integer("created_at").notNull(),
});

/** One key of a scope with its value, revision (1 on creation, +1 per write) and update time. */
export const entries = sqliteTable("entries", {
  scope: text("scope").notNull().references(() => scopes.name, { onDelete: "cascade" }),
  key: text("key").notNull(),
  value: text("value").notNull(),
  revision: integer("revision").notNull(),
  updatedAt: integer("updated_at").notNull(),
}, (table) => [primaryKey({ columns: [table.scope, table.key] })]);

/**
 * Idempotency keys of writes (state/idempotency.ts): per owner and key, the
 * fingerprint of the request and the reply it got, until `expires_at` (ms).
 * Written in the same transaction as the write it guards.
 */
export const idempotencyKeys = sqliteTable("idempotency_keys", {
  owner: text("owner").notNull(),
  key: text("key").notNull(),
  fingerprint: text("fingerprint").notNull(),
  reply: text("reply").notNull(),
  createdAt: integer("created_at").notNull(),
  expiresAt: integer("expires_at").notNull(),
}, (table) => [
  primaryKey({ columns: [table.owner, table.key] }),
  // The purge takes the oldest expired keys a batch at a time.
  index("idempotency_keys_expires_at").on(table.expiresAt),
]);

/**
 * Per-key history (docs/state.md#key-history): one row per committed change of
 * a key, written in the transaction of the change, so it never lists a change
 * that was rolled back nor misses one that committed. `id` orders the rows
 * (and pages them); AUTOINCREMENT never gives an id out twice, so a cursor
 * kept by a client never points into rows written after a delete. Kept apart
 * from `scopes`: a key's history outlives the key and its scope.
 */
export const keyHistory = sqliteTable("key_history", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  scope: text("scope").notNull(),
  key: text("key").notNull(),
  /** The key's revision after a set; the deleted revision for a delete. */
  revision: integer("revision").notNull(),
  /** `set` or `delete`. */
  op: text("op").notNull(),
  /** Null: the key did not exist before. */
  oldValue: text("old_value"),
  /** Null: the key was deleted. */
  newValue: text("new_value"),
  actor: text("actor").notNull(),
  at: integer("at").notNull(),
}, (table) => [
  // A key's rows newest first (reads, pages and the retention's pruning).
  index("key_history_scope_key_id").on(table.scope, table.key, table.id),
]);
