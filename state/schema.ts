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
