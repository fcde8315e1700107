/**
 * The one-writer lock of a local state database: the state worker keeps all
 * of its database in memory and assumes it is the only writer (store.ts), so
 * a second worker on the same file would serve a diverging copy. The lock is
 * an OS file lock (flock) on `<database>.lock`, held while the worker runs;
 * the OS drops it when the process ends, even by SIGKILL, so it never goes
 * stale. Readers such as `state-backup` do not take it.
 *
 * SQLite's own `locking_mode=EXCLUSIVE` is not used: in WAL mode it also
 * locks out readers in other processes, i.e. the online backup.
 *
 * @module
 */

/** Raised when another process holds the lock. */
export class StateLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateLockedError";
  }
}

/** A held lock; release() lets the next worker in. */
export interface StateLock {
  readonly path: string;
  release(): void;
}

/** Takes the lock of the database file `database`, or throws {@link StateLockedError}. */
export async function lockStateFile(database: string): Promise<StateLock> {
  const path = `${database}.lock`;
  // Before the database is opened (which would create its folder): create it here.
  const slash = database.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(database.slice(0, slash), { recursive: true });
  const file = await Deno.open(path, { read: true, write: true, create: true });
  let locked = false;
  try {
    locked = await file.tryLock(true);
  } finally {
    if (!locked) file.close();
  }
  if (!locked) {
    const holder = (await Deno.readTextFile(path).catch(() => "")).trim();
    throw new StateLockedError(
      `state database '${database}' is in use by another state worker${
        /^\d+$/.test(holder) ? ` (pid ${holder})` : ""
      }: its lock '${path}' is held. Run one state worker per libSQL file; several workers need a shared store`,
    );
  }
  // The holder's pid, for the message above: information only, the flock is the lock.
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      // Closing the file drops the flock.
      file.close();
    },
  };
}
