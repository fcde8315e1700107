/**
 * The auth store on a real libSQL file: users with hashed passwords, roles,
 * API keys (only hashes kept), and the audit log with its retention.
 */
import assert from "node:assert/strict";
import { AuthStore, AuthStoreError } from "./store.ts";

async function withStore(body: (store: AuthStore, file: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const store = await AuthStore.open(`${dir}/auth.db`);
  try {
    await body(store, `${dir}/auth.db`);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("users: hashed passwords, unique names, known roles, disabled accounts", async () => {
  await withStore(async (store, file) => {
    await store.createUser("ada", "correct horse", ["viewer"]);
    await assert.rejects(store.createUser("ada", "another pass", []), AuthStoreError);
    await assert.rejects(store.createUser("bob", "short", []), /at least 8/);
    await assert.rejects(store.createUser("bob", "long enough", ["nope"]), /Unknown role/);
    await assert.rejects(store.createUser("../x", "long enough", []), /Usernames/);
    assert.equal((await store.checkPassword("ada", "correct horse"))?.username, "ada");
    assert.equal(await store.checkPassword("ada", "wrong horse"), undefined);
    assert.equal(await store.checkPassword("nobody", "correct horse"), undefined);
    await store.updateUser("ada", { disabled: true });
    assert.equal(await store.checkPassword("ada", "correct horse"), undefined);
    // Neither the database nor its write-ahead log holds a password in clear.
    let bytes = "";
    for (const path of [file, `${file}-wal`]) {
      bytes += new TextDecoder().decode(await Deno.readFile(path).catch(() => new Uint8Array()));
    }
    assert.ok(bytes.includes("argon2id"), "the hashes are there");
    assert.ok(!bytes.includes("correct horse"));
  });
});

Deno.test("API keys: checked by hash, refused when revoked, expired or altered", async () => {
  await withStore(async (store) => {
    const { key, view } = await store.createApiKey("plc", ["viewer"], "user:ada");
    assert.equal((await store.checkApiKey(key))?.id, view.id);
    assert.equal(
      await store.checkApiKey(key.slice(0, -1) + (key.endsWith("A") ? "B" : "A")),
      undefined,
    );
    assert.equal(await store.checkApiKey("pk_nonsense"), undefined);
    assert.ok(!JSON.stringify(await store.apiKeys()).includes(key.split(".")[1]!));
    assert.equal(await store.revokeApiKey(view.id), true);
    assert.equal(await store.checkApiKey(key), undefined);
    const old = await store.createApiKey("old", ["viewer"], "user:ada", Date.now() - 1);
    assert.equal(await store.checkApiKey(old.key), undefined);
  });
});

Deno.test("roles: defined roles override built-ins, bad permissions refused", async () => {
  await withStore(async (store) => {
    await store.putRole("line1", ["state:scope:line1:write"]);
    assert.deepEqual(await store.permissionsOf(["line1"]), ["state:scope:line1:write"]);
    await assert.rejects(store.putRole("bad", ["has space"]), /not a permission/);
    await assert.rejects(store.putRole("Bad Name", []), /not valid/);
    assert.equal(await store.deleteRole("line1"), true);
    assert.deepEqual(await store.permissionsOf(["line1"]), []);
  });
});

Deno.test("audit: filtered newest first, paged, and pruned past retention", async () => {
  await withStore(async (store) => {
    const base = { target: "t", outcome: "success" as const, ip: "127.0.0.1" };
    for (let i = 0; i < 5; i++) {
      await store.audit({ ...base, time: 1000 + i, actor: `user:${i % 2}`, action: "state.set" });
    }
    await store.audit({ ...base, time: 2000, actor: "user:0", action: "auth.login" });
    const all = await store.queryAudit({ limit: 100 });
    assert.deepEqual(all.map((e) => e.time), [2000, 1004, 1003, 1002, 1001, 1000]);
    const mine = await store.queryAudit({ actor: "user:0", action: "state.set", limit: 100 });
    assert.deepEqual(mine.map((e) => e.time), [1004, 1002, 1000]);
    const page = await store.queryAudit({ before: all[2]!.id, limit: 2 });
    assert.deepEqual(page.map((e) => e.time), [1002, 1001]);
    assert.equal(await store.pruneAudit(1003), 3);
    assert.deepEqual((await store.queryAudit({ limit: 100 })).map((e) => e.time), [
      2000,
      1004,
      1003,
    ]);
  });
});
