/**
 * The gateway's security tables: users, roles, API keys, the audit log, the
 * revocation log and refresh tokens (libSQL; auth/schema_pg.ts mirrors it).
 * The single source of truth for drizzle-kit, which generates migrations/auth
 * from this file (`deno task db:generate:auth`).
 *
 * @module
 */
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** A person or machine that logs in with a password. Roles are a JSON array of role names. */
export const users = sqliteTable("users", {
  id: text("id").primaryKey(),
  username: text("username").notNull().unique(),
  /** argon2id in PHC string form. */
  passwordHash: text("password_hash").notNull(),
  roles: text("roles", { mode: "json" }).$type<string[]>().notNull(),
  disabled: integer("disabled", { mode: "boolean" }).notNull().default(false),
  /**
   * Bumped by every change that ends the user's sessions (disable, role or
   * password change); the gateway's access tokens carry it as `sep`.
   */
  sessionEpoch: integer("session_epoch").notNull().default(0),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/** A role defined by admins; the built-in roles (admin, operator, viewer) need no row. */
export const roles = sqliteTable("roles", {
  name: text("name").primaryKey(),
  permissions: text("permissions", { mode: "json" }).$type<string[]>().notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/** A key for machines: `pk_<id>_<secret>`; only the SHA-256 of the secret is kept. */
export const apiKeys = sqliteTable("api_keys", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  secretHash: text("secret_hash").notNull(),
  roles: text("roles", { mode: "json" }).$type<string[]>().notNull(),
  createdBy: text("created_by").notNull(),
  createdAt: integer("created_at").notNull(),
  /** ms since the epoch; null: never expires. */
  expiresAt: integer("expires_at"),
  revokedAt: integer("revoked_at"),
});

/** Security events: authentication failures, denials, state changes, admin actions. */
export const auditEvents = sqliteTable("audit_events", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  time: integer("time").notNull(),
  /** Who: `user:<name>`, `apikey:<id>`, `anonymous`. */
  actor: text("actor").notNull(),
  /** What: `auth.failure`, `access.denied`, `state.set`, `admin.user.create`, ... */
  action: text("action").notNull(),
  target: text("target").notNull(),
  outcome: text("outcome").notNull(),
  /** From where: the client's address. */
  ip: text("ip").notNull(),
  details: text("details", { mode: "json" }).$type<Record<string, unknown>>(),
}, (table) => [
  index("audit_events_time").on(table.time),
  index("audit_events_actor").on(table.actor, table.time),
  index("audit_events_action").on(table.action, table.time),
]);

/**
 * What every gateway must learn at once: a user's sessions ended (`user`,
 * subject = username) or one login session's access tokens revoked
 * (`session`, subject = its sid). Gateways read rows past the last id they
 * saw (gateway/auth/revocations.ts); rows are deleted after `expires_at`.
 */
export const revocations = sqliteTable("revocations", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  kind: text("kind").notNull(),
  subject: text("subject").notNull(),
  /** ms since the epoch: no token this row concerns is valid after it. */
  expiresAt: integer("expires_at").notNull(),
  createdAt: integer("created_at").notNull(),
}, (table) => [index("revocations_expires").on(table.expiresAt)]);

/**
 * Refresh tokens of logins (gateway/shared/auth_db_sessions.ts), by the
 * SHA-256 of the token. A rotated token stays, marked by `rotated_at`, until
 * it expires, so presenting it again is seen as reuse; the mark is set by a
 * conditional UPDATE, so of two refreshes with one token (on any gateways)
 * only one wins.
 */
export const refreshTokens = sqliteTable("refresh_tokens", {
  id: text("id").primaryKey(),
  userId: text("user_id").notNull(),
  username: text("username").notNull(),
  /** The login it descends from; also the `sid` of its access tokens. */
  family: text("family").notNull(),
  createdAt: integer("created_at").notNull(),
  expiresAt: integer("expires_at").notNull(),
  rotatedAt: integer("rotated_at"),
}, (table) => [
  index("refresh_tokens_user").on(table.userId),
  index("refresh_tokens_family").on(table.family),
  index("refresh_tokens_expires").on(table.expiresAt),
]);
