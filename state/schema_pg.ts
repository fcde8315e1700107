/**
 * The state store's tables on PostgreSQL: the single source of truth for
 * drizzle-kit, which generates migrations/state-pg from this file
 * (`deno task db:generate:state-pg`).
 *
 * Names and values are `bytea` holding UTF-8: PostgreSQL's `text` refuses
 * NUL, which the state service stores (as libSQL does). Tables are prefixed
 * `state_` so the store can share a database with the metrics store.
 *
 * @module
 */
import { bigint, customType, index, pgTable, primaryKey, text } from "drizzle-orm/pg-core";

/** UTF-8 text kept as bytes. */
const utf8 = customType<{ data: Uint8Array; driverData: Uint8Array }>({
  dataType: () => "bytea",
});

const millis = (name: string) => bigint(name, { mode: "number" });

/** A scope (plantd calls it "service"): a named set of keys. */
export const stateScopes = pgTable("state_scopes", {
  name: utf8("name").primaryKey(),
  createdAt: millis("created_at").notNull(),
});

/** One key of a scope with its value, revision (1 on creation, +1 per write) and update time. */
export const stateEntries = pgTable("state_entries", {
  scope: utf8("scope").notNull().references(() => stateScopes.name, { onDelete: "cascade" }),
  key: utf8("key").notNull(),
  value: utf8("value").notNull(),
  revision: bigint("revision", { mode: "number" }).notNull(),
  updatedAt: millis("updated_at").notNull(),
}, (table) => [primaryKey({ columns: [table.scope, table.key] })]);

/**
 * The last change event sequence number given out per scope name, across all
 * state workers (state/store_pg.ts). Kept when the scope is deleted, so a
 * scope created again continues above it.
 */
export const stateChangeSeq = pgTable("state_change_seq", {
  scope: utf8("scope").primaryKey(),
  seq: bigint("seq", { mode: "number" }).notNull(),
});

/**
 * Idempotency keys of writes (state/idempotency.ts): per owner and key, the
 * fingerprint of the request and the reply it got, until `expires_at` (ms).
 * Written in the same transaction as the write it guards. The owner (a
 * principal id) is bytes as names are; the key is printable ASCII, the
 * fingerprint hex and the reply JSON text.
 */
export const stateIdempotencyKeys = pgTable("state_idempotency_keys", {
  owner: utf8("owner").notNull(),
  key: text("key").notNull(),
  fingerprint: text("fingerprint").notNull(),
  reply: text("reply").notNull(),
  createdAt: millis("created_at").notNull(),
  expiresAt: millis("expires_at").notNull(),
}, (table) => [
  primaryKey({ columns: [table.owner, table.key] }),
  // The purge takes the oldest expired keys a batch at a time.
  index("state_idempotency_keys_expires_at").on(table.expiresAt),
]);

/**
 * Per-key history (docs/state.md#key-history), as state/schema.ts's
 * `key_history`: one row per committed change, written in the change's
 * transaction. Writes to a scope hold its advisory lock until they commit, so
 * the ids of one key's rows follow its commits across workers.
 */
export const stateKeyHistory = pgTable("state_key_history", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  scope: utf8("scope").notNull(),
  key: utf8("key").notNull(),
  revision: bigint("revision", { mode: "number" }).notNull(),
  op: text("op").notNull(),
  oldValue: utf8("old_value"),
  newValue: utf8("new_value"),
  actor: utf8("actor").notNull(),
  at: millis("at").notNull(),
}, (table) => [
  index("state_key_history_scope_key_id").on(table.scope, table.key, table.id),
]);

/**
 * Call credentials the state workers took (auth/call_credentials.ts): each
 * id once, across workers, with the delivery it came with (a digest of the
 * broker's client address), until the credential's `exp` (seconds). A
 * second sight with the same delivery is the broker routing the request
 * again; with another, a replay.
 */
export const stateCallCredentials = pgTable("state_call_credentials", {
  jti: text("jti").primaryKey(),
  delivery: text("delivery"),
  expiresAt: bigint("expires_at", { mode: "number" }).notNull(),
}, (table) => [index("state_call_credentials_expires_at").on(table.expiresAt)]);
