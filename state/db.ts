/**
 * Opens the state database (a local libSQL file by default, or a remote
 * libSQL server) and brings its schema up to date with the drizzle-kit
 * migrations in migrations/state.
 *
 * @module
 */
import type { Client } from "@libsql/client";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { libsqlUrl, openLibsql } from "../storage/libsql.ts";
import * as schema from "./schema.ts";

export type StateDatabase = LibSQLDatabase<typeof schema>;

/** Options of {@link openStateDatabase}. */
export interface OpenOptions {
  /** A file path, `file:` URL, `:memory:`, or a `libsql://`, `http(s)://`, `ws(s)://` server URL. */
  location: string;
  /** Token for a remote libSQL server. */
  authToken?: string;
  /**
   * SQLite `synchronous` for local files: "full" syncs the WAL on every commit
   * (survives power loss), "normal" only survives process crashes. @default "full"
   */
  synchronous?: "full" | "normal";
}

/** An open database with its client, for closing. */
export interface OpenDatabase {
  db: StateDatabase;
  client: Client;
  /** The URL given to libSQL. */
  url: string;
  /** True for a local file (backups with VACUUM INTO apply). */
  local: boolean;
}

const MIGRATIONS = new URL("../migrations/state", import.meta.url).pathname;

/** Turns a configured location into a libSQL URL. */
export const stateUrl = libsqlUrl;

/** Opens the database, applies pragmas and pending migrations. */
export async function openStateDatabase(options: OpenOptions): Promise<OpenDatabase> {
  const { client, url, local } = await openLibsql({
    location: options.location,
    authToken: options.authToken,
    synchronous: options.synchronous ?? "full",
    migrations: MIGRATIONS,
  });
  return { db: drizzle(client, { schema }), client, url, local };
}
