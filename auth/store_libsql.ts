/**
 * The auth database on libSQL (a file, or a libsql:// server), migrated
 * from migrations/auth. Writes that go together are one batch: libSQL runs a
 * batch as one transaction on one connection, without other work between
 * its statements.
 *
 * @module
 */
import type { Client } from "@libsql/client";
import { and, desc, eq, gt, gte, inArray, isNull, lt, lte, type SQL, sql } from "drizzle-orm";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { openLibsql } from "../storage/libsql.ts";
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
import * as schema from "./schema.ts";

const MIGRATIONS = new URL("../migrations/auth", import.meta.url).pathname;

/** Errors of a libSQL server that cannot be reached (a local file has none of these). */
const UNREACHABLE = new Set(["HRANA_WEBSOCKET_ERROR", "HRANA_CLOSED_ERROR", "SERVER_ERROR"]);

/** Opens (and migrates) the libSQL auth database at `location`. */
export async function openLibsqlAuth(location: string, authToken?: string): Promise<AuthBackend> {
  const { client } = await openLibsql({
    location,
    authToken,
    synchronous: "full",
    migrations: MIGRATIONS,
  });
  return new LibsqlAuthBackend(client);
}

class LibsqlAuthBackend implements AuthBackend {
  readonly kind = "libsql" as const;
  readonly #client: Client;
  readonly #db: LibSQLDatabase<typeof schema>;

  constructor(client: Client) {
    this.#client = client;
    this.#db = drizzle(client, { schema });
  }

  async roles(): Promise<RoleRow[]> {
    return await this.#db.select().from(schema.roles);
  }

