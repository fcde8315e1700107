/**
 * The broker journal's tables on PostgreSQL (broker/journal_postgres.ts), the
 * same as on libSQL (journal_schema.ts): drizzle-kit generates
 * migrations/journal-pg from this file. Times are ms since the epoch.
 *
 * @module
 */
import { bigint, customType, index, integer, pgTable, text } from "drizzle-orm/pg-core";

const bytea = customType<{ data: Uint8Array }>({ dataType: () => "bytea" });

/** A durable request journaled and not yet answered. */
export const journalRequests = pgTable("journal_requests", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: bytea("body").notNull(),
  receivedAt: bigint("received_at", { mode: "number" }).notNull(),
  expiresAt: bigint("expires_at", { mode: "number" }).notNull(),
  callerDeadline: bigint("caller_deadline", { mode: "number" }),
  keyed: integer("keyed").notNull(),
  failures: text("failures").notNull(),
}, (table) => [index("journal_requests_received_idx").on(table.receivedAt)]);

/** The reply of a durable request, kept until `expires_at`. */
export const journalReplies = pgTable("journal_replies", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: bytea("body").notNull(),
  storedAt: bigint("stored_at", { mode: "number" }).notNull(),
  expiresAt: bigint("expires_at", { mode: "number" }).notNull(),
}, (table) => [index("journal_replies_expires_idx").on(table.expiresAt)]);

/** A durable request that failed too often or expired, kept for a person. */
export const deadLetters = pgTable("dead_letters", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: bytea("body").notNull(),
  reason: text("reason").notNull(),
  detail: text("detail").notNull(),
  attempts: integer("attempts").notNull(),
  receivedAt: bigint("received_at", { mode: "number" }).notNull(),
  deadAt: bigint("dead_at", { mode: "number" }).notNull(),
  failures: text("failures").notNull(),
  replays: integer("replays").notNull(),
}, (table) => [index("dead_letters_dead_idx").on(table.deadAt, table.key)]);
