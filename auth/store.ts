/**
 * Users, roles, API keys and the audit log in libSQL (Drizzle), migrated from
 * migrations/auth. Secrets are stored hashed (see secrets.ts); every query is
 * built by Drizzle with bound parameters.
 *
 * @module
 */
import type { Client } from "@libsql/client";
import { and, desc, eq, gt, gte, inArray, isNull, lt, lte, type SQL, sql } from "drizzle-orm";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { openLibsql } from "../storage/libsql.ts";
import { BUILTIN_ROLES, isPermission, permissionsOf } from "./permissions.ts";
import * as schema from "./schema.ts";
import { inProcessHasher, type PasswordHasher } from "./hash_pool.ts";
import { constantTimeEqual, randomToken, sha256Hex } from "./secrets.ts";

const MIGRATIONS = new URL("../migrations/auth", import.meta.url).pathname;

/** A user as shown to admins (never with the hash). */
export interface UserView {
  id: string;
  username: string;
  roles: string[];
  disabled: boolean;
  created_at: number;
  updated_at: number;
}

/** An API key as shown to admins (never with the secret). */
export interface ApiKeyView {
  id: string;
  name: string;
  roles: string[];
  created_by: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  /** The username of the user who created it, while that user exists. */
  owner?: string;
}

/** Whether a user's sessions may go on, and the epoch its access tokens must carry. */
export interface SessionState {
  epoch: number;
  /** False when the user is disabled (a deleted user has no state). */
  active: boolean;
}

/** A row of the revocation log (see schema.ts `revocations`). */
export interface Revocation {
  id: number;
  kind: "user" | "session";
  subject: string;
  expiresAt: number;
}

/** How long a `user` revocation row stays: gateways poll every second or two. */
const USER_REVOCATION_KEEP_MS = 600_000;

/** One audit event. */
export interface AuditEvent {
  time: number;
  actor: string;
  action: string;
  target: string;
  outcome: "success" | "denied" | "failure";
  ip: string;
  details?: Record<string, unknown>;
}

/** Filters of {@link AuthStore.queryAudit}. */
export interface AuditQuery {
  actor?: string;
  action?: string;
  from?: number;
  to?: number;
  /** Only events with a smaller id (paging backwards). */
  before?: number;
  limit: number;
}

/** A rule broken by a request of an admin. */
export class AuthStoreError extends Error {
  constructor(readonly code: "CONFLICT" | "NOT_FOUND" | "INVALID", message: string) {
    super(message);
    this.name = "AuthStoreError";
  }
}

const USERNAME = /^[A-Za-z0-9._@-]{1,64}$/;
const ROLE = /^[a-z][a-z0-9_-]{0,63}$/;
/** Defined roles are re-read this often, so replicas see each other's changes. */
const ROLE_CACHE_MS = 5_000;

function userView(row: typeof schema.users.$inferSelect): UserView {
  return {
    id: row.id,
    username: row.username,
    roles: row.roles,
    disabled: row.disabled,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
  };
}

function keyView(row: typeof schema.apiKeys.$inferSelect): ApiKeyView {
  return {
    id: row.id,
    name: row.name,
    roles: row.roles,
    created_by: row.createdBy,
    created_at: row.createdAt,
    expires_at: row.expiresAt,
    revoked_at: row.revokedAt,
  };
}

/** The security database. */
export class AuthStore {
  readonly #client: Client;
  readonly #db: LibSQLDatabase<typeof schema>;
  readonly #hasher: PasswordHasher;
  /** An argon2id hash of a random password, compared against for unknown users. */
  #dummyHash?: Promise<string>;
  #roles?: { at: number; map: Record<string, string[]> };
  #pendingAudit: AuditEvent[] = [];
  #flushing?: Promise<void>;

  private constructor(client: Client, hasher: PasswordHasher) {
    this.#client = client;
    this.#hasher = hasher;
    this.#db = drizzle(client, { schema });
  }

