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
  /** Connections at most: one for the commits, the others for reads (at least 2). @default 8 */
  poolSize?: number;
}

/** A client for reads with Drizzle over it. */
export interface PgReads {
  sql: postgres.Sql;
  db: PgStateDatabase;
}

/**
 * The connections of an open PostgreSQL state database: a pool for reads
 * (and pings), and one connection the commits run on, one transaction at a
 * time, BEGIN and COMMIT being plain statements on it.
 *
 * Not `sql.begin` or `sql.reserve` on a pool: after a lost connection
 * postgres.js may send a transaction's next statement on the dead socket,
 * which throws outside any promise (the process ends). And a client whose
 * connection was lost is replaced ({@link renew}), not reused: under Deno,
 * postgres.js learns of a reset connection (`error`) a turn before it is
 * closed (`close`), and a statement sent in between is neither sent again nor
 * failed; it waits for good (seen with pg_terminate_backend under load).
 */
export class PgStateConnections {
  /** The URL without its password, for logs. */
  readonly url: string;
  readonly #connect: (max: number) => postgres.Sql;
  readonly #readers: number;
  #reads: PgReads;
  #commits: postgres.Sql;
  #closed = false;

  constructor(url: string, poolSize: number) {
    this.url = redactUrl(url);
    this.#connect = (max) =>
      postgres(url, {
        max,
        onnotice: () => {},
        connect_timeout: 5,
        // Seconds before reconnecting after a failed connection: postgres.js's default
        // grows to 20 s while the server is away, so requests would keep failing for
        // that long after it is back; at most 1 s here.
        backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
        connection: { application_name: "plantd-state" },
      });
    this.#readers = Math.max(1, poolSize - 1);
    this.#reads = this.#newReads();
    this.#commits = this.#connect(1);
  }

  #newReads(): PgReads {
    const sql = this.#connect(this.#readers);
    return { sql, db: drizzle(sql, { schema }) };
  }

  get reads(): PgReads {
    return this.#reads;
  }

  get commits(): postgres.Sql {
    return this.#commits;
  }

  /**
   * `used` lost a connection: statements from now on go to a new client, and
   * the old one is ended at once, failing what still waits on it.
   */
  renew(used: postgres.Sql): void {
    if (this.#closed) return;
    if (used === this.#commits) this.#commits = this.#connect(1);
    else if (used === this.#reads.sql) this.#reads = this.#newReads();
    else return;
    used.end({ timeout: 0 }).catch(() => {});
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#commits.end({ timeout: 5 });
    await this.#reads.sql.end({ timeout: 5 });
  }
}

/** Connects and applies pending migrations; rejects when the server cannot be reached. */
export async function openPgStateDatabase(options: PgOpenOptions): Promise<PgStateConnections> {
  await migrateLocked(options.url, {
    folder: MIGRATIONS,
    table: MIGRATIONS_TABLE,
    lock: [STATE_LOCK_CLASS, MIGRATION_LOCK],
  });
  return new PgStateConnections(options.url, options.poolSize ?? 8);
}
