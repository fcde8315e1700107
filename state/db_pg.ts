/**
 * Opens the state database on PostgreSQL (postgres.js under Drizzle) and
 * brings its schema up to date with the drizzle-kit migrations in
 * migrations/state-pg, under an advisory lock so that workers starting
 * together on an empty database take turns.
 *
 * @module
 */
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { migrateLocked, redactUrl } from "../storage/postgres.ts";
import * as schema from "./schema_pg.ts";

export type PgStateDatabase = PostgresJsDatabase<typeof schema>;

/**
 * The first key of every advisory lock the state store takes ("plnt"): the
 * second is {@link MIGRATION_LOCK} or a scope's lock (store_pg.ts).
 */
export const STATE_LOCK_CLASS = 0x706c6e74;
/** The second key of the migration lock; scope locks use the other values. */
export const MIGRATION_LOCK = 0;

const MIGRATIONS = new URL("../migrations/state-pg", import.meta.url).pathname;
/** Drizzle's bookkeeping table of these migrations (the metrics store has its own). */
const MIGRATIONS_TABLE = "__drizzle_migrations_state";

/** Options of {@link openPgStateDatabase}. */
export interface PgOpenOptions {
  /** `postgres://user:password@host:5432/database` (or `postgresql://`). */
  url: string;
  /** Connections at most: one for the commit in progress, the others for reads. @default 8 */
  poolSize?: number;
}

/** An open PostgreSQL state database. */
export interface OpenPgDatabase {
  db: PgStateDatabase;
  sql: postgres.Sql;
  /** The URL without its password, for logs. */
  url: string;
  close(): Promise<void>;
}

/** Connects and applies pending migrations; rejects when the server cannot be reached. */
export async function openPgStateDatabase(options: PgOpenOptions): Promise<OpenPgDatabase> {
  await migrateLocked(options.url, {
    folder: MIGRATIONS,
    table: MIGRATIONS_TABLE,
    lock: [STATE_LOCK_CLASS, MIGRATION_LOCK],
  });
  const sql = postgres(options.url, {
    max: options.poolSize ?? 8,
    onnotice: () => {},
    connect_timeout: 5,
    // Seconds before reconnecting after a failed connection: postgres.js's default
    // grows to 20 s while the server is away, so requests would keep failing for
    // that long after it is back; at most 1 s here.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
    connection: { application_name: "plantd-state" },
  });
  return {
    db: drizzle(sql, { schema }),
    sql,
    url: redactUrl(options.url),
    async close() {
      await sql.end({ timeout: 5 });
    },
  };
}