  /**
   * Opens (and migrates) the database at `location`. A server passes a
   * {@link HashPool} as `hasher`, so argon2id runs off its event loop.
   */
  static async open(
    location: string,
    authToken?: string,
    hasher: PasswordHasher = inProcessHasher,
  ): Promise<AuthStore> {
    const { client } = await openLibsql({
      location,
      authToken,
      synchronous: "full",
      migrations: MIGRATIONS,
    });
    return new AuthStore(client, hasher);
  }

  // --- roles

  /** Built-in and defined roles with their permissions (defined ones override built-ins). */
  async roles(): Promise<Record<string, string[]>> {
    if (this.#roles && Date.now() - this.#roles.at < ROLE_CACHE_MS) return this.#roles.map;
    const rows = await this.#db.select().from(schema.roles);
    const map: Record<string, string[]> = { ...BUILTIN_ROLES };
    for (const row of rows) map[row.name] = row.permissions;
    this.#roles = { at: Date.now(), map };
    return map;
  }

  /** Permissions of a list of role names. */
  async permissionsOf(roles: string[]): Promise<string[]> {
    return permissionsOf(roles, await this.roles());
  }

  async putRole(name: string, permissions: string[]): Promise<void> {
    if (!ROLE.test(name)) throw new AuthStoreError("INVALID", `Role name '${name}' is not valid`);
    const bad = permissions.find((p) => !isPermission(p));
    if (bad !== undefined) throw new AuthStoreError("INVALID", `'${bad}' is not a permission`);
    await this.#db.insert(schema.roles).values({ name, permissions, updatedAt: Date.now() })
      .onConflictDoUpdate({
        target: schema.roles.name,
        set: { permissions, updatedAt: Date.now() },
      });
    this.#roles = undefined;
  }

  async deleteRole(name: string): Promise<boolean> {
    const rows = await this.#db.delete(schema.roles).where(eq(schema.roles.name, name))
      .returning();
    this.#roles = undefined;
    return rows.length > 0;
  }

  async #checkRoles(roles: string[]): Promise<void> {
    const known = await this.roles();
    const unknown = roles.find((r) => !(r in known));
    if (unknown !== undefined) throw new AuthStoreError("INVALID", `Unknown role '${unknown}'`);
  }

  // --- users

  async createUser(username: string, password: string, roles: string[]): Promise<UserView> {
    if (!USERNAME.test(username)) {
      throw new AuthStoreError("INVALID", "Usernames are 1-64 letters, digits and . _ @ -");
    }
    if (password.length < 8) {
      throw new AuthStoreError("INVALID", "Passwords have at least 8 characters");
    }
    await this.#checkRoles(roles);
    const now = Date.now();
    const row = {
      id: crypto.randomUUID(),
      username,
      passwordHash: await this.#hasher.hash(password),
      roles,
      disabled: false,
      // Not 0: a user deleted and created again must not revive the old tokens.
      sessionEpoch: now,
      createdAt: now,
      updatedAt: now,
    };
    const inserted = await this.#db.insert(schema.users).values(row).onConflictDoNothing()
      .returning();
    if (inserted.length === 0) {
      throw new AuthStoreError("CONFLICT", `User '${username}' exists`);
    }
    // Gateways that remember the name as deleted must read it again.
    await this.#revoke("user", username, now + USER_REVOCATION_KEEP_MS);
    return userView(row);
  }

  async users(): Promise<UserView[]> {
    return (await this.#db.select().from(schema.users).orderBy(schema.users.username)).map(
      userView,
    );
  }

