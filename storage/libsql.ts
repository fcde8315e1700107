/**
 * The one way to open a libSQL database here (state, metrics, auth): a local
 * file by default, or a remote libSQL server URL; local files get WAL, a
 * busy timeout and the chosen `synchronous`, and every database is brought
 * up to date with its drizzle-kit migrations before use.
 *
 * @module
 */
import { type Client, createClient } from "@libsql/client";
import { drizzle } from "drizzle-orm/libsql";
import { migrate } from "drizzle-orm/libsql/migrator";

/** Turns a configured location (path, `file:`, `:memory:` or server URL) into a libSQL URL. */
export function libsqlUrl(location: string): string {
  if (/^(file|libsql|https?|wss?):/.test(location) || location === ":memory:") return location;
  return `file:${location}`;
}

/** The file behind a `file:` URL; undefined for servers and `:memory:`. */
export function localPath(url: string): string | undefined {
  return url.startsWith("file:") ? url.slice("file:".length) : undefined;
}

/** Options of {@link openLibsql}. */
export interface OpenLibsqlOptions {
  /** A file path, `file:` URL, `:memory:`, or a `libsql://`, `http(s)://`, `ws(s)://` server URL. */
  location: string;
  /** Token for a remote libSQL server. */
  authToken?: string;
  /**
   * SQLite `synchronous` for local files: "full" syncs the WAL on every commit
   * (survives power loss), "normal" only survives process crashes.
   */
  synchronous: "full" | "normal";
  /** Folder of the drizzle-kit migrations to apply. */
  migrations: string;
}

/** An open, migrated database. */
export interface OpenLibsql {
  client: Client;
  /** The URL given to libSQL. */
  url: string;
  /** True for a local file or `:memory:`. */
  local: boolean;
}

/** Opens (creating the file's directory) and migrates a libSQL database. */
export async function openLibsql(options: OpenLibsqlOptions): Promise<OpenLibsql> {
  const url = libsqlUrl(options.location);
  const path = localPath(url);
  if (path?.includes("/")) {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  }
  const local = path !== undefined || url === ":memory:";
  // One connection for a local file: the client pools connections, and the
  // PRAGMAs below (synchronous, busy_timeout, a caller's max_page_count) hold
  // for the connection that ran them only. Every call here is synchronous
  // inside SQLite (no interactive transactions), so one connection costs nothing.
  const client = createClient({
    url,
    authToken: options.authToken,
    ...(path !== undefined ? { concurrency: 1 } : {}),
  });
  try {
    if (local) {
      await client.execute("PRAGMA journal_mode = WAL");
      await client.execute(
        `PRAGMA synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`,
      );
      await client.execute("PRAGMA busy_timeout = 5000");
    }
    await migrate(drizzle(client), { migrationsFolder: options.migrations });
    return { client, url, local };
  } catch (error) {
    client.close();
    throw error;
  }
}
