/**
 * Opens the state database (a local libSQL file by default, or a remote
 * libSQL server) and brings its schema up to date with the drizzle-kit
 * migrations in migrations/state.
 *
 * @module
 */
import { type Client, createClient } from "@libsql/client";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { migrate } from "drizzle-orm/libsql/migrator";
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
export function stateUrl(location: string): string {
  if (/^(file|libsql|https?|wss?):/.test(location) || location === ":memory:") return location;
  return `file:${location}`;
}

/** Opens the database, applies pragmas and pending migrations. */
export async function openStateDatabase(options: OpenOptions): Promise<OpenDatabase> {
  const url = stateUrl(options.location);
  const local = url.startsWith("file:") || url === ":memory:";
  if (url.startsWith("file:")) {
    const path = url.slice("file:".length);
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
    if (dir) await Deno.mkdir(dir, { recursive: true });
  }
  const client = createClient({ url, authToken: options.authToken });
  try {
    if (local) {
      await client.execute("PRAGMA journal_mode = WAL");
      await client.execute(
        `PRAGMA synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`,
      );
      await client.execute("PRAGMA busy_timeout = 5000");
    }
    const db = drizzle(client, { schema });
    await migrate(db, { migrationsFolder: MIGRATIONS });
    return { db, client, url, local };
  } catch (error) {
    client.close();
    throw error;
  }
}
