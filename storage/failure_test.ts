import assert from "node:assert/strict";
import { storageFailure, storageFull } from "./failure.ts";

/** An error as libSQL throws it: SQLite's result code in `code`, its text in the message. */
function libsqlError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

Deno.test("storage errors are classed by SQLite code, OS code or text, through wrapping causes", () => {
  assert.equal(
    storageFailure(libsqlError("SQLITE_FULL", "database or disk is full")),
    "STORAGE_FULL",
  );
  assert.equal(
    storageFailure(Object.assign(new Error("write"), { code: "ENOSPC" })),
    "STORAGE_FULL",
  );
  assert.equal(
    storageFailure(libsqlError("SQLITE_READONLY", "attempt to write a readonly database")),
    "STORAGE_READONLY",
  );
  assert.equal(storageFailure(libsqlError("SQLITE_IOERR_WRITE", "disk I/O error")), "STORAGE_IO");
  assert.equal(storageFailure(libsqlError("SQLITE_BUSY", "database is locked")), "STORAGE_BUSY");
  // Drizzle wraps the driver's error: the cause decides.
  const wrapped = new Error("Failed query: insert …", {
    cause: libsqlError("SQLITE_FULL", "database or disk is full"),
  });
  assert.equal(storageFailure(wrapped), "STORAGE_FULL");
  assert.ok(storageFull(wrapped));
  assert.equal(storageFailure(new Error("UNIQUE constraint failed")), "STORAGE_ERROR");
  assert.equal(storageFailure("not an error"), "STORAGE_ERROR");
  assert.ok(!storageFull(new Error("boom")));
});
