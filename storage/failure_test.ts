import assert from "node:assert/strict";
import postgres from "postgres";
import { freePort, waitFor } from "../tests/_helpers.ts";
import { withDatabase } from "../tests/_postgres.ts";
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

Deno.test("PostgreSQL's errors are classed: read-only, a terminated session, a refused connection", async () => {
  await withDatabase(async (db) => {
    const standby = postgres(db.url, {
      max: 1,
      onnotice: () => {},
      connection: { default_transaction_read_only: true },
    });
    const readOnly = await standby`create table t (x int)`.then(() => undefined, (e) => e);
    await standby.end({ timeout: 1 });
    assert.equal(readOnly.code, "25006");
    assert.equal(storageFailure(readOnly), "STORAGE_READONLY");

    const victim = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await victim<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const pid = row!.pid;
      const killed = victim`select pg_sleep(10)`.then(() => undefined, (e) => e);
      await waitFor(async () => {
        const [hit] = await db.admin`select pg_terminate_backend(pid) as done
          from pg_stat_activity where pid = ${pid} and query like 'select pg_sleep%'`;
        return hit?.done === true;
      }, { what: "the sleeping session to end" });
      const error = await killed;
      assert.ok(error, "the sleep was cut short");
      assert.equal(storageFailure(error), "STORAGE_UNAVAILABLE", `${error.code}: ${error.message}`);
    } finally {
      await victim.end({ timeout: 1 });
    }
  });
  const nobody = postgres(`postgres://postgres@127.0.0.1:${freePort()}/x`, {
    max: 1,
    connect_timeout: 2,
  });
  try {
    const refused = await nobody`select 1`.then(() => undefined, (e) => e);
    assert.equal(storageFailure(refused), "STORAGE_UNAVAILABLE", String(refused));
  } finally {
    await nobody.end({ timeout: 1 });
  }
  // What the server says when its disk is full (53100), as postgres.js reports it.
  assert.equal(
    storageFailure(Object.assign(new Error("could not extend file"), { code: "53100" })),
    "STORAGE_FULL",
  );
});
