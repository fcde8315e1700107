/**
 * The auth store on a real libSQL file and on a real PostgreSQL database
 * (127.0.0.1:5432, a fresh database per test), with the same assertions:
 * users with hashed passwords, roles, API keys (only hashes kept), the
 * audit log with its retention, the revocation log, refresh tokens with
 * rotation, and what two stores on one database (two gateways) do at once.
 * The last tests are PostgreSQL's own: the revocation lock and a server
 * that goes away.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { freshDatabase } from "../tests/_postgres.ts";
import { TcpProxy } from "../tests/_tcp_proxy.ts";
import { AuthStore, AuthStoreError, AuthStoreUnavailableError } from "./store.ts";

type Backend = "libsql" | "postgres";

interface Harness {
  store: AuthStore;
  /** Another store on the same database (a second gateway). */
  another(): Promise<AuthStore>;
  /** Everything stored, as text (to look for secrets in clear). */
  stored(): Promise<string>;
}

async function withStore(backend: Backend, body: (h: Harness) => Promise<void>): Promise<void> {
  const others: AuthStore[] = [];
  const another = async (location: string) => {
    const store = await AuthStore.open(location);
    others.push(store);
    return store;
  };
  if (backend === "libsql") {
    const dir = await Deno.makeTempDir();
    const file = `${dir}/auth.db`;
    const store = await AuthStore.open(file);
    try {
      await body({
        store,
        another: () => another(file),
        async stored() {
          let bytes = "";
          // The database and its write-ahead log.
          for (const path of [file, `${file}-wal`]) {
            const data = await Deno.readFile(path).catch(() => new Uint8Array());
            bytes += new TextDecoder().decode(data);
          }
          return bytes;
        },
      });
    } finally {
      for (const other of others) await other.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    }
    return;
  }
  const db = await freshDatabase();
  const store = await AuthStore.open(db.url);
  try {
    await body({
      store,
      another: () => another(db.url),
      async stored() {
        const rows = await db.sql.unsafe(
          `select string_agg(t::text, ' ') as text from (
             select u::text as t from plantd_auth.users u
             union all select k::text from plantd_auth.api_keys k
             union all select r::text from plantd_auth.refresh_tokens r) s`,
        );
        return String(rows[0]?.text ?? "");
      },
    });
  } finally {
    for (const other of others) await other.close();
    await store.close();
    await db.drop();
  }
}

