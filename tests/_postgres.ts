/**
 * A fresh PostgreSQL database per test on the machine's server
 * (127.0.0.1:5432, trust auth; PLANTD_TEST_PG_URL overrides the admin URL),
 * dropped afterwards whatever happened. Never a mock.
 *
 * @module
 */
import postgres from "postgres";

/** Where test databases are created (the maintenance database of the server). */
export const PG_ADMIN_URL = Deno.env.get("PLANTD_TEST_PG_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";

/** A database made for one test. */
export interface TestDatabase {
  name: string;
  url: string;
  /** A connection to it (closed by drop()). */
  sql: postgres.Sql;
  /** Admin connection to the server (closed by drop()). */
  admin: postgres.Sql;
  drop(): Promise<void>;
}

/** The URL of database `name` on the test server. */
export function databaseUrl(name: string): string {
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A random database name (not created). */
export function randomDatabaseName(): string {
  return `plantd_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
}

/** Creates a database with a random name, unless `create` is false (it is still dropped). */
export async function freshDatabase(create = true): Promise<TestDatabase> {
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  const name = randomDatabaseName();
  if (create) await admin.unsafe(`create database ${name}`);
  const url = databaseUrl(name);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  return {
    name,
    url,
    sql,
    admin,
    async drop() {
      await sql.end({ timeout: 1 });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end({ timeout: 1 });
    },
  };
}

/** Runs `body` with a fresh database, dropping it at the end. */
export async function withDatabase(
  body: (db: TestDatabase) => Promise<void>,
  create = true,
): Promise<void> {
  const db = await freshDatabase(create);
  try {
    await body(db);
  } finally {
    await db.drop();
  }
}

/** True when the server can install TimescaleDB. */
export async function timescaleOnServer(): Promise<boolean> {
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await admin`select 1 from pg_available_extensions where name = 'timescaledb'`;
    return rows.length > 0;
  } finally {
    await admin.end({ timeout: 1 });
  }
}
