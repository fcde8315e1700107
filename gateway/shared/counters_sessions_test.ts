import assert from "node:assert/strict";
import { waitFor } from "../../tests/_helpers.ts";
import { randomPrefix, RedisServer, TEST_REDIS_URL, withLink } from "../../tests/_redis.ts";
import { memoryCounters, redisCounters, sharedCounters } from "./counters.ts";
import { RedisLink } from "./redis.ts";
import {
  memorySessions,
  redisSessions,
  type SessionRecord,
  type SessionStore,
  sharedSessions,
} from "./sessions.ts";

Deno.test("memoryCounters count per key in fixed windows and reset at the window's end", async () => {
  const time = { now: 10_500 };
  const counters = memoryCounters(() => time.now);
  assert.deepEqual(await counters.hit("a", 1000), { count: 1, resetMs: 500 });
  assert.deepEqual(await counters.hit("a", 1000), { count: 2, resetMs: 500 });
  assert.deepEqual(await counters.hit("b", 1000), { count: 1, resetMs: 500 });
  // Another window length is another counter.
  assert.deepEqual(await counters.hit("a", 60_000), { count: 1, resetMs: 49_500 });
  time.now = 10_999;
  assert.deepEqual(await counters.hit("a", 1000), { count: 3, resetMs: 1 });
  time.now = 11_000;
  assert.deepEqual(await counters.hit("a", 1000), { count: 1, resetMs: 1000 });
  await assert.rejects(() => counters.hit("a", 0), RangeError);
  await counters.close();
});

Deno.test("redisCounters are shared by two links on one Redis", async () => {
  await withLink(async (link) => {
    const other = new RedisLink({ url: TEST_REDIS_URL, keyPrefix: link.keyPrefix });
    try {
      await waitFor(() => other.up);
      const a = redisCounters(link);
      const b = redisCounters(other);
      // A long window, so the test never straddles a boundary.
      const window = 3_600_000;
      const first = await a.hit("client-1", window);
      assert.equal(first.count, 1);
      assert.ok(first.resetMs > 0 && first.resetMs <= window);
      assert.equal((await b.hit("client-1", window)).count, 2);
      assert.equal((await a.hit("client-1", window)).count, 3);
      assert.equal((await b.hit("client-2", window)).count, 1);
      const ttl = await link.redis.pttl(link.key("rl", String(window), "client-1"));
      assert.ok(ttl > 0 && ttl <= window, `counter expires with its window (pttl ${ttl})`);
    } finally {
      await other.close();
    }
  });
});

const record = (userId: string, ttlMs = 60_000, family = `f-${userId}`): SessionRecord => ({
  userId,
  username: `name-${userId}`,
  family,
  createdAt: Date.now(),
  expiresAt: Date.now() + ttlMs,
});

async function sessionContract(store: SessionStore, expire: () => Promise<void>) {
  const alice1 = record("alice");
  await store.put("s1", alice1);
  await store.put("s2", record("alice"));
  await store.put("s3", record("bob"));
  assert.deepEqual(await store.get("s1"), alice1);
  assert.equal(await store.get("nope"), undefined);
  await store.delete("s2");
  assert.equal(await store.get("s2"), undefined);
  await store.put("s4", record("alice"));
  assert.equal(await store.deleteUser("alice"), 2);
  assert.equal(await store.get("s1"), undefined);
  assert.equal(await store.get("s4"), undefined);
  assert.equal((await store.get("s3"))?.userId, "bob");
  assert.equal(await store.deleteUser("alice"), 0);
  // An already expired record is not stored; a short one expires.
  await store.put("old", record("carol", -1));
  assert.equal(await store.get("old"), undefined);
  await store.put("short", record("carol", 50));
  await expire();
  assert.equal(await store.get("short"), undefined);

  // Families: the first claim of a token rotates it, a second one is reuse;
  // deleteFamily ends every session of the login and nothing else.
  await store.put("r1", record("erin", 60_000, "login-1"));
  assert.deepEqual(await store.claim("r1"), {
    record: await store.get("r1"),
    reused: false,
  });
  await store.put("r2", record("erin", 60_000, "login-1"));
  await store.put("other", record("erin", 60_000, "login-2"));
  const reclaimed = await store.claim("r1");
  assert.equal(reclaimed?.reused, true, "a rotated token claimed again");
  // When it was rotated, for the refresh route's grace (`now` of the store).
  assert.equal(typeof reclaimed?.rotatedAt, "number");
  assert.ok(Math.abs(reclaimed!.rotatedAt! - Date.now()) < 60_000, `${reclaimed?.rotatedAt}`);
  assert.equal((await store.claim("r2"))?.reused, false);
  assert.equal(await store.claim("nope"), undefined);
  assert.equal(await store.deleteFamily("login-1"), 2);
  assert.equal(await store.claim("r1"), undefined);
  assert.equal(await store.get("r2"), undefined);
  assert.equal((await store.get("other"))?.family, "login-2");
  // A token put again (never in practice: tokens are random) is fresh.
  await store.put("other", record("erin", 60_000, "login-2"));
  assert.equal((await store.claim("other"))?.reused, false);
}