for (const backend of ["libsql", "postgres"] as const) {
  const test = (name: string, body: (h: Harness) => Promise<void>) =>
    Deno.test(`${name} (${backend})`, () => withStore(backend, body));

  test("users: hashed passwords, unique names, known roles, disabled accounts", async (h) => {
    const { store } = h;
    await store.createUser("ada", "correct horse", ["viewer"]);
    const taken = await store.createUser("ada", "another pass", []).catch((e) => e);
    assert.ok(taken instanceof AuthStoreError);
    assert.equal(taken.code, "CONFLICT");
    await assert.rejects(store.createUser("bob", "short", []), /at least 8/);
    // The valid roles are named (#21).
    await assert.rejects(
      store.createUser("bob", "long enough", ["nope"]),
      /Unknown role 'nope' \(roles: admin, operator, viewer\)/,
    );
    await assert.rejects(store.createUser("../x", "long enough", []), /Usernames/);
    assert.equal((await store.checkPassword("ada", "correct horse"))?.username, "ada");
    assert.equal(await store.checkPassword("ada", "wrong horse"), undefined);
    assert.equal(await store.checkPassword("nobody", "correct horse"), undefined);
    await store.updateUser("ada", { disabled: true });
    assert.equal(await store.checkPassword("ada", "correct horse"), undefined);
    const missing = await store.updateUser("nobody", { disabled: true }).catch((e) => e);
    assert.equal(missing.code, "NOT_FOUND");
    assert.equal(await store.countUsers(), 1);
    assert.deepEqual((await store.users()).map((u) => [u.username, u.disabled]), [["ada", true]]);
    // Neither the database nor its log holds a password in clear.
    const bytes = await h.stored();
    assert.ok(bytes.includes("argon2id"), "the hashes are there");
    assert.ok(!bytes.includes("correct horse"));
  });

  test("API keys: checked by hash, refused when revoked, expired or altered", async (h) => {
    const { store } = h;
    await store.createUser("ada", "correct horse", ["admin"]);
    const { key, view } = await store.createApiKey("plc", ["viewer"], "user:ada");
    const checked = await store.checkApiKey(key);
    assert.equal(checked?.id, view.id);
    assert.equal(checked?.owner, "ada");
    assert.equal(
      await store.checkApiKey(key.slice(0, -1) + (key.endsWith("A") ? "B" : "A")),
      undefined,
    );
    assert.equal(await store.checkApiKey("pk_nonsense"), undefined);
    assert.ok(!JSON.stringify(await store.apiKeys()).includes(key.split(".")[1]!));
    assert.ok(!(await h.stored()).includes(key.split(".")[1]!));
    // Its owner disabled: refused; enabled again: accepted.
    await store.updateUser("ada", { disabled: true });
    assert.equal(await store.checkApiKey(key), undefined);
    await store.updateUser("ada", { disabled: false });
    assert.equal((await store.checkApiKey(key))?.id, view.id);
    assert.equal(await store.revokeApiKey(view.id), true);
    assert.equal(await store.revokeApiKey(view.id), false);
    assert.equal(await store.checkApiKey(key), undefined);
    const old = await store.createApiKey("old", ["viewer"], "user:ada", Date.now() - 1);
    assert.equal(await store.checkApiKey(old.key), undefined);
    // Deleting the owner revokes its keys for good.
    const kept = await store.createApiKey("kept", ["viewer"], "user:ada");
    const other = await store.createApiKey("other", ["viewer"], "user:bob");
    assert.equal((await store.deleteUser("ada"))?.username, "ada");
    assert.equal(await store.deleteUser("ada"), undefined);
    await store.createUser("ada", "correct horse", ["admin"]);
    assert.equal(await store.checkApiKey(kept.key), undefined);
    assert.equal((await store.checkApiKey(other.key))?.name, "other");
  });

  test("roles: defined roles override built-ins, bad permissions refused", async ({ store }) => {
    await store.putRole("line1", ["state:scope:line1:write"]);
    assert.deepEqual(await store.permissionsOf(["line1"]), ["state:scope:line1:write"]);
    await store.putRole("line1", ["state:scope:line1:read"]);
    assert.deepEqual(await store.permissionsOf(["line1"]), ["state:scope:line1:read"]);
    await assert.rejects(store.putRole("bad", ["has space"]), /not a permission/);
    await assert.rejects(store.putRole("Bad Name", []), /not valid/);
    assert.equal(await store.deleteRole("line1"), true);
    assert.equal(await store.deleteRole("line1"), false);
    assert.deepEqual(await store.permissionsOf(["line1"]), []);
  });

  test("audit: filtered newest first, paged, and pruned past retention", async ({ store }) => {
    const base = { target: "t", outcome: "success" as const, ip: "127.0.0.1" };
    for (let i = 0; i < 5; i++) {
      await store.audit({ ...base, time: 1000 + i, actor: `user:${i % 2}`, action: "state.set" });
    }
    await store.audit({
      ...base,
      time: 2000,
      actor: "user:0",
      action: "auth.login",
      details: { roles: ["a"], n: 1 },
    });
    const all = await store.queryAudit({ limit: 100 });
    assert.deepEqual(all.map((e) => e.time), [2000, 1004, 1003, 1002, 1001, 1000]);
    assert.deepEqual(all[0]!.details, { roles: ["a"], n: 1 });
    assert.equal(all[1]!.details, undefined);
    const mine = await store.queryAudit({ actor: "user:0", action: "state.set", limit: 100 });
    assert.deepEqual(mine.map((e) => e.time), [1004, 1002, 1000]);
    const window = await store.queryAudit({ from: 1001, to: 1003, limit: 100 });
    assert.deepEqual(window.map((e) => e.time), [1003, 1002, 1001]);
    const page = await store.queryAudit({ before: all[2]!.id, limit: 2 });
    assert.deepEqual(page.map((e) => e.time), [1002, 1001]);
    assert.equal(await store.pruneAudit(1003), 3);
    assert.deepEqual((await store.queryAudit({ limit: 100 })).map((e) => e.time), [
      2000,
      1004,
      1003,
    ]);
  });

  test("revocations: every change that ends sessions bumps the epoch and is logged in order", async ({ store }) => {
    await store.createUser("ada", "correct horse", ["viewer"]);
    const created = (await store.sessionStates(["ada"])).get("ada")!;
    assert.deepEqual(created.active, true);
    assert.ok(created.epoch > 1_000_000_000_000, "starts from the clock, not 0");
    await store.updateUser("ada", { roles: ["operator"] });
    await store.updateUser("ada", { password: "another horse" });
    await store.updateUser("ada", { disabled: true });
    const disabled = await store.sessionStates(["ada", "nobody"]);
    assert.deepEqual(disabled.get("ada"), { epoch: created.epoch + 3, active: false });
    assert.equal(disabled.has("nobody"), false);
    await store.revokeSession("sid-1", Date.now() + 60_000);
    await store.revokeSession("sid-old", Date.now() - 1);
    await store.deleteUser("ada");
    const rows = await store.revocationsAfter(0);
    assert.deepEqual(rows.map((r) => [r.kind, r.subject]), [
      ["user", "ada"],
      ["user", "ada"],
      ["user", "ada"],
      ["user", "ada"],
      ["session", "sid-1"],
      ["user", "ada"],
    ]);
    assert.deepEqual(rows.map((r) => r.id), [...rows.map((r) => r.id)].sort((a, b) => a - b));
    assert.deepEqual(await store.revocationsAfter(rows[4]!.id), [rows[5]]);
    // Pruning deletes only rows past their expiry (sid-old was never shown).
    await store.pruneRevocations();
    assert.equal((await store.revocationsAfter(0)).length, 6);
  });

  test("refresh tokens: stored by id, claimed once, reuse seen, ended by family and by user", async ({ store }) => {
    const now = Date.now();
    const record = (family: string, userId = "u1") => ({
      userId,
      username: "ada",
      family,
      createdAt: now,
      expiresAt: now + 60_000,
    });
    await store.putRefreshToken("t1", record("f1"));
    await store.putRefreshToken("t2", record("f1"));
    await store.putRefreshToken("t3", record("f2"));
    await store.putRefreshToken("t4", record("f3", "u2"));
    await store.putRefreshToken("gone", { ...record("f1"), expiresAt: now - 1 });
    assert.deepEqual(await store.refreshToken("t1"), record("f1"));
    assert.equal(await store.refreshToken("gone"), undefined);
    assert.equal(await store.claimRefreshToken("gone"), undefined);
    assert.equal(await store.claimRefreshToken("missing"), undefined);
    const before = Date.now();
    assert.deepEqual(await store.claimRefreshToken("t1"), { record: record("f1"), reused: false });
    const after = Date.now();
    // Reuse says when the rotation was: the refresh route forgives it within its grace.
    const again = await store.claimRefreshToken("t1");
    assert.deepEqual({ ...again, rotatedAt: undefined }, {
      record: record("f1"),
      reused: true,
      rotatedAt: undefined,
    });
    assert.ok(again!.rotatedAt! >= before && again!.rotatedAt! <= after, `${again?.rotatedAt}`);
    // Rotated tokens are still found (so logout can name their family).
    assert.deepEqual(await store.refreshToken("t1"), record("f1"));
    // Put again, a token is new (not rotated).
    await store.putRefreshToken("t1", record("f1"));
    assert.equal((await store.claimRefreshToken("t1"))?.reused, false);
    assert.equal(await store.deleteRefreshTokens({ family: "f1" }), 2);
    assert.equal(await store.refreshToken("t2"), undefined);
    assert.ok(await store.refreshToken("t3"));
    assert.equal(await store.deleteRefreshTokens({ userId: "u1" }), 1);
    assert.equal(await store.refreshToken("t3"), undefined);
    await store.deleteRefreshToken("t4");
    assert.equal(await store.refreshToken("t4"), undefined);
    await store.pruneRefreshTokens();
  });

  test("two stores on one database: one winner for a refresh token and for a username", async (h) => {
    const other = await h.another();
    const stores = [h.store, other];
    const now = Date.now();
    for (let round = 0; round < 5; round++) {
      const id = `token-${round}`;
      await h.store.putRefreshToken(id, {
        userId: "u1",
        username: "ada",
        family: "f",
        createdAt: now,
        expiresAt: now + 60_000,
      });
      const claims = await Promise.all(
        Array.from({ length: 16 }, (_, i) => stores[i % 2]!.claimRefreshToken(id)),
      );
      assert.equal(claims.filter((c) => c && !c.reused).length, 1, `round ${round}: one winner`);
      assert.equal(claims.filter((c) => c?.reused).length, 15);
    }
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => stores[i % 2]!.createUser("eve", "correct horse", [])),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) {
      if (r.status === "rejected") assert.equal(r.reason.code, "CONFLICT", String(r.reason));
    }
    // What one store did, the other reads at once.
    await other.updateUser("eve", { disabled: true });
    assert.equal((await h.store.sessionStates(["eve"])).get("eve")?.active, false);
    assert.ok((await h.store.revocationsAfter(0)).some((r) => r.subject === "eve"));
  });
}

