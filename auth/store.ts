/**
 * Users, roles, API keys, refresh tokens, the revocation log and the audit
 * log of the gateway: one API over two databases, chosen by `auth_db`.
 *
 * - libSQL (auth/store_libsql.ts): a file, the default, or a libsql:// server.
 * - PostgreSQL (auth/store_pg.ts): a `postgres://` URL, for several gateways
 *   sharing one auth database.
 *
 * This module holds what does not depend on the database: validation,
 * hashing, the role cache, batching of audit events, and the errors. Both
 * backends answer the same calls with the same rows, and this module turns
 * their failures into the same errors: a taken name is
 * {@link AuthStoreError} CONFLICT, a database that cannot be reached
 * {@link AuthStoreUnavailableError}. Secrets are stored hashed (see
 * secrets.ts); every query is built by Drizzle with bound parameters.
 *
 * @module
 */
import { isPostgresUrl, redactUrl } from "../storage/postgres.ts";
import type { ApiKeyRow, AuthBackend, NewRevocation, RefreshTokenRow, UserRow } from "./backend.ts";
import { causes } from "./backend.ts";
import { BUILTIN_ROLES, isPermission, permissionsOf } from "./permissions.ts";
import { inProcessHasher, type PasswordHasher } from "./hash_pool.ts";
import { constantTimeEqual, randomToken, sha256Hex } from "./secrets.ts";
import { openLibsqlAuth } from "./store_libsql.ts";
import { openPgAuth } from "./store_pg.ts";

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

/** A refresh token of a login, by its SHA-256 (gateway/shared/auth_db_sessions.ts). */
export interface RefreshTokenRecord {
  userId: string;
  username: string;
  /** The login it descends from (also the `sid` of its access tokens). */
  family: string;
  createdAt: number;
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
  /** `attempt`: written before a security-relevant change is made, which waits for it. */
  outcome: "success" | "denied" | "failure" | "attempt";
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

/**
 * The auth database cannot be reached (its server is down or away): nothing
 * was decided, the caller may retry. The gateway answers 503
 * AUTH_STORE_UNAVAILABLE.
 */
export class AuthStoreUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuthStoreUnavailableError";
  }
}

/** Options of {@link AuthStore.open}. */
export interface AuthStoreOptions {
  /**
   * PostgreSQL: open even when the server cannot be reached yet (calls fail
   * with {@link AuthStoreUnavailableError} until it can). @default false
   */
  lazy?: boolean;
  /** Told why a lazy open could not reach the server. */
  onUnreachable?: (error: AuthStoreUnavailableError) => void;
  /**
   * Queued audit events waiting to be written at most; past it the oldest are
   * dropped, counted. @default 10000
   */
  auditQueueMax?: number;
  /** Wait before writing queued audit events again after a failed write. @default 1000 */
  auditRetryMs?: number;
  /** Told of queued audit events dropped (the queue was full). */
  onAuditDropped?: (count: number) => void;
  /** Told of a failed write of queued audit events (they stay queued). */
  onAuditError?: (error: unknown, waiting: number) => void;
}

/** How the queue of audit events is doing (the gateway's `/healthz`). */
export interface AuditStatus {
  /** Events queued, not written yet. */
  waiting: number;
  /** Events dropped since start because the queue was full. */
  dropped: number;
  /** Why the last write failed, while writes fail. */
  failing?: string;
}

const USERNAME = /^[A-Za-z0-9._@-]{1,64}$/;
const ROLE = /^[a-z][a-z0-9_-]{0,63}$/;
/** Defined roles are re-read this often, so replicas see each other's changes. */
const ROLE_CACHE_MS = 5_000;

function userView(row: UserRow): UserView {
  return {
    id: row.id,
    username: row.username,
    roles: row.roles,
    disabled: row.disabled,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
  };
}

