/**
 * What the auth store needs from a database: the rows of auth/schema.ts
 * (libSQL, auth/store_libsql.ts) or auth/schema_pg.ts (PostgreSQL,
 * auth/store_pg.ts), read and written with the same meaning. Validation,
 * hashing, caches and errors are the store's (auth/store.ts); a backend only
 * keeps rows, makes the writes that must go together atomic, and says which
 * of its errors mean "taken" or "unreachable".
 *
 * @module
 */

export interface UserRow {
  id: string;
  username: string;
  passwordHash: string;
  roles: string[];
  disabled: boolean;
  sessionEpoch: number;
  createdAt: number;
  updatedAt: number;
}

export interface RoleRow {
  name: string;
  permissions: string[];
  updatedAt: number;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  secretHash: string;
  roles: string[];
  createdBy: string;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

export interface AuditRow {
  id: number;
  time: number;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  ip: string;
  details: Record<string, unknown> | null;
}

export type NewAudit = Omit<AuditRow, "id">;

export interface RevocationRow {
  id: number;
  kind: string;
  subject: string;
  expiresAt: number;
  createdAt: number;
}

export type NewRevocation = Omit<RevocationRow, "id">;

/** One refresh token (by its SHA-256) of a login. */
export interface RefreshTokenRow {
  id: string;
  userId: string;
  username: string;
  family: string;
  createdAt: number;
  expiresAt: number;
  /** When it was rotated; null while it is the family's newest. */
  rotatedAt: number | null;
}

/** Filters of an audit query (times in ms since the epoch). */
export interface AuditFilter {
  actor?: string;
  action?: string;
  from?: number;
  to?: number;
  before?: number;
  limit: number;
}

/** A user's fields an update may change. */
export type UserChange = Partial<Pick<UserRow, "roles" | "disabled" | "passwordHash">> & {
  updatedAt: number;
};

/** The rows of the auth database. */
export interface AuthBackend {
  readonly kind: "libsql" | "postgres";

  roles(): Promise<RoleRow[]>;
  putRole(row: RoleRow): Promise<void>;
  deleteRole(name: string): Promise<boolean>;

  /** Inserts a user and records `revocation`, together; a taken name is a conflict error. */
  insertUser(row: UserRow, revocation: NewRevocation): Promise<void>;
  users(): Promise<UserRow[]>;
  user(username: string): Promise<UserRow | undefined>;
  countUsers(): Promise<number>;
  sessionStates(
    usernames: string[],
  ): Promise<{ username: string; sessionEpoch: number; disabled: boolean }[]>;
  /**
   * Applies `change`; with `revocation`, also bumps the session epoch and
   * records the revocation, in one transaction. Undefined: no such user.
   */
  updateUser(
    username: string,
    change: UserChange,
    revocation?: NewRevocation,
  ): Promise<UserRow | undefined>;
  /**
   * Deletes a user, revokes (at `revocation.createdAt`) the API keys
   * `createdBy` made and records the revocation, in one transaction.
   */
  deleteUser(
    username: string,
    createdBy: string,
    revocation: NewRevocation,
  ): Promise<UserRow | undefined>;

  revoke(revocation: NewRevocation): Promise<void>;
  /** Rows with an id above `after` still in force at `now`, oldest first. */
  revocationsAfter(after: number, now: number, limit: number): Promise<RevocationRow[]>;
  pruneRevocations(now: number): Promise<void>;

  /** A taken id is a conflict error. */
  insertApiKey(row: ApiKeyRow): Promise<void>;
  /** The key unless revoked. */
  apiKey(id: string): Promise<ApiKeyRow | undefined>;
  apiKeys(): Promise<ApiKeyRow[]>;
  revokeApiKey(id: string, at: number): Promise<boolean>;

  insertAudit(rows: NewAudit[]): Promise<void>;
  /** Newest first. */
  queryAudit(filter: AuditFilter): Promise<AuditRow[]>;
  pruneAudit(before: number): Promise<number>;

  /** Inserts or replaces a refresh token (replacing clears its rotation mark). */
  putRefreshToken(row: RefreshTokenRow): Promise<void>;
  /** The token unless expired at `now` (rotated ones too). */
  refreshToken(id: string, now: number): Promise<RefreshTokenRow | undefined>;
  /**
   * Marks the token rotated at `now` with one conditional UPDATE, so of two
   * claims only one finds it unmarked. `first`: this call marked it.
   */
  claimRefreshToken(
    id: string,
    now: number,
  ): Promise<{ row: RefreshTokenRow; first: boolean } | undefined>;
  deleteRefreshToken(id: string): Promise<void>;
  /** Deletes tokens matching; returns how many were unexpired at `now`. */
  deleteRefreshTokens(by: { userId: string } | { family: string }, now: number): Promise<number>;
  pruneRefreshTokens(now: number): Promise<void>;

  /** A round trip to the database (health). */
  ping(): Promise<void>;
  /** Whether an error is a uniqueness violation. */
  isConflict(error: unknown): boolean;
  /** Whether an error means the database cannot be reached (as opposed to a bad query or row). */
  isUnavailable(error: unknown): boolean;
  close(): Promise<void>;
}

/** The errors an error wraps, outermost first (Drizzle wraps the driver's). */
export function* causes(error: unknown): Generator<Error> {
  for (let e = error, depth = 0; e instanceof Error && depth < 6; e = e.cause, depth++) yield e;
}
