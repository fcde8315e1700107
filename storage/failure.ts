/**
 * What kind of storage failure an error is (SQLite result codes as libSQL
 * reports them, PostgreSQL SQLSTATEs as postgres.js reports them, postgres.js's
 * own connection codes, or the OS error underneath), so a failing write can be
 * named to clients and logged once per kind.
 *
 * @module
 */

/** Failure classes of a database write. */
export type StorageFailure =
  | "STORAGE_FULL"
  | "STORAGE_READONLY"
  | "STORAGE_IO"
  | "STORAGE_BUSY"
  | "STORAGE_UNAVAILABLE"
  | "STORAGE_ERROR";

const PATTERNS: ReadonlyArray<readonly [StorageFailure, RegExp, RegExp]> = [
  // [class, code (SQLite's, PostgreSQL's SQLSTATE, postgres.js's or the OS's), message]
  [
    "STORAGE_FULL",
    // 53100 disk_full; 54000 is a program limit, not a full disk.
    /^(SQLITE_FULL|ENOSPC|53100$)/,
    /database or disk is full|No space left on device/,
  ],
  [
    "STORAGE_READONLY",
    // 25006 read_only_sql_transaction (a standby, default_transaction_read_only).
    /^(SQLITE_READONLY|EROFS|25006$)/,
    /readonly database|Read-only file system/,
  ],
  [
    "STORAGE_IO",
    // 58030 io_error, XX001 data_corrupted, XX002 index_corrupted.
    /^(SQLITE_IOERR|SQLITE_CORRUPT|EIO|58030$|XX001$|XX002$)/,
    /disk I\/O error|malformed/,
  ],
  [
    "STORAGE_BUSY",
    // 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available,
    // 53300 too_many_connections: given back after the retries ran out.
    /^(SQLITE_BUSY|SQLITE_LOCKED|40001$|40P01$|55P03$|53300$)/,
    /database is locked/,
  ],
  [
    "STORAGE_UNAVAILABLE",
    // The server cannot be reached or went away: class 08 connection exceptions,
    // 57P01-57P03 (shut down, crashed, starting up), postgres.js's connection
    // codes and the OS's.
    /^(08...$|57P0[123]$|CONNECT_TIMEOUT|CONNECTION_(CLOSED|ENDED|DESTROYED)|ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)/,
    /Connection refused|connection reset|terminating connection/i,
  ],
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

/** Whether an error says the disk or the database is full: SQLITE_FULL, ENOSPC or 53100. */
export function storageFull(error: unknown): boolean {
  return storageFailure(error) === "STORAGE_FULL";
}
