/**
 * The one-writer lock of a local state database: the state worker keeps all
 * of its database in memory and assumes it is the only writer (store.ts), so
 * a second worker on the same file would serve a diverging copy. The lock is
 * an OS file lock on `<database>.lock` (storage/file_lock.ts), held while
 * the worker runs. Readers such as `state-backup` do not take it.
 *
 * SQLite's own `locking_mode=EXCLUSIVE` is not used: in WAL mode it also
 * locks out readers in other processes, i.e. the online backup.
 *
 * @module
 */

import { type FileLock, lockDatabaseFile } from "../storage/file_lock.ts";

/** Raised when another process holds the lock. */
export class StateLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateLockedError";
  }
}

/** A held lock; release() lets the next worker in. */
export type StateLock = FileLock;

/** Takes the lock of the database file `database`, or throws {@link StateLockedError}. */
export function lockStateFile(database: string): Promise<StateLock> {
  return lockDatabaseFile(database, (path, pid) =>
    new StateLockedError(
      `state database '${database}' is in use by another state worker${
        pid ? ` (pid ${pid})` : ""
      }: its lock '${path}' is held. Run one state worker per libSQL file; several workers need a shared store`,
    ));
}