  async putRole(row: RoleRow): Promise<void> {
    await this.#db.insert(schema.roles).values(row).onConflictDoUpdate({
      target: schema.roles.name,
      set: { permissions: row.permissions, updatedAt: row.updatedAt },
    });
  }

  async deleteRole(name: string): Promise<boolean> {
    const rows = await this.#db.delete(schema.roles).where(eq(schema.roles.name, name))
      .returning();
    return rows.length > 0;
  }

  async insertUser(row: UserRow, revocation: NewRevocation): Promise<void> {
    await this.#db.batch([
      this.#db.insert(schema.users).values(row),
      this.#db.insert(schema.revocations).values(revocation),
    ]);
  }

  async users(): Promise<UserRow[]> {
    return await this.#db.select().from(schema.users).orderBy(schema.users.username);
  }

  async user(username: string): Promise<UserRow | undefined> {
    const [row] = await this.#db.select().from(schema.users).where(
      eq(schema.users.username, username),
    );
    return row;
  }

  async countUsers(): Promise<number> {
    const [row] = await this.#db.select({ n: sql<number>`count(*)` }).from(schema.users);
    return Number(row?.n ?? 0);
  }

  async sessionStates(usernames: string[]) {
    return await this.#db.select({
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
    if (revocation) set.sessionEpoch = sql`${schema.users.sessionEpoch} + 1` as unknown as number;
    const update = this.#db.update(schema.users).set(set).where(
      eq(schema.users.username, username),
    ).returning();
    if (!revocation) return (await update)[0];
    const [rows] = await this.#db.batch([
      update,
      this.#db.insert(schema.revocations).values(revocation),
    ]);
    return rows[0];
  }

  async deleteUser(
    username: string,
    createdBy: string,
    revocation: NewRevocation,
  ): Promise<UserRow | undefined> {
    const keys = schema.apiKeys;
    const [rows] = await this.#db.batch([
      this.#db.delete(schema.users).where(eq(schema.users.username, username)).returning(),
      this.#db.update(keys).set({ revokedAt: revocation.createdAt }).where(
        and(eq(keys.createdBy, createdBy), isNull(keys.revokedAt)),
      ),
      this.#db.insert(schema.revocations).values(revocation),
    ]);
    return rows[0];
  }

  async revoke(revocation: NewRevocation): Promise<void> {
    await this.#db.insert(schema.revocations).values(revocation);
  }

  async revocationsAfter(after: number, now: number, limit: number) {
    const t = schema.revocations;
    return await this.#db.select().from(t).where(and(gt(t.id, after), gt(t.expiresAt, now)))
      .orderBy(t.id).limit(limit);
  }

  async pruneRevocations(now: number): Promise<void> {
    await this.#db.delete(schema.revocations).where(lte(schema.revocations.expiresAt, now));
  }

  async insertApiKey(row: ApiKeyRow): Promise<void> {
    await this.#db.insert(schema.apiKeys).values(row);
  }

  async apiKey(id: string): Promise<ApiKeyRow | undefined> {
    const [row] = await this.#db.select().from(schema.apiKeys).where(
      and(eq(schema.apiKeys.id, id), isNull(schema.apiKeys.revokedAt)),
    );
    return row;
  }

  async apiKeys(): Promise<ApiKeyRow[]> {
    return await this.#db.select().from(schema.apiKeys).orderBy(schema.apiKeys.createdAt);
  }

  async revokeApiKey(id: string, at: number): Promise<boolean> {
    const rows = await this.#db.update(schema.apiKeys).set({ revokedAt: at }).where(
      and(eq(schema.apiKeys.id, id), isNull(schema.apiKeys.revokedAt)),
    ).returning();
    return rows.length > 0;
  }

  async insertAudit(rows: NewAudit[]): Promise<void> {
    await this.#db.insert(schema.auditEvents).values(rows);
  }

  async queryAudit(filter: AuditFilter): Promise<AuditRow[]> {
    const t = schema.auditEvents;
    const conditions: SQL[] = [];
    if (filter.actor) conditions.push(eq(t.actor, filter.actor));
    if (filter.action) conditions.push(eq(t.action, filter.action));
    if (filter.from !== undefined) conditions.push(gte(t.time, filter.from));
    if (filter.to !== undefined) conditions.push(lte(t.time, filter.to));
    if (filter.before !== undefined) conditions.push(lt(t.id, filter.before));
    return await this.#db.select().from(t).where(and(...conditions)).orderBy(desc(t.id))
      .limit(filter.limit);
  }

  async pruneAudit(before: number): Promise<number> {
    const rows = await this.#db.delete(schema.auditEvents).where(
      lt(schema.auditEvents.time, before),
    ).returning({ id: schema.auditEvents.id });
    return rows.length;
  }

  async putRefreshToken(row: RefreshTokenRow): Promise<void> {
    const { id: _, ...rest } = row;
    await this.#db.insert(schema.refreshTokens).values(row).onConflictDoUpdate({
      target: schema.refreshTokens.id,
      set: rest,
    });
  }

  async refreshToken(id: string, now: number): Promise<RefreshTokenRow | undefined> {
    const t = schema.refreshTokens;
    const [row] = await this.#db.select().from(t).where(and(eq(t.id, id), gt(t.expiresAt, now)));
    return row;
  }

  async claimRefreshToken(id: string, now: number) {
    const t = schema.refreshTokens;
    const [marked] = await this.#db.update(t).set({ rotatedAt: now }).where(
      and(eq(t.id, id), isNull(t.rotatedAt), gt(t.expiresAt, now)),
    ).returning();
    if (marked) return { row: marked, first: true };
    const row = await this.refreshToken(id, now);
    return row ? { row, first: false } : undefined;
  }

  async deleteRefreshToken(id: string): Promise<void> {
    await this.#db.delete(schema.refreshTokens).where(eq(schema.refreshTokens.id, id));
  }

  async deleteRefreshTokens(
    by: { userId: string } | { family: string },
    now: number,
  ): Promise<number> {
    const t = schema.refreshTokens;
    const rows = await this.#db.delete(t).where(
      "userId" in by ? eq(t.userId, by.userId) : eq(t.family, by.family),
    ).returning({ expiresAt: t.expiresAt });
    return rows.filter((r) => r.expiresAt > now).length;
  }

  async pruneRefreshTokens(now: number): Promise<void> {
    await this.#db.delete(schema.refreshTokens).where(lte(schema.refreshTokens.expiresAt, now));
  }

  async ping(): Promise<void> {
    await this.#client.execute("SELECT 1");
  }

  isConflict(error: unknown): boolean {
    for (const e of causes(error)) {
      const code = String((e as { code?: unknown }).code ?? "");
      if (/^SQLITE_CONSTRAINT_(UNIQUE|PRIMARYKEY)$/.test(code)) return true;
      if (/UNIQUE constraint failed/.test(e.message)) return true;
    }
    return false;
  }

  isUnavailable(error: unknown): boolean {
    for (const e of causes(error)) {
      const code = (e as { code?: unknown }).code;
      if (typeof code === "string" && UNREACHABLE.has(code)) return true;
      if (e instanceof Deno.errors.ConnectionRefused) return true;
    }
    return false;
  }

  close(): Promise<void> {
    this.#client.close();
    return Promise.resolve();
  }
}
