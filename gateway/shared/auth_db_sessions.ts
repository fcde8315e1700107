/**
 * Login sessions (refresh tokens) in the auth database, and the choice of
 * session store (`session_store`).
 *
 * {@link authDbSessions} keeps each refresh token as a row of the auth
 * database (auth/schema.ts, auth/schema_pg.ts `refresh_tokens`), so every
 * gateway on that database knows every login, durably, whatever Redis does.
 * A refresh claims its token with one conditional UPDATE in the database:
 * when a token is presented twice, at one gateway or at two, exactly one
 * claim is the first and the other is reuse, which ends the family. When the
 * database cannot be reached the calls reject ({@link AuthStoreUnavailableError},
 * 503): there is no fallback that could let a rotated token be used twice.
 *
 * @module
 */
import type { AuthStore } from "../../auth/store.ts";
import type { RedisLink } from "./redis.ts";
import { createSessions, type SessionStore } from "./sessions.ts";

/** Expired rows are deleted at most this often. */
const PRUNE_MS = 60_000;

/** Sessions as rows of the auth database. */
export function authDbSessions(store: AuthStore): SessionStore {
  let nextPrune = 0;
  const prune = () => {
    const now = Date.now();
    if (now < nextPrune) return;
    nextPrune = now + PRUNE_MS;
    store.pruneRefreshTokens().catch(() => nextPrune = 0);
  };
  return {
    async put(id, record) {
      prune();
      if (record.expiresAt <= Date.now()) return await store.deleteRefreshToken(id);
      await store.putRefreshToken(id, record);
    },
    get: (id) => store.refreshToken(id),
    claim: (id) => store.claimRefreshToken(id),
    delete: (id) => store.deleteRefreshToken(id),
    deleteUser: (userId) => store.deleteRefreshTokens({ userId }),
    deleteFamily: (family) => store.deleteRefreshTokens({ family }),
    close: () => Promise.resolve(),
  };
}

/** Where sessions are kept (config `session_store`). */
export type SessionStoreKind = "auto" | "auth_db" | "redis" | "memory";

/**
 * The session store of `kind`; "auto" is the auth database when it is
 * PostgreSQL (shared by the gateways, so it is where they agree), else
 * Redis when configured, else this process.
 */
export function chooseSessions(
  kind: SessionStoreKind,
  store: AuthStore,
  link: RedisLink | undefined,
): { sessions: SessionStore; where: "auth_db" | "redis" | "memory" } {
  const where = kind === "auto"
    ? store.backend === "postgres" ? "auth_db" : link ? "redis" : "memory"
    : kind;
  if (where === "auth_db") return { sessions: authDbSessions(store), where };
  if (where === "redis") {
    if (!link) throw new Error("session_store is redis, but redis_url is not set");
    return { sessions: createSessions(link), where };
  }
  return { sessions: createSessions(), where };
}
