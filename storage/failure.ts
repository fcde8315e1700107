/**
 * What kind of storage failure an error is (SQLite result codes as libSQL
 * reports them, or the OS error underneath), so a failing write can be named
 * to clients and logged once per kind.
 *
 * @module
 */

/** Failure classes of a database write. */
export type StorageFailure =
  | "STORAGE_FULL"
  | "STORAGE_READONLY"
  | "STORAGE_IO"
  | "STORAGE_BUSY"
  | "STORAGE_ERROR";

const PATTERNS: ReadonlyArray<readonly [StorageFailure, RegExp, RegExp]> = [
  // [class, code (SQLite's or the OS's), message]
  ["STORAGE_FULL", /^(SQLITE_FULL|ENOSPC)/, /database or disk is full|No space left on device/],
  ["STORAGE_READONLY", /^(SQLITE_READONLY|EROFS)/, /readonly database|Read-only file system/],
  ["STORAGE_IO", /^(SQLITE_IOERR|SQLITE_CORRUPT|EIO)/, /disk I\/O error|malformed/],
  ["STORAGE_BUSY", /^(SQLITE_BUSY|SQLITE_LOCKED)/, /database is locked/],
];

/**
 * The class of a storage error, looking through its causes (Drizzle wraps
 * the driver's error); STORAGE_ERROR when none matches.
 */
export function storageFailure(error: unknown): StorageFailure {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    for (const [failure, codes, message] of PATTERNS) {
      if (typeof code === "string" && codes.test(code)) return failure;
      if (message.test(e.message)) return failure;
    }
  }
  return "STORAGE_ERROR";
}

/** Whether an error says the disk or the database is full: SQLITE_FULL or ENOSPC. */
export function storageFull(error: unknown): boolean {
  return storageFailure(error) === "STORAGE_FULL";
}
