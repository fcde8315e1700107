/**
 * The broker journal's tables on libSQL (broker/journal_libsql.ts): durable
 * requests not yet answered, replies kept for callers that ask again, and
 * dead letters. drizzle-kit generates migrations/journal from this file.
 * Keys are the request's 16-byte journal key in hex; bodies are the request
 * or reply frames, length-prefixed (journal.ts encodeFrames).
 *
 * @module
 */
import { blob, index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** A durable request journaled and not yet answered. */
export const journalRequests = sqliteTable("journal_requests", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: blob("body", { mode: "buffer" }).notNull(),
  /** ms since the epoch. */
  receivedAt: integer("received_at").notNull(),
  /** When it is dead-lettered as expired if no worker has answered it (ms since the epoch). */
  expiresAt: integer("expires_at").notNull(),
  /** When its caller stops waiting (ms since the epoch); null: the caller sent no deadline. */
  callerDeadline: integer("caller_deadline"),
  /** 1: asked with a key by a client that asks again after a crash; 0: anonymous. */
  keyed: integer("keyed").notNull(),
  /** JSON list of {at, reason}: each worker lost while holding it. */
  failures: text("failures").notNull(),
}, (table) => [index("journal_requests_received_idx").on(table.receivedAt)]);

/** The reply of a durable request, kept until `expires_at` for a caller that asks again. */
export const journalReplies = sqliteTable("journal_replies", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: blob("body", { mode: "buffer" }).notNull(),
  storedAt: integer("stored_at").notNull(),
  expiresAt: integer("expires_at").notNull(),
}, (table) => [index("journal_replies_expires_idx").on(table.expiresAt)]);

/** A durable request that failed too often or expired, kept for a person. */
export const deadLetters = sqliteTable("dead_letters", {
  key: text("key").primaryKey(),
  service: text("service").notNull(),
  body: blob("body", { mode: "buffer" }).notNull(),
  /** worker_lost, expired or caller_lost (journal.ts DeadReason). */
  reason: text("reason").notNull(),
  /** What happened last, in words. */
  detail: text("detail").notNull(),
  /** Times a worker was lost while holding it. */
  attempts: integer("attempts").notNull(),
  receivedAt: integer("received_at").notNull(),
  deadAt: integer("dead_at").notNull(),
  failures: text("failures").notNull(),
  /** Times it was replayed before (a replayed request that dies again comes back here). */
  replays: integer("replays").notNull(),
}, (table) => [index("dead_letters_dead_idx").on(table.deadAt)]);
