/**
 * The journal's stores keep one contract (broker/journal.ts), on libSQL and
 * on PostgreSQL alike: a group of changes is applied in order and all or
 * nothing; pending requests, replies, dead letters and their pages read back
 * as written; one broker holds a store at a time.
 */
import assert from "node:assert/strict";
import { type DeadLetter, type JournalRequest, type JournalStore } from "../broker/journal.ts";
import { JournalLockedError, LibsqlJournal } from "../broker/journal_libsql.ts";
import { PostgresJournal } from "../broker/journal_postgres.ts";
import postgres from "postgres";
import { freshDatabase } from "./_postgres.ts";

const enc = new TextEncoder();

function request(i: number, service = "plant.valve"): JournalRequest {
  return {
    key: i.toString(16).padStart(32, "0"),
    service,
    // Frames of any bytes survive, empty ones included.
    body: [enc.encode(`op-${i}`), new Uint8Array(0), Uint8Array.of(0, 255, 10)],
    receivedAt: 1_700_000_000_000 + i,
    expiresAt: 1_700_000_030_000 + i,
    ...(i % 2 ? { callerDeadline: 1_700_000_005_000 + i } : {}),
    keyed: i % 3 === 0,
    failures: i % 4 === 0 ? [{ at: 1_700_000_001_000, reason: "connection closed" }] : [],
  };
}

function letter(r: JournalRequest, deadAt: number): DeadLetter {
  return {
    key: r.key,
    service: r.service,
    body: r.body,
    reason: "worker_lost",
    detail: "its worker was lost 3 times",
    attempts: 3,
    receivedAt: r.receivedAt,
    deadAt,
    failures: [{ at: deadAt, reason: "expired" }],
    replays: 0,
  };
}

async function contract(store: JournalStore): Promise<void> {
  const requests = Array.from({ length: 1200 }, (_, i) => request(i, i < 600 ? "a" : "b"));
  // Runs of one kind longer than a statement's rows, in one transaction.
  await store.apply(requests.map((r) => ({ op: "admit", request: r })));
  assert.deepEqual(await store.pending(), requests);
  assert.deepEqual(await store.counts(), { pending: 1200, replies: 0, dead: 0 });

  await store.apply([
    { op: "failed", key: requests[5]!.key, failures: [{ at: 1, reason: "connection closed" }] },
    {
      op: "reply",
      reply: {
        key: requests[6]!.key,
        service: "a",
        body: [enc.encode("done")],
        storedAt: 10,
        expiresAt: 20,
      },
    },
    ...requests.slice(100, 400).map((r, i) => ({
      op: "dead" as const,
      letter: letter(r, 5000 + (i % 7)),
    })),
  ]);
  const five = await store.lookup(requests[5]!.key);
  assert.equal(five.state, "pending");
  assert.deepEqual(five.state === "pending" && five.request.failures, [{
    at: 1,
    reason: "connection closed",
  }]);
  const six = await store.lookup(requests[6]!.key);
  assert.deepEqual(six, {
    state: "replied",
    reply: {
      key: requests[6]!.key,
      service: "a",
      body: [enc.encode("done")],
      storedAt: 10,
      expiresAt: 20,
    },
  });
  assert.deepEqual(await store.lookup("f".repeat(32)), { state: "unknown" });
  assert.deepEqual(await store.counts(), { pending: 1200 - 301, replies: 1, dead: 300 });

  // Pages in (dead_at, key) order, filtered by service.
  const seen: string[] = [];
  let after: { deadAt: number; key: string } | undefined;
  while (true) {
    const page = await store.deadLetters({ limit: 64, ...(after ? { after } : {}) });
    seen.push(...page.map((d) => d.key));
    if (page.length < 64) break;
    const last = page[page.length - 1]!;
    after = { deadAt: last.deadAt, key: last.key };
  }
  const expected = requests.slice(100, 400).map((r, i) => ({ key: r.key, at: 5000 + (i % 7) }))
    .sort((x, y) => x.at - y.at || (x.key < y.key ? -1 : 1)).map((x) => x.key);
  assert.deepEqual(seen, expected);
  assert.equal((await store.deadLetters({ limit: 1000, service: "b" })).length, 0);
  const shown = await store.lookup(requests[100]!.key);
  assert.deepEqual(shown, { state: "dead", letter: letter(requests[100]!, 5000) });

  // Replay and forget; expired replies go.
  await store.apply([
    { op: "replay", request: { ...requests[100]!, failures: [] } },
    { op: "forget", key: requests[101]!.key },
    { op: "expire-replies", before: 21 },
  ]);
  assert.equal((await store.lookup(requests[100]!.key)).state, "pending");
  assert.equal((await store.lookup(requests[101]!.key)).state, "unknown");
  assert.deepEqual(await store.counts(), { pending: 900, replies: 0, dead: 298 });

  // All or nothing: a group that fails leaves no trace.
  await assert.rejects(store.apply([
    { op: "admit", request: request(5000) },
    { op: "admit", request: { ...request(5001), service: null as unknown as string } },
  ]));
  assert.equal((await store.lookup(request(5000).key)).state, "unknown");
}

Deno.test("journal store contract on libSQL, and one broker per file", async () => {
  const dir = await Deno.makeTempDir();
  const store = await LibsqlJournal.open({ location: `${dir}/j.db`, synchronous: "full" });
  try {
    await contract(store);
    await assert.rejects(
      LibsqlJournal.open({ location: `${dir}/j.db`, synchronous: "full" }),
      JournalLockedError,
    );
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal store contract on PostgreSQL, and one broker per journal", async () => {
  const db = await freshDatabase();
  let store: PostgresJournal | undefined;
  try {
    store = await PostgresJournal.open(db.url);
    await contract(store);
    await assert.rejects(PostgresJournal.open(db.url), (error) => {
      assert.ok(error instanceof JournalLockedError, String(error));
      assert.match(error.message, /in use by another broker \(server backend pid \d+/);
      return true;
    });
    // The lock goes with its holder.
    await store.close();
    store = await PostgresJournal.open(db.url);
    assert.equal((await store.counts()).dead, 298);
  } finally {
    await store?.close();
    await db.drop();
  }
});

Deno.test("PostgreSQL journal on a database where another store recorded a newer migration in Drizzle's default table: still gets its tables", async () => {
  const db = await freshDatabase();
  const admin = postgres(db.url, { max: 1, onnotice: () => {} });
  let store: PostgresJournal | undefined;
  try {
    // What the metrics store's migrations leave (Drizzle's default table), dated later than
    // every journal migration: Drizzle would skip the journal's if they shared that table.
    await admin.unsafe(`create schema drizzle;
      create table drizzle.__drizzle_migrations (id serial primary key, hash text not null, created_at bigint);
      insert into drizzle.__drizzle_migrations (hash, created_at) values ('other-store', 9999999999999)`);
    store = await PostgresJournal.open(db.url);
    await contract(store);
  } finally {
    await store?.close();
    await admin.end();
    await db.drop();
  }
});