Deno.test("memorySessions: put, get, delete, deleteUser, expiry, families and reuse", async () => {
  let offset = 0;
  const store = memorySessions(() => Date.now() + offset);
  await sessionContract(store, () => {
    offset += 100;
    return Promise.resolve();
  });
  await store.close();
});

Deno.test("redisSessions: the same contract in Redis (families and reuse too), with Redis expiring the keys", async () => {
  await withLink(async (link) => {
    const store = redisSessions(link);
    await sessionContract(store, async () => {
      await waitFor(async () => (await link.redis.exists(link.key("session", "short"))) === 0);
    });
    // What another replica sees.
    await store.put("shared", record("dave"));
    assert.equal((await redisSessions(link).get("shared"))?.username, "name-dave");
    await store.close();
  });
});

Deno.test("sharedCounters and sharedSessions fall back while Redis is down and recover", async () => {
  const server = new RedisServer({ persistent: true });
  const prefix = randomPrefix();
  await server.start();
  const link = new RedisLink({ url: server.url, keyPrefix: prefix, retryMaxMs: 100 });
  const counters = sharedCounters(link);
  const sessions = sharedSessions(link);
  try {
    await waitFor(() => link.up, { what: "link up" });
    const window = 3_600_000;
    assert.equal((await counters.hit("k", window)).count, 1);
    assert.equal((await counters.hit("k", window)).count, 2);
    await sessions.put("kept", record("erin"));
    await sessions.put("logout", record("frank"));
    await sessions.put("revoked", record("gina"));

    await server.stop();
    await waitFor(() => !link.up, { what: "link down" });
    assert.ok(link.lastError.length > 0);
    // Fallbacks: never a throw.
    assert.equal((await counters.hit("k", window)).count, 1, "memory counter");
    await sessions.put("during", record("hank"));
    assert.equal((await sessions.get("during"))?.userId, "hank");
    assert.equal(await sessions.get("kept"), undefined, "Redis's sessions are out of reach");
    await sessions.delete("logout");
    assert.equal(await sessions.deleteUser("gina"), 0, "none known here");

    // Restarted with its data: the deletions made during the outage are replayed.
    await server.start();
    await waitFor(() => link.up, { what: "link up again" });
    assert.equal((await counters.hit("k", window)).count, 3, "Redis's counter again");
    assert.equal((await sessions.get("kept"))?.userId, "erin");
    assert.equal((await sessions.get("during"))?.userId, "hank", "outage session still found");
    assert.equal(await sessions.get("logout"), undefined);
    assert.equal(await sessions.get("revoked"), undefined);
    const direct = redisSessions(link);
    assert.equal(await direct.get("logout"), undefined, "deleted in Redis");
    assert.equal(await direct.get("revoked"), undefined, "revoked in Redis");
  } finally {
    await counters.close();
    await sessions.close();
    await link.close();
    await server.dispose();
  }
});

Deno.test("RedisLink: a server that hangs is found by PING, the link goes down and comes back", async () => {
  const server = new RedisServer();
  await server.start();
  const link = new RedisLink({
    url: server.url,
    keyPrefix: randomPrefix(),
    commandTimeoutMs: 200,
    pingIntervalMs: 100,
    retryMaxMs: 100,
  });
  const counters = sharedCounters(link);
  try {
    await waitFor(() => link.up, { what: "link up" });
    assert.equal((await counters.hit("k", 3_600_000)).count, 1);
    server.signal("SIGSTOP");
    await waitFor(() => !link.up, { what: "link down", timeoutMs: 10_000 });
    assert.match(link.lastError, /./);
    assert.equal((await counters.hit("k", 3_600_000)).count, 1, "in-process fallback");
    server.signal("SIGCONT");
    await waitFor(() => link.up, { what: "link up again", timeoutMs: 10_000 });
    assert.equal((await counters.hit("k", 3_600_000)).count, 2, "Redis's count again");
  } finally {
    await counters.close();
    await link.close();
    await server.dispose();
  }
});
