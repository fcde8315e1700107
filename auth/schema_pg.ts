/**
 * The gateway's security tables on PostgreSQL: the same tables, columns and
 * meanings as auth/schema.ts (libSQL), so one AuthStore serves both. The
 * single source of truth for drizzle-kit, which generates migrations/auth-pg
 * from this file (`deno task db:generate:auth-pg`).
 *
 * The tables live in their own schema, `plantd_auth`, so the auth database
 * may be a database that also holds state or metrics tables. Times are ms
 * since the epoch (bigint), as in libSQL; role lists are jsonb arrays.
 *
 * @module
 */
import { bigint, boolean, index, jsonb, pgSchema, text } from "drizzle-orm/pg-core";

export const authSchema = pgSchema("plantd_auth");

const ms = (name: string) => bigint(name, { mode: "number" });

/** A person or machine that logs in with a password. */
export const users = authSchema.table("users", {
  id: text("id").primaryKey(),
  username: text("username").notNull().unique(),
  /** argon2id in PHC string form. */
  passwordHash: text("password_hash").notNull(),
  roles: jsonb("roles").$type<string[]>().notNull(),
  disabled: boolean("disabled").notNull().default(false),
  /** Bumped by every change that ends the user's sessions; access tokens carry it as `sep`. */
  sessionEpoch: ms("session_epoch").notNull().default(0),
  createdAt: ms("created_at").notNull(),
  updatedAt: ms("updated_at").notNull(),
});

/** A role defined by admins; the built-in roles need no row. */
export const roles = authSchema.table("roles", {
  name: text("name").primaryKey(),
  permissions: jsonb("permissions").$type<string[]>().notNull(),
  updatedAt: ms("updated_at").notNull(),
});

/** A key for machines: `pk_<id>.<secret>`; only the SHA-256 of the secret is kept. */
export const apiKeys = authSchema.table("api_keys", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  secretHash: text("secret_hash").notNull(),
  roles: jsonb("roles").$type<string[]>().notNull(),
  createdBy: text("created_by").notNull(),
  createdAt: ms("created_at").notNull(),
  /** null: never expires. */
  expiresAt: ms("expires_at"),
  revokedAt: ms("revoked_at"),
});

/** Security events: authentication failures, denials, state changes, admin actions. */
export const auditEvents = authSchema.table("audit_events", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  time: ms("time").notNull(),
  actor: text("actor").notNull(),
  action: text("action").notNull(),
  target: text("target").notNull(),
  outcome: text("outcome").notNull(),
  ip: text("ip").notNull(),
  details: jsonb("details").$type<Record<string, unknown>>(),
}, (table) => [
  index("audit_events_time").on(table.time),
  index("audit_events_actor").on(table.actor, table.time),
  index("audit_events_action").on(table.action, table.time),
]);

/**
 * The revocation log every gateway reads past the last id it saw. Rows are
 * written under a transaction-scoped advisory lock (auth/store_pg.ts), so ids
 * become visible in the order they were given: a reader never skips a row
 * that commits after a higher id.
 */
export const revocations = authSchema.table("revocations", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  kind: text("kind").notNull(),
  subject: text("subject").notNull(),
  expiresAt: ms("expires_at").notNull(),
  createdAt: ms("created_at").notNull(),
}, (table) => [index("revocations_expires").on(table.expiresAt)]);

/** Refresh tokens of logins by their SHA-256; `rotated_at` marks a rotated one. */
export const refreshTokens = authSchema.table("refresh_tokens", {
  id: text("id").primaryKey(),
  userId: text("user_id").notNull(),
  username: text("username").notNull(),
  family: text("family").notNull(),
  createdAt: ms("created_at").notNull(),
  expiresAt: ms("expires_at").notNull(),
  rotatedAt: ms("rotated_at"),
}, (table) => [
  index("refresh_tokens_user").on(table.userId),
  index("refresh_tokens_family").on(table.family),
  index("refresh_tokens_expires").on(table.expiresAt),
]);
