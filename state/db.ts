/**
 * Opens the state database (a local libSQL file by default, or a remote
 * libSQL server) and brings its schema up to date with the drizzle-kit
 * migrations in migrations/state.
 *
 * @module
 */
import type { Client } from "@libsql/client";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { libsqlUrl, localPath, openLibsql } from "../storage/libsql.ts";
import { lockStateFile } from "./lock.ts";
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
  /**
   * Largest size of a local database file in bytes (SQLite's max_page_count);
   * writes beyond it fail as storage full. 0: no limit but the disk's.
   */
  maxBytes?: number;
}

/** An open database with its client, for closing. */
export interface OpenDatabase {
  db: StateDatabase;
  client: Client;
  /** The URL given to libSQL. */
  url: string;
  /** True for a local file (backups with VACUUM INTO apply). */
  local: boolean;
  /** Closes the client and releases the file's lock. */
  close(): void;
}

const MIGRATIONS = new URL("../migrations/state", import.meta.url).pathname;

/** Turns a configured location into a libSQL URL. */
export const stateUrl = libsqlUrl;

/** Opens the database, applies pragmas and pending migrations. */
/**
 * Opens the database, applies pragmas and pending migrations. A local file is
 * locked first (lock.ts): a second worker on it fails with StateLockedError
 * before touching it.
 */
export async function openStateDatabase(options: OpenOptions): Promise<OpenDatabase> {
  const path = localPath(stateUrl(options.location));
  const lock = path ? await lockStateFile(path) : undefined;
  try {
    const { client, url, local } = await openLibsql({
      location: options.location,
      authToken: options.authToken,
      synchronous: options.synchronous ?? "full",
      migrations: MIGRATIONS,
    });
    if (local && options.maxBytes) {
      const [row] = (await client.execute("PRAGMA page_size")).rows;
      const pages = Math.max(1, Math.floor(options.maxBytes / Number(row?.[0] ?? 4096)));
      // PRAGMAs take no bound arguments: the value is an integer computed here.
      if (!Number.isSafeInteger(pages)) throw new RangeError(`max_db_bytes gives ${pages} pages`);
      await client.execute(`PRAGMA max_page_count = ${pages}`);
    }
    return {
      db: drizzle(client, { schema }),
      client,
      url,
      local,
      close() {
        client.close();
        lock?.release();
      },
    };
  } catch (error) {
    lock?.release();
    throw error;
  }
}