Deno.test("PostgreSQL: a revocation waits for one under way, so a reader past the last id misses none", async () => {
  const db = await freshDatabase();
  const store = await AuthStore.open(db.url);
  const other = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    // Another gateway's revocation, its id drawn but not committed.
    let committed = false;
    let resolvedAfterCommit: boolean | undefined;
    let pending: Promise<void> | undefined;
    await other.begin(async (tx) => {
      await tx.unsafe(`select pg_advisory_xact_lock(${0x706c616e}, 2)`);
      await tx.unsafe(
        `insert into plantd_auth.revocations (kind, subject, expires_at, created_at)
         values ('session', 'first', ${Date.now() + 60_000}, ${Date.now()})`,
      );
      const second = store.revokeSession("second", Date.now() + 60_000).then(() => {
        resolvedAfterCommit = committed;
      });
      // Until the first commits, the second is waiting on the lock (or, broken, done).
      const deadline = Date.now() + 10_000;
      while (resolvedAfterCommit === undefined) {
        const waiting = await db.sql`select 1 from pg_locks
          where locktype = 'advisory' and not granted`;
        if (waiting.length > 0) break;
        if (Date.now() > deadline) throw new Error("the second revocation neither waited nor ran");
        await new Promise((r) => setTimeout(r, 20));
      }
      // A reader now sees neither, not the second alone.
      assert.deepEqual((await store.revocationsAfter(0)).map((r) => r.subject), []);
      committed = true;
      pending = second;
    });
    await pending;
    assert.equal(resolvedAfterCommit, true, "the second revocation committed after the first");
    assert.deepEqual((await store.revocationsAfter(0)).map((r) => r.subject), [
      "first",
      "second",
    ]);
  } finally {
    await other.end({ timeout: 1 });
    await store.close();
    await db.drop();
  }
});

