import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/libsql";
import { storageFull } from "../storage/failure.ts";
import { toApiError } from "./errors.ts";

Deno.test("a full database is STORAGE_FULL (507) naming it, not a bare 500", async () => {
  const dir = await Deno.makeTempDir();
  const client = createClient({ url: `file:${dir}/full.db` });
  try {
    // SQLite's own size limit gives the same SQLITE_FULL a full disk does.
    await client.execute("create table t (v blob)");
    await client.execute("pragma max_page_count = 8");
    const db = drizzle(client);
    let thrown: unknown;
    try {
      for (let i = 0; i < 100; i++) await db.run(sql`insert into t values (randomblob(4096))`);
    } catch (error) {
      thrown = error;
    }
    assert.ok(thrown instanceof Error, "the inserts filled the database");
    assert.ok(storageFull(thrown), String(thrown));
    const api = toApiError(thrown);
    assert.equal(api.status, 507);
    assert.equal(api.code, "STORAGE_FULL");
    assert.match(api.message, /full/);
    // Anything else stays INTERNAL.
    assert.equal(toApiError(new Error("boom")).code, "INTERNAL");
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});
