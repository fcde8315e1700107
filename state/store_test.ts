/** Group commit of the libSQL store, observed through its commit hook. */
import assert from "node:assert/strict";
import { openStateDatabase } from "./db.ts";
import { StateStore, type Write, type WriteResult } from "./store.ts";

Deno.test("writes queued while a commit runs share the next commit (group commit)", async () => {
  const groups: number[] = [];
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open, { onCommit: (writes) => groups.push(writes) });
  try {
    await store.write({ kind: "create-scope", scope: "s" });
    groups.length = 0;
    const results = await Promise.all(
      Array.from(
        { length: 300 },
        (_, i) => store.write({ kind: "set", scope: "s", entries: [[`k${i % 10}`, String(i)]] }),
      ),
    );
    assert.equal(results.length, 300);
    assert.equal(groups.reduce((a, b) => a + b, 0), 300, "every write counted once");
    // All 300 are queued in one turn, before the first commit can start: one
    // transaction holds them (at most 4096 per group), so one write per commit
    // is a regression, not noise.
    assert.deepEqual(groups, [300]);
    assert.equal(store.get("s", "k3")?.revision, 30);
  } finally {
    await store.close();
  }
});

Deno.test("idempotency keys in one group: the first use is applied, a same-key write gets its reply, another request with the key is refused", async () => {
  const groups: number[] = [];
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open, { onCommit: (writes) => groups.push(writes) });
  const keyed = (owner: string, key: string, fingerprint: string) => ({
    owner,
    key,
    fingerprint,
    reply: (result: WriteResult) => JSON.stringify(result),
  });
  try {
    const set = (value: string): Write => ({ kind: "set", scope: "s", entries: [["k", value]] });
    // Queued in one turn: one group, so the second sees the first only in the group's overlay.
    const [first, second, other, reused, plain] = await Promise.all([
      store.writeKeyed(set("a"), keyed("ada", "K", "f1")),
      store.writeKeyed(set("a"), keyed("ada", "K", "f1")),
      store.writeKeyed(set("b"), keyed("bob", "K", "f2")),
      store.writeKeyed(set("c"), keyed("ada", "K", "f3")),
      store.write(set("d")),
    ]);
    assert.deepEqual(groups, [5], "one group");
    const applied = JSON.stringify({ kind: "set", revisions: [1] });
    assert.deepEqual(first, { kind: "applied", reply: applied });
    assert.deepEqual(second, { kind: "replayed", reply: applied }, "the first use's reply");
    assert.deepEqual(other, {
      kind: "applied",
      reply: JSON.stringify({ kind: "set", revisions: [2] }),
    }, "another owner's key of the same name is its own");
    assert.deepEqual(reused, { kind: "reused" });
    assert.deepEqual(plain, { kind: "set", revisions: [3] });
    assert.equal(store.get("s", "k")?.value, "d");
    assert.equal(store.get("s", "k")?.revision, 3, "applied three times, not five");

    // In a later group the key is read back from the database.
    assert.deepEqual(
      await store.writeKeyed(set("a"), keyed("ada", "K", "f1")),
      { kind: "replayed", reply: applied },
    );
    const { rows } = await open.client.execute(
      "SELECT owner, key, fingerprint, reply FROM idempotency_keys ORDER BY owner",
    );
    assert.deepEqual(rows.map((r) => [r[0], r[1], r[2], r[3]]), [
      ["ada", "K", "f1", applied],
      ["bob", "K", "f2", JSON.stringify({ kind: "set", revisions: [2] })],
    ]);
  } finally {
    await store.close();
  }
});

Deno.test("idempotency keys expire after the window: ignored once expired, purged in bounded batches, and the write applies again", async () => {
  let now = 1_000_000;
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open, { idempotencyWindowMs: 1000, now: () => now });
  const keyed = (key: string) => ({
    owner: "ada",
    key,
    fingerprint: "f",
    reply: (result: WriteResult) => JSON.stringify(result),
  });
  const set: Write = { kind: "set", scope: "s", entries: [["k", "v"]] };
  try {
    for (let i = 0; i < 5; i++) await store.writeKeyed(set, keyed(`K${i}`));
    assert.equal(store.get("s", "k")?.revision, 5);
    now += 999;
    assert.equal((await store.writeKeyed(set, keyed("K0"))).kind, "replayed", "within the window");
    assert.equal(await store.purgeExpiredKeys(10), 0, "nothing expired yet");
    now += 1;
    // Expired but not purged yet: the key is forgotten all the same.
    assert.equal((await store.writeKeyed(set, keyed("K0"))).kind, "applied");
    assert.equal(store.get("s", "k")?.revision, 6);
    now += 1000;
    assert.equal(await store.purgeExpiredKeys(3), 3, "a bounded batch");
    assert.equal(await store.purgeExpiredKeys(3), 2);
    const { rows } = await open.client.execute("SELECT count(*) FROM idempotency_keys");
    assert.equal(rows[0]![0], 0);
  } finally {
    await store.close();
  }
});

Deno.test("a keyed write and its key commit together: when either insert fails, neither is kept", async () => {
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open);
  const keyed = {
    owner: "ada",
    key: "K",
    fingerprint: "f",
    reply: (result: WriteResult) => JSON.stringify(result),
  };
  const set: Write = { kind: "set", scope: "s", entries: [["k", "v"]] };
  try {
    // The key's insert fails: the write must not be kept either.
    await open.client.execute(
      "CREATE TRIGGER no_keys BEFORE INSERT ON idempotency_keys BEGIN SELECT RAISE(ABORT, 'no keys'); END",
    );
    await assert.rejects(store.writeKeyed(set, keyed), /no keys/);
    assert.equal(store.get("s", "k"), undefined);
    const entries = await open.client.execute("SELECT count(*) FROM entries");
    assert.equal(entries.rows[0]![0], 0, "the write rolled back with its key");
    await open.client.execute("DROP TRIGGER no_keys");

    // The write's insert fails: the key must not be kept, so a retry applies it.
    await open.client.execute(
      "CREATE TRIGGER no_entries BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'no entries'); END",
    );
    await assert.rejects(store.writeKeyed(set, keyed), /no entries/);
    const keys = await open.client.execute("SELECT count(*) FROM idempotency_keys");
    assert.equal(keys.rows[0]![0], 0, "the key rolled back with its write");
    await open.client.execute("DROP TRIGGER no_entries");

    assert.equal((await store.writeKeyed(set, keyed)).kind, "applied");
    assert.equal(store.get("s", "k")?.revision, 1);
  } finally {
    await store.close();
  }
});