Deno.test("PostgreSQL: two stores opening one new database at once both migrate it cleanly", async () => {
  const db = await freshDatabase();
  try {
    const stores = await Promise.all(Array.from({ length: 4 }, () => AuthStore.open(db.url)));
    await stores[0]!.createUser("ada", "correct horse", []);
    for (const store of stores) assert.equal(await store.countUsers(), 1);
    for (const store of stores) await store.close();
    const applied = await db.sql`select count(*)::int as n from drizzle.__plantd_auth_migrations`;
    assert.equal(applied[0]!.n, 1);
  } finally {
    await db.drop();
  }
});

Deno.test("PostgreSQL unreachable: AuthStoreUnavailableError naming the cause, a lazy open, recovery", async () => {
  const db = await freshDatabase();
  // The server behind a proxy: stopping the proxy is the server going away.
  const server = new URL(db.url);
  const proxy = new TcpProxy(
    { hostname: server.hostname, port: Number(server.port || 5432) },
    undefined,
    false,
  );
  const away = new URL(db.url);
  away.port = String(proxy.port);
  away.password = "s3cret-pass"; // trust auth ignores it; it must never be shown
  let lazy: AuthStore | undefined;
  try {
    const refused = await AuthStore.open(away.toString()).catch((e) => e);
    assert.ok(refused instanceof Error);
    assert.match(refused.message, /ECONNREFUSED|refused/i);
    assert.ok(!refused.message.includes("s3cret-pass"), refused.message);
    const reasons: string[] = [];
    lazy = await AuthStore.open(away.toString(), undefined, undefined, {
      lazy: true,
      onUnreachable: (error) => reasons.push(error.message),
    });
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /^auth database unavailable: /);
    assert.ok(!lazy.location.includes("s3cret-pass"), lazy.location);
    const unavailable = async (store: AuthStore) => {
      const error = await store.checkPassword("ada", "correct horse").catch((e) => e);
      assert.ok(error instanceof AuthStoreUnavailableError, String(error));
      assert.ok(!error.message.includes("s3cret-pass"), error.message);
      await assert.rejects(store.ping(), AuthStoreUnavailableError);
      await assert.rejects(store.checkApiKey(`pk_${"a".repeat(12)}.${"b".repeat(43)}`), {
        name: "AuthStoreUnavailableError",
      });
      await assert.rejects(store.claimRefreshToken("t"), AuthStoreUnavailableError);
    };
    await unavailable(lazy);
    // The server comes: the first call migrates and works.
    proxy.resume();
    await lazy.createUser("ada", "correct horse", ["viewer"]);
    assert.equal((await lazy.checkPassword("ada", "correct horse"))?.username, "ada");
    // Gone with connections open, then back.
    await proxy.pause();
    await unavailable(lazy);
    proxy.resume();
    await lazy.ping();
    assert.equal((await lazy.checkPassword("ada", "correct horse"))?.username, "ada");
  } finally {
    await lazy?.close();
    await proxy.pause();
    await db.drop();
  }
});
