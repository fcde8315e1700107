/**
 * The auth database on PostgreSQL through postgres.js and Drizzle, shared by
 * several gateways: migrated from migrations/auth-pg under a session advisory
 * lock (two gateways starting together do not race), and written so that
 * what one gateway does is right whatever the others do at the same time:
 *
 * - a taken username or key id is the unique violation (23505) of the insert;
 * - every write of the revocation log runs in a transaction holding a
 *   transaction-scoped advisory lock, so revocation ids are committed in
 *   the order they are drawn and a gateway reading past the last id it saw
 *   never skips one (identity values are drawn before commit, so without
 *   the lock a lower id could appear after a higher one was read);
 * - a refresh token is claimed with one conditional UPDATE (`rotated_at IS
 *   NULL`): of two refreshes with one token, on any gateways, one wins.
 *
 * When the server cannot be reached the store still opens (migrating at the
 * first call that reaches it), so a gateway started before its database
 * serves what it can and says why the rest fails.
 *
 * @module
 */
import { and, desc, eq, gt, gte, inArray, isNull, lt, lte, type SQL, sql } from "drizzle-orm";
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import { migrateLocked } from "../storage/postgres.ts";
import postgres from "postgres";
import type {
  ApiKeyRow,
  AuditFilter,
  AuditRow,
  AuthBackend,
  NewAudit,
  NewRevocation,
  RefreshTokenRow,
  RoleRow,
  UserChange,
  UserRow,
} from "./backend.ts";
import { causes } from "./backend.ts";
import * as schema from "./schema_pg.ts";

const MIGRATIONS = new URL("../migrations/auth-pg", import.meta.url).pathname;
/** Its own table: the metrics (and any other) migrations may share the database. */
const MIGRATIONS_TABLE = "__plantd_auth_migrations";

/** Advisory lock keys: "plan" in ASCII, then what is locked. */
const LOCK_CLASS = 0x706c616e;
const LOCK_MIGRATE = 1;
const LOCK_REVOCATIONS = 2;

/** Driver and socket errors of a server that cannot be reached. */
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/** Options of {@link openPgAuth}. */
export interface PgAuthOptions {
  /**
   * Open even when the server cannot be reached (`onUnreachable` is told),
   * migrating at the first call that reaches it. @default false
   */
  lazy?: boolean;
  onUnreachable?: (error: unknown) => void;
  /** Connections of the pool. @default 5 */
  connections?: number;
}

type Db = PostgresJsDatabase<typeof schema>;
type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

function client(url: string, max: number, name: string): postgres.Sql {
  return postgres(url, {
    max,
    onnotice: () => {},
    connect_timeout: 5,
    idle_timeout: 60,
    // postgres.js waits up to 20 s between reconnections by default: a login
    // would wait that long for its 503, and as long after the server is back.
    backoff: (retries: number) => Math.min(retries * 0.1, 1),
    connection: { application_name: name },
  });
}

/** Opens the auth database at a `postgres://` URL, migrating it unless lazy and unreachable. */
export async function openPgAuth(url: string, options: PgAuthOptions = {}): Promise<AuthBackend> {
  const backend = new PgAuthBackend(url, options.connections ?? 5);
  try {
    await backend.ready();
  } catch (error) {
    if (options.lazy && backend.isUnavailable(error)) {
      options.onUnreachable?.(error);
    } else {
      await backend.close();
      throw error;
    }
  }
  return backend;
}

class PgAuthBackend implements AuthBackend {
  readonly kind = "postgres" as const;
  readonly #url: string;
  readonly #sql: postgres.Sql;
  readonly #db: Db;
  #migrated = false;
  #migrating?: Promise<void>;

  constructor(url: string, connections: number) {
    this.#url = url;
    this.#sql = client(url, connections, "plantd-gateway-auth");
    this.#db = drizzle(this.#sql, { schema });
  }

  /** Migrates once (again at the next call after a failure). */
  ready(): Promise<void> {
    if (this.#migrated) return Promise.resolve();
    return this.#migrating ??= this.#migrate().then(() => {
      this.#migrated = true;
    }).finally(() => this.#migrating = undefined);
  }

