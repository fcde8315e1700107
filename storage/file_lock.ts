/**
 * The one-writer lock of a local database file: an OS file lock (flock) on
 * `<database>.lock`, held while the process runs; the OS drops it when the
 * process ends, even by SIGKILL, so it never goes stale. The holder's pid is
 * written into the file for messages only: the flock is the lock.
 *
 * @module
 */

/** A held lock; release() lets the next writer in. */
export interface FileLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes the lock of `database`, or throws what `refused` makes of the
 * holder's pid (when the lock file names one).
 */
export async function lockDatabaseFile(
  database: string,
  refused: (lockPath: string, holderPid: string | undefined) => Error,
): Promise<FileLock> {
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
    throw refused(path, /^\d+$/.test(holder) ? holder : undefined);
  }
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
