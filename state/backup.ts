/**
 * Online backup of a local state database: `VACUUM INTO` writes a consistent
 * snapshot (one read transaction in WAL mode) while the service keeps
 * writing. Restore is a file copy while the service is stopped (docs/state.md).
 *
 * @module
 */
import { createClient } from "@libsql/client";
import { isPostgresUrl } from "../storage/postgres.ts";
import { stateUrl } from "./db.ts";

/** Raised when a backup cannot be made. */
export class BackupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BackupError";
  }
}

/** Copies the database at `location` into `target`, which must not exist yet. */
export async function backupState(location: string, target: string): Promise<void> {
  if (isPostgresUrl(location)) {
    // Not the location itself in the message: the URL may hold a password.
    throw new BackupError(
      "Backups apply to local files; a PostgreSQL state store is backed up with pg_dump or the server's own backups",
    );
  }
  const url = stateUrl(location);
  if (!url.startsWith("file:")) {
    throw new BackupError(
      `Backups apply to local files; '${location}' is a server: use its backups`,
    );
  }
  const path = url.slice("file:".length);
  try {
    await Deno.stat(path);
  } catch {
    throw new BackupError(`No state database at '${path}'`);
  }
  try {
    await Deno.lstat(target);
    throw new BackupError(`'${target}' exists already: choose a new file`);
  } catch (error) {
    if (error instanceof BackupError) throw error;
  }
  const client = createClient({ url });
  try {
    await client.execute("PRAGMA busy_timeout = 5000");
    await client.execute({ sql: "VACUUM INTO ?", args: [target] });
  } catch (error) {
    throw new BackupError(`Backup of '${path}' failed: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    client.close();
  }
}