  /**
   * Migrations on a connection of their own holding the migration lock:
   * a second gateway waits, then finds nothing left to apply.
   */
  async #migrate(): Promise<void> {
    await migrateLocked(this.#url, {
      folder: MIGRATIONS,
      table: MIGRATIONS_TABLE,
      lock: [LOCK_CLASS, LOCK_MIGRATE],
    });
  }

  /** The database, migrated. */
  async #ready(): Promise<Db> {
    if (!this.#migrated) await this.ready();
    return this.#db;
  }

  /** `body` and the revocation in one transaction, under the revocation lock. */
  async #revoking<T>(revocation: NewRevocation, body: (tx: Tx) => Promise<T>): Promise<T> {
    const db = await this.#ready();
    return await db.transaction(async (tx) => {
      await tx.execute(sql.raw(`select pg_advisory_xact_lock(${LOCK_CLASS}, ${LOCK_REVOCATIONS})`));
      const result = await body(tx);
      await tx.insert(schema.revocations).values(revocation);
      return result;
    });
  }

  async roles(): Promise<RoleRow[]> {
    return await (await this.#ready()).select().from(schema.roles);
  }

  async putRole(row: RoleRow): Promise<void> {
    await (await this.#ready()).insert(schema.roles).values(row).onConflictDoUpdate({
      target: schema.roles.name,
      set: { permissions: row.permissions, updatedAt: row.updatedAt },
    });
  }

  async deleteRole(name: string): Promise<boolean> {
    const rows = await (await this.#ready()).delete(schema.roles).where(
      eq(schema.roles.name, name),
    ).returning();
    return rows.length > 0;
  }

  async insertUser(row: UserRow, revocation: NewRevocation): Promise<void> {
    await this.#revoking(revocation, async (tx) => {
      await tx.insert(schema.users).values(row);
    });
  }

  async users(): Promise<UserRow[]> {
    return await (await this.#ready()).select().from(schema.users).orderBy(schema.users.username);
  }

  async user(username: string): Promise<UserRow | undefined> {
    const [row] = await (await this.#ready()).select().from(schema.users).where(
      eq(schema.users.username, username),
    );
    return row;
  }

  async countUsers(): Promise<number> {
    const [row] = await (await this.#ready()).select({ n: sql<string>`count(*)` }).from(
      schema.users,
    );
    return Number(row?.n ?? 0);
  }

  async sessionStates(usernames: string[]) {
    return await (await this.#ready()).select({
      username: schema.users.username,
      sessionEpoch: schema.users.sessionEpoch,
      disabled: schema.users.disabled,
    }).from(schema.users).where(inArray(schema.users.username, usernames));
  }

  async updateUser(
    username: string,
    change: UserChange,
    revocation?: NewRevocation,
  ): Promise<UserRow | undefined> {
    const set: Partial<typeof schema.users.$inferInsert> = { ...change };
    const update = async (db: Db | Tx) =>
      (await db.update(schema.users).set(set).where(eq(schema.users.username, username))
        .returning())[0];
    if (!revocation) return await update(await this.#ready());
    set.sessionEpoch = sql`${schema.users.sessionEpoch} + 1` as unknown as number;
    return await this.#revoking(revocation, update);
  }

  async deleteUser(
    username: string,
    createdBy: string,
    revocation: NewRevocation,
  ): Promise<UserRow | undefined> {
    const keys = schema.apiKeys;
    return await this.#revoking(revocation, async (tx) => {
      const [row] = await tx.delete(schema.users).where(eq(schema.users.username, username))
        .returning();
      await tx.update(keys).set({ revokedAt: revocation.createdAt }).where(
        and(eq(keys.createdBy, createdBy), isNull(keys.revokedAt)),
      );
      return row;
    });
  }

  async revoke(revocation: NewRevocation): Promise<void> {
    await this.#revoking(revocation, () => Promise.resolve());
  }

  async revocationsAfter(after: number, now: number, limit: number) {
    const t = schema.revocations;
    return await (await this.#ready()).select().from(t).where(
      and(gt(t.id, after), gt(t.expiresAt, now)),
    ).orderBy(t.id).limit(limit);
  }

  async pruneRevocations(now: number): Promise<void> {
    await (await this.#ready()).delete(schema.revocations).where(
      lte(schema.revocations.expiresAt, now),
    );
  }

  async insertApiKey(row: ApiKeyRow): Promise<void> {
    await (await this.#ready()).insert(schema.apiKeys).values(row);
  }

  async apiKey(id: string): Promise<ApiKeyRow | undefined> {
    const [row] = await (await this.#ready()).select().from(schema.apiKeys).where(
      and(eq(schema.apiKeys.id, id), isNull(schema.apiKeys.revokedAt)),
    );
    return row;
  }

  async apiKeys(): Promise<ApiKeyRow[]> {
    return await (await this.#ready()).select().from(schema.apiKeys).orderBy(
      schema.apiKeys.createdAt,
    );
  }

  async revokeApiKey(id: string, at: number): Promise<boolean> {
    const rows = await (await this.#ready()).update(schema.apiKeys).set({ revokedAt: at }).where(
      and(eq(schema.apiKeys.id, id), isNull(schema.apiKeys.revokedAt)),
    ).returning();
    return rows.length > 0;
  }

  async insertAudit(rows: NewAudit[]): Promise<void> {
    await (await this.#ready()).insert(schema.auditEvents).values(rows);
  }

  async queryAudit(filter: AuditFilter): Promise<AuditRow[]> {
    const t = schema.auditEvents;
    const conditions: SQL[] = [];
    if (filter.actor) conditions.push(eq(t.actor, filter.actor));
    if (filter.action) conditions.push(eq(t.action, filter.action));
    if (filter.from !== undefined) conditions.push(gte(t.time, filter.from));
    if (filter.to !== undefined) conditions.push(lte(t.time, filter.to));
    if (filter.before !== undefined) conditions.push(lt(t.id, filter.before));
    return await (await this.#ready()).select().from(t).where(and(...conditions))
      .orderBy(desc(t.id)).limit(filter.limit);
  }

  async pruneAudit(before: number): Promise<number> {
    const result = await (await this.#ready()).delete(schema.auditEvents).where(
      lt(schema.auditEvents.time, before),
    );
    return result.count;
  }

  async putRefreshToken(row: RefreshTokenRow): Promise<void> {
    const { id: _, ...rest } = row;
    await (await this.#ready()).insert(schema.refreshTokens).values(row).onConflictDoUpdate({
      target: schema.refreshTokens.id,
      set: rest,
    });
  }

  async refreshToken(id: string, now: number): Promise<RefreshTokenRow | undefined> {
    const t = schema.refreshTokens;
    const [row] = await (await this.#ready()).select().from(t).where(
      and(eq(t.id, id), gt(t.expiresAt, now)),
    );
    return row;
  }

  async claimRefreshToken(id: string, now: number) {
    const t = schema.refreshTokens;
    // Of two concurrent claims the second waits for the first's row lock,
    // then finds rotated_at set and updates nothing.
    const [marked] = await (await this.#ready()).update(t).set({ rotatedAt: now }).where(
      and(eq(t.id, id), isNull(t.rotatedAt), gt(t.expiresAt, now)),
    ).returning();
    if (marked) return { row: marked, first: true };
    const row = await this.refreshToken(id, now);
    return row ? { row, first: false } : undefined;
  }

  async deleteRefreshToken(id: string): Promise<void> {
    await (await this.#ready()).delete(schema.refreshTokens).where(
      eq(schema.refreshTokens.id, id),
    );
  }

  async deleteRefreshTokens(
    by: { userId: string } | { family: string },
    now: number,
  ): Promise<number> {
    const t = schema.refreshTokens;
    const rows = await (await this.#ready()).delete(t).where(
      "userId" in by ? eq(t.userId, by.userId) : eq(t.family, by.family),
    ).returning({ expiresAt: t.expiresAt });
    return rows.filter((r) => r.expiresAt > now).length;
  }

  async pruneRefreshTokens(now: number): Promise<void> {
    await (await this.#ready()).delete(schema.refreshTokens).where(
      lte(schema.refreshTokens.expiresAt, now),
    );
  }

  async ping(): Promise<void> {
    await this.#ready();
    await this.#sql`select 1`;
  }

  isConflict(error: unknown): boolean {
    for (const e of causes(error)) {
      if (e instanceof postgres.PostgresError && e.code === "23505") return true;
    }
    return false;
  }

  isUnavailable(error: unknown): boolean {
    for (const e of causes(error)) {
      const code = (e as { code?: unknown }).code;
      if (e instanceof postgres.PostgresError) {
        // 08: connection exception; 57P01-03: shutting down or starting; 53300: too many connections.
        return /^(08|57P0[123]|53300)/.test(code as string);
      }
      if (typeof code === "string" && UNREACHABLE_CODES.has(code)) return true;
      if (e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.ConnectionReset) {
        return true;
      }
    }
    return false;
  }

  async close(): Promise<void> {
    await this.#migrating?.catch(() => {});
    await this.#sql.end({ timeout: 5 });
  }
}
