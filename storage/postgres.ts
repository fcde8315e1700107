/**
 * Shared pieces of the PostgreSQL stores: telling a PostgreSQL URL from a
 * libSQL location, hiding its password in logs, and applying drizzle-kit
 * migrations under a session advisory lock, so several processes starting
 * at once on an empty database do not race each other's `CREATE`s.
 *
 * @module
 */
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";

/** Whether a configured database location is a PostgreSQL URL. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** A URL with its password (in the authority or a `password=` parameter) hidden, for logs. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, "$1***@").replace(/([?&]password=)[^&]*/gi, "$1***");
}

/** Options of {@link migrateLocked}. */
export interface LockedMigration {
  /** Folder of the drizzle-kit migrations. */
  folder: string;
  /**
   * Drizzle's bookkeeping table (in schema `drizzle`): one per set of
   * migrations, since Drizzle's migrator skips every migration older than
   * the newest one recorded in its table, whichever set that one came from.
   */
  table: string;
  /** The advisory lock's two keys: a class for the application, an id for this set. */
  lock: readonly [number, number];
}

/**
 * Applies pending migrations on a connection of its own that holds a session
 * advisory lock meanwhile: a second process waits for the first, then finds
 * nothing left to do.
 */
export async function migrateLocked(url: string, migration: LockedMigration): Promise<void> {
  const sql = postgres(url, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 5,
    connection: { application_name: "plantd-migrate" },
  });
  try {
    const [classId, objectId] = migration.lock;
    await sql`select pg_advisory_lock(${classId}::int4, ${objectId}::int4)`;
    try {
      await migrate(drizzle(sql), {
        migrationsFolder: migration.folder,
        migrationsTable: migration.table,
      });
    } finally {
      await sql`select pg_advisory_unlock(${classId}::int4, ${objectId}::int4)`.catch(() => {});
    }
  } finally {
    // The lock is a session's: ending the connection releases it in any case.
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}