function keyView(row: ApiKeyRow): ApiKeyView {
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

function refreshRecord(row: RefreshTokenRow): RefreshTokenRecord {
  return {
    userId: row.userId,
    username: row.username,
    family: row.family,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
  };
}

/** The innermost reason of a driver error, without queries, parameters or passwords. */
function reason(error: unknown): string {
  let last: Error | undefined;
  for (const e of causes(error)) last = e;
  return redactUrl(last?.message ?? String(error));
}

/** The security database. */
export class AuthStore {
  readonly #backend: AuthBackend;
  readonly #hasher: PasswordHasher;
  /** Where the database is, with any password hidden. */
  readonly location: string;
  /** An argon2id hash of a random password, compared against for unknown users. */
  #dummyHash?: Promise<string>;
  #roles?: { at: number; map: Record<string, string[]> };
  #pendingAudit: AuditEvent[] = [];
  #flushing?: Promise<void>;
  /** The retry of a failed write, while one waits. */
  #retrying?: Promise<void>;
  #retryTimer?: ReturnType<typeof setTimeout>;
  #auditDropped = 0;
  /** Events of the write in progress. */
  #inFlight = 0;
  /** Writes of queued events run one at a time: this settles when the last one has. */
  #writes: Promise<void> = Promise.resolve();
  #auditFailing?: string;
  readonly #options: AuthStoreOptions;
  #closed = false;

  private constructor(
    backend: AuthBackend,
    hasher: PasswordHasher,
    location: string,
    options: AuthStoreOptions = {},
  ) {
    this.#backend = backend;
    this.#hasher = hasher;
    this.location = redactUrl(location);
    this.#options = options;
  }

  /**
   * Opens (and migrates) the database at `location`: a `postgres://` or
   * `postgresql://` URL, else libSQL (a file path, `file:`, or a server
   * URL with `authToken`). A server passes a {@link HashPool} as `hasher`,
   * so argon2id runs off its event loop.
   */
  static async open(
    location: string,
    authToken?: string,
    hasher: PasswordHasher = inProcessHasher,
    options: AuthStoreOptions = {},
  ): Promise<AuthStore> {
    if (!isPostgresUrl(location)) {
      return new AuthStore(await openLibsqlAuth(location, authToken), hasher, location, options);
    }
    const backend = await openPgAuth(location, {
      lazy: options.lazy,
      onUnreachable: (error) =>
        options.onUnreachable?.(
          new AuthStoreUnavailableError(`auth database unavailable: ${reason(error)}`, {
            cause: error,
          }),
        ),
    }).catch((error) => {
      throw new Error(`auth database ${redactUrl(location)}: ${reason(error)}`, { cause: error });
    });
    return new AuthStore(backend, hasher, location, options);
  }

  /** Which database holds the store. */
  get backend(): "libsql" | "postgres" {
    return this.#backend.kind;
  }

  /** A call to the database, its unreachability turned into {@link AuthStoreUnavailableError}. */
  async #call<T>(query: () => Promise<T>): Promise<T> {
    try {
      return await query();
    } catch (error) {
      if (this.#backend.isUnavailable(error)) {
        throw new AuthStoreUnavailableError(`auth database unavailable: ${reason(error)}`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  /** Resolves when the database answers; rejects with the reason (health checks). */
  ping(): Promise<void> {
    return this.#call(() => this.#backend.ping());
  }

  // --- roles

  /** Built-in and defined roles with their permissions (defined ones override built-ins). */
  async roles(): Promise<Record<string, string[]>> {
    if (this.#roles && Date.now() - this.#roles.at < ROLE_CACHE_MS) return this.#roles.map;
    const rows = await this.#call(() => this.#backend.roles());
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
    await this.#call(() => this.#backend.putRole({ name, permissions, updatedAt: Date.now() }));
    this.#roles = undefined;
  }

  async deleteRole(name: string): Promise<boolean> {
    const deleted = await this.#call(() => this.#backend.deleteRole(name));
    this.#roles = undefined;
    return deleted;
  }

  async #checkRoles(roles: string[]): Promise<void> {
    const known = await this.roles();
    const unknown = roles.find((r) => !(r in known));
    if (unknown !== undefined) {
      throw new AuthStoreError(
        "INVALID",
        `Unknown role '${unknown}' (roles: ${Object.keys(known).sort().join(", ")})`,
      );
    }
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
    const row: UserRow = {
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
    // With the user, a revocation: gateways that remember the name as deleted must read it again.
    await this.#call(() => this.#backend.insertUser(row, this.#userRevocation(username, now)))
      .catch((error) => {
        if (!this.#backend.isConflict(error)) throw error;
        throw new AuthStoreError("CONFLICT", `User '${username}' exists`);
      });
    return userView(row);
  }

  #userRevocation(username: string, now = Date.now()): NewRevocation {
    return {
      kind: "user",
      subject: username,
      expiresAt: now + USER_REVOCATION_KEEP_MS,
      createdAt: now,
    };
  }

  async users(): Promise<UserView[]> {
    return (await this.#call(() => this.#backend.users())).map(userView);
  }

  async user(username: string): Promise<UserView | undefined> {
    const row = await this.#call(() => this.#backend.user(username));
    return row ? userView(row) : undefined;
  }

  async countUsers(): Promise<number> {
    return await this.#call(() => this.#backend.countUsers());
  }

  /** The user when the password matches and the account is enabled. */
  async checkPassword(username: string, password: string): Promise<UserView | undefined> {
    const row = await this.#call(() => this.#backend.user(username));
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
      const rows = await this.#call(() => this.#backend.sessionStates(usernames.slice(i, i + 500)));
      for (const r of rows) states.set(r.username, { epoch: r.sessionEpoch, active: !r.disabled });
    }
    return states;
  }

  /** Records that one login session's access tokens (`sid`) are void until `expiresAt`. */
  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    await this.#call(() =>
      this.#backend.revoke({ kind: "session", subject: sid, expiresAt, createdAt: Date.now() })
    );
  }

  /** Revocations with an id above `after`, oldest first, still in force. */
  async revocationsAfter(after: number): Promise<Revocation[]> {
    const rows = await this.#call(() => this.#backend.revocationsAfter(after, Date.now(), 10_000));
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind === "user" ? "user" : "session",
      subject: r.subject,
      expiresAt: r.expiresAt,
    }));
  }

  /** Deletes revocations past their expiry. */
  async pruneRevocations(): Promise<void> {
    await this.#call(() => this.#backend.pruneRevocations(Date.now()));
  }

  async updateUser(
    username: string,
    change: { roles?: string[]; password?: string; disabled?: boolean },
  ): Promise<UserView> {
    if (change.roles) await this.#checkRoles(change.roles);
    if (change.password !== undefined && change.password.length < 8) {
      throw new AuthStoreError("INVALID", "Passwords have at least 8 characters");
    }
    const now = Date.now();
    const passwordHash = change.password !== undefined
      ? await this.#hasher.hash(change.password)
      : undefined;
    const ends = change.roles !== undefined || change.disabled !== undefined ||
      change.password !== undefined;
    // Every access token carries the epoch it was issued under: bumping it (with
    // a revocation row, in one transaction) voids them all on every gateway.
    const row = await this.#call(() =>
      this.#backend.updateUser(
        username,
        {
          updatedAt: now,
          ...(change.roles ? { roles: change.roles } : {}),
          ...(change.disabled !== undefined ? { disabled: change.disabled } : {}),
          ...(passwordHash !== undefined ? { passwordHash } : {}),
        },
        ends ? this.#userRevocation(username, now) : undefined,
      )
    );
    if (!row) throw new AuthStoreError("NOT_FOUND", `No user '${username}'`);
    return userView(row);
  }

  /** Deletes a user, revokes the API keys it created and voids its access tokens. */
  async deleteUser(username: string): Promise<UserView | undefined> {
    const row = await this.#call(() =>
      this.#backend.deleteUser(username, `user:${username}`, this.#userRevocation(username))
    );
    return row ? userView(row) : undefined;
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
    const row: ApiKeyRow = {
      id,
      name,
      secretHash: await sha256Hex(secret),
      roles,
      createdBy,
      createdAt: Date.now(),
      expiresAt,
      revokedAt: null,
    };
    await this.#call(() => this.#backend.insertApiKey(row)).catch((error) => {
      if (!this.#backend.isConflict(error)) throw error;
      throw new AuthStoreError("CONFLICT", `API key id '${id}' exists`);
    });
    return { key: `pk_${id}.${secret}`, view: keyView(row) };
  }

  /** The key's record when `key` is a valid, unrevoked, unexpired key. */
  async checkApiKey(key: string): Promise<ApiKeyView | undefined> {
    const match = /^pk_([A-Za-z0-9_-]{12})\.([A-Za-z0-9_-]{43})$/.exec(key);
    if (!match) return undefined;
    const row = await this.#call(() => this.#backend.apiKey(match[1]!));
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
    return (await this.#call(() => this.#backend.apiKeys())).map(keyView);
  }

  async revokeApiKey(id: string): Promise<boolean> {
    return await this.#call(() => this.#backend.revokeApiKey(id, Date.now()));
  }

  // --- refresh tokens

  /** Stores (or replaces, unrotated) the refresh token `id` of a login. */
  async putRefreshToken(id: string, record: RefreshTokenRecord): Promise<void> {
    await this.#call(() => this.#backend.putRefreshToken({ id, ...record, rotatedAt: null }));
  }

  /** The refresh token unless missing or expired (rotated ones are found). */
  async refreshToken(id: string): Promise<RefreshTokenRecord | undefined> {
    const row = await this.#call(() => this.#backend.refreshToken(id, Date.now()));
    return row ? refreshRecord(row) : undefined;
  }

  /**
   * Marks a refresh token rotated; `reused`: it was rotated before (by this
   * gateway or another), at `rotatedAt`. Undefined when missing or expired.
   */
  async claimRefreshToken(
    id: string,
  ): Promise<{ record: RefreshTokenRecord; reused: boolean; rotatedAt?: number } | undefined> {
    const claimed = await this.#call(() => this.#backend.claimRefreshToken(id, Date.now()));
    if (!claimed) return undefined;
    const record = refreshRecord(claimed.row);
    if (claimed.first) return { record, reused: false };
    return { record, reused: true, rotatedAt: claimed.row.rotatedAt ?? 0 };
  }

  async deleteRefreshToken(id: string): Promise<void> {
    await this.#call(() => this.#backend.deleteRefreshToken(id));
  }

  /** Deletes a user's or a login's refresh tokens; returns how many were unexpired. */
  async deleteRefreshTokens(by: { userId: string } | { family: string }): Promise<number> {
    return await this.#call(() => this.#backend.deleteRefreshTokens(by, Date.now()));
  }

  /** Deletes expired refresh tokens. */
  async pruneRefreshTokens(): Promise<void> {
    await this.#call(() => this.#backend.pruneRefreshTokens(Date.now()));
  }

  // --- audit

  /**
   * Queues an event; queued events are written together in one statement,
   * so a burst of audited requests costs one commit rather than one each.
   * Resolves once written; rejects when that write failed, the event staying
   * queued: written again every `auditRetryMs` until it goes in, or dropped,
   * counted, when more than `auditQueueMax` wait (the oldest first).
   */
  audit(event: AuditEvent): Promise<void> {
    this.#pendingAudit.push(event);
    this.#bound();
    // While writes fail, events wait for the retry rather than each trying.
    if (this.#retrying) return this.#retrying;
    this.#flushing ??= this.#serial(() => this.#flush());
    return this.#flushing;
  }

  /** Runs `write` after the writes before it have settled. */
  #serial(write: () => Promise<void>): Promise<void> {
    const run = this.#writes.then(write);
    this.#writes = run.then(() => {}, () => {});
    return run;
  }

  /**
   * Writes `event` at once, alone, and resolves only once it is stored: for
   * an `attempt` that a security-relevant change waits for. Rejects when it
   * cannot be written (the change must then not be made).
   */
  async auditNow(event: AuditEvent): Promise<void> {
    await this.#call(() =>
      this.#backend.insertAudit([{ ...event, details: event.details ?? null }])
    );
  }

  /** The queue of audit events: waiting, dropped, and why writes fail. */
  auditStatus(): AuditStatus {
    return {
      waiting: this.#pendingAudit.length + this.#inFlight,
      dropped: this.#auditDropped,
      ...(this.#auditFailing === undefined ? {} : { failing: this.#auditFailing }),
    };
  }

  /** Drops the oldest queued events beyond the bound. */
  #bound(): void {
    const over = this.#pendingAudit.length - (this.#options.auditQueueMax ?? 10_000);
    if (over <= 0) return;
    this.#pendingAudit.splice(0, over);
    this.#auditDropped += over;
    this.#options.onAuditDropped?.(over);
  }

  async #flush(): Promise<void> {
    const events = this.#pendingAudit.splice(0);
    this.#flushing = undefined;
    if (events.length === 0) return;
    this.#inFlight = events.length;
    try {
      await this.#call(() =>
        this.#backend.insertAudit(events.map((e) => ({ ...e, details: e.details ?? null })))
      );
      this.#auditFailing = undefined;
    } catch (error) {
      // Back in front of the events queued since, in order, within the bound.
      this.#pendingAudit.unshift(...events);
      this.#inFlight = 0;
      this.#bound();
      this.#auditFailing = reason(error);
      this.#options.onAuditError?.(error, this.#pendingAudit.length);
      this.#retry();
      throw error;
    } finally {
      this.#inFlight = 0;
    }
  }

  /** Writes the queue again after `auditRetryMs`, once. */
  #retry(): void {
    if (this.#retrying || this.#closed) return;
    this.#retrying = new Promise<void>((resolve, reject) => {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        const flushed = this.#serial(() => this.#flush());
        this.#retrying = undefined;
        flushed.then(resolve, reject);
      }, this.#options.auditRetryMs ?? 1000);
    });
    // Its failure is reported by onAuditError; callers that wait on it get it too.
    this.#retrying.catch(() => {});
  }

  /** Newest first. */
  async queryAudit(query: AuditQuery): Promise<(AuditEvent & { id: number })[]> {
    await this.#flushing?.catch(() => {}); // its failure was reported to its callers
    await this.#writes; // a retry too
    const rows = await this.#call(() => this.#backend.queryAudit(query));
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
    await this.#flushing?.catch(() => {});
    return await this.#call(() => this.#backend.pruneAudit(before));
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    await this.#flushing?.catch(() => {});
    await this.#writes;
    await this.#backend.close();
  }
}