  async user(username: string): Promise<UserView | undefined> {
    const [row] = await this.#db.select().from(schema.users).where(
      eq(schema.users.username, username),
    );
    return row ? userView(row) : undefined;
  }

  async countUsers(): Promise<number> {
    return (await this.#db.select({ id: schema.users.id }).from(schema.users)).length;
  }

  /** The user when the password matches and the account is enabled. */
  async checkPassword(username: string, password: string): Promise<UserView | undefined> {
    const [row] = await this.#db.select().from(schema.users).where(
      eq(schema.users.username, username),
    );
    // Hash even for unknown users, so timing does not tell which names exist.
    const hash = row?.passwordHash ?? await this.#dummy();
    const ok = await this.#hasher.verify(password, hash);
    return row && ok && !row.disabled ? userView(row) : undefined;
  }

  #dummy(): Promise<string> {
    this.#dummyHash ??= this.#hasher.hash(randomToken(16));
    // A refused hash (the pool is full) is tried again next time.
    this.#dummyHash.catch(() => this.#dummyHash = undefined);
    return this.#dummyHash;
  }

  /** Session states of users by name; deleted users are missing. */
  async sessionStates(usernames: string[]): Promise<Map<string, SessionState>> {
    const states = new Map<string, SessionState>();
    for (let i = 0; i < usernames.length; i += 500) {
      const rows = await this.#db.select({
        username: schema.users.username,
        epoch: schema.users.sessionEpoch,
        disabled: schema.users.disabled,
      }).from(schema.users).where(inArray(schema.users.username, usernames.slice(i, i + 500)));
      for (const r of rows) states.set(r.username, { epoch: r.epoch, active: !r.disabled });
    }
    return states;
  }

  /** Records that one login session's access tokens (`sid`) are void until `expiresAt`. */
  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    await this.#revoke("session", sid, expiresAt);
  }

  async #revoke(kind: Revocation["kind"], subject: string, expiresAt: number): Promise<void> {
    await this.#db.insert(schema.revocations).values({
      kind,
      subject,
      expiresAt,
      createdAt: Date.now(),
    });
  }

  /** Revocations with an id above `after`, oldest first, still in force. */
  async revocationsAfter(after: number): Promise<Revocation[]> {
    const t = schema.revocations;
    const rows = await this.#db.select().from(t).where(
      and(gt(t.id, after), gt(t.expiresAt, Date.now())),
    ).orderBy(t.id).limit(10_000);
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind === "user" ? "user" : "session",
      subject: r.subject,
      expiresAt: r.expiresAt,
    }));
  }

  /** Deletes revocations past their expiry. */
  async pruneRevocations(): Promise<void> {
    await this.#db.delete(schema.revocations).where(lte(schema.revocations.expiresAt, Date.now()));
  }

  async updateUser(
    username: string,
    change: { roles?: string[]; password?: string; disabled?: boolean },
  ): Promise<UserView> {
    if (change.roles) await this.#checkRoles(change.roles);
    if (change.password !== undefined && change.password.length < 8) {
      throw new AuthStoreError("INVALID", "Passwords have at least 8 characters");
    }
    const set: Partial<typeof schema.users.$inferInsert> = { updatedAt: Date.now() };
    if (change.roles) set.roles = change.roles;
    if (change.disabled !== undefined) set.disabled = change.disabled;
    if (change.password !== undefined) {
      set.passwordHash = await this.#hasher.hash(change.password);
    }
    const ends = change.roles !== undefined || change.disabled !== undefined ||
      change.password !== undefined;
    // Every access token carries the epoch it was issued under: bumping it voids them all.
    if (ends) set.sessionEpoch = sql`${schema.users.sessionEpoch} + 1` as unknown as number;
    const [row] = await this.#db.update(schema.users).set(set).where(
      eq(schema.users.username, username),
    ).returning();
    if (!row) throw new AuthStoreError("NOT_FOUND", `No user '${username}'`);
    if (ends) await this.#revoke("user", username, Date.now() + USER_REVOCATION_KEEP_MS);
    return userView(row);
  }

  /** Deletes a user, revokes the API keys it created and voids its access tokens. */
  async deleteUser(username: string): Promise<UserView | undefined> {
    const [row] = await this.#db.delete(schema.users).where(eq(schema.users.username, username))
      .returning();
    if (!row) return undefined;
    await this.#db.update(schema.apiKeys).set({ revokedAt: Date.now() }).where(
      and(eq(schema.apiKeys.createdBy, `user:${username}`), isNull(schema.apiKeys.revokedAt)),
    );
    await this.#revoke("user", username, Date.now() + USER_REVOCATION_KEEP_MS);
    return userView(row);
  }

  // --- API keys

  /** A new key; the returned `key` is shown once and never stored. */
  async createApiKey(
    name: string,
    roles: string[],
    createdBy: string,
    expiresAt: number | null = null,
  ): Promise<{ key: string; view: ApiKeyView }> {
    await this.#checkRoles(roles);
    const id = randomToken(9);
    const secret = randomToken(32);
    const row = {
      id,
      name,
      secretHash: await sha256Hex(secret),
      roles,
      createdBy,
      createdAt: Date.now(),
      expiresAt,
      revokedAt: null,
    };
    await this.#db.insert(schema.apiKeys).values(row);
    return { key: `pk_${id}.${secret}`, view: keyView(row) };
  }

  /** The key's record when `key` is a valid, unrevoked, unexpired key. */
  async checkApiKey(key: string): Promise<ApiKeyView | undefined> {
    const match = /^pk_([A-Za-z0-9_-]{12})\.([A-Za-z0-9_-]{43})$/.exec(key);
    if (!match) return undefined;
    const [row] = await this.#db.select().from(schema.apiKeys).where(
      and(eq(schema.apiKeys.id, match[1]!), isNull(schema.apiKeys.revokedAt)),
    );
    const hash = await sha256Hex(match[2]!);
    if (!row || !constantTimeEqual(hash, row.secretHash)) return undefined;
    if (row.expiresAt !== null && row.expiresAt <= Date.now()) return undefined;
    // A key works only while the user who created it may act.
    if (!row.createdBy.startsWith("user:")) return keyView(row);
    const owner = row.createdBy.slice("user:".length);
    const state = (await this.sessionStates([owner])).get(owner);
    if (state && !state.active) return undefined;
    return { ...keyView(row), ...(state ? { owner } : {}) };
  }

  async apiKeys(): Promise<ApiKeyView[]> {
    return (await this.#db.select().from(schema.apiKeys).orderBy(schema.apiKeys.createdAt)).map(
      keyView,
    );
  }

  async revokeApiKey(id: string): Promise<boolean> {
    const rows = await this.#db.update(schema.apiKeys).set({ revokedAt: Date.now() }).where(
      and(eq(schema.apiKeys.id, id), isNull(schema.apiKeys.revokedAt)),
    ).returning();
    return rows.length > 0;
  }

  // --- audit

  /**
   * Queues an event; queued events are written together in one transaction,
   * so a burst of audited requests costs one commit rather than one each.
   */
  audit(event: AuditEvent): Promise<void> {
    this.#pendingAudit.push(event);
    this.#flushing ??= Promise.resolve().then(() => this.#flush());
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    const events = this.#pendingAudit.splice(0);
    this.#flushing = undefined;
    if (events.length === 0) return;
    await this.#db.insert(schema.auditEvents).values(
      events.map((e) => ({ ...e, details: e.details ?? null })),
    );
  }

  /** Newest first. */
  async queryAudit(query: AuditQuery): Promise<(AuditEvent & { id: number })[]> {
    const conditions: SQL[] = [];
    const t = schema.auditEvents;
    if (query.actor) conditions.push(eq(t.actor, query.actor));
    if (query.action) conditions.push(eq(t.action, query.action));
    if (query.from !== undefined) conditions.push(gte(t.time, query.from));
    if (query.to !== undefined) conditions.push(lte(t.time, query.to));
    if (query.before !== undefined) conditions.push(lt(t.id, query.before));
    await this.#flushing;
    const rows = await this.#db.select().from(t).where(and(...conditions)).orderBy(desc(t.id))
      .limit(query.limit);
    return rows.map((r) => ({
      id: r.id,
      time: r.time,
      actor: r.actor,
      action: r.action,
      target: r.target,
      outcome: r.outcome as AuditEvent["outcome"],
      ip: r.ip,
      ...(r.details ? { details: r.details } : {}),
    }));
  }

  /** Deletes audit events older than `before` (ms since the epoch); returns how many. */
  async pruneAudit(before: number): Promise<number> {
    await this.#flushing;
    const rows = await this.#db.delete(schema.auditEvents).where(
      lt(schema.auditEvents.time, before),
    ).returning({ id: schema.auditEvents.id });
    return rows.length;
  }

  async close(): Promise<void> {
    await this.#flushing;
    this.#client.close();
  }
}
