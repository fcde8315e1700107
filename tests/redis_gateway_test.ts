// deno-lint-ignore-file no-explicit-any -- the tests read JSON messages of many shapes
/**
 * The gateway with Redis (issue 6): topic history and resume over WebSocket,
 * two gateway processes sharing one Redis (scale-out), and Redis going away
 * and coming back under a running gateway. Real Redis servers, random key
 * prefixes, random ports.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { deleteKeys, randomPrefix, RedisServer, TEST_REDIS_URL } from "./_redis.ts";
import { RedisLink } from "../gateway/shared/redis.ts";
import { waitFor } from "./_helpers.ts";
import { spawnGateway } from "./_gateway_process.ts";
import { startSystem } from "./_system.ts";
import { WsClient as BaseWsClient } from "./_ws.ts";

const RING_OFFSET = /^[0-9a-f]+:\d+$/;
const STREAM_OFFSET = /^\d+-\d+$/;

/** A WebSocket client that also picks out tagged bus messages. */
class WsClient extends BaseWsClient {
  /** Bus messages received so far whose payload starts with `tag`, in order. */
  tagged(tag: string): { offset: string; payload: string }[] {
    return this.received
      .filter((m) => m.type === "message" && String(m.payload).startsWith(tag))
      .map((m) => ({ offset: m.offset, payload: m.payload }));
  }
}

async function health(url: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${url}/healthz`);
  return { status: response.status, body: await response.json() };
}

function redisCheck(body: any): { status: string; required?: boolean } | undefined {
  return body.checks.find((c: { name: string }) => c.name === "redis");
}

/**
 * Publishes `tag<i>` until every client has one whose offset matches `offset`
 * (a fresh bus connection, or history changing source, needs a moment).
 */
async function warmUp(
  publisher: Publisher,
  clients: WsClient[],
  tag = "warm",
  offset = /./,
): Promise<void> {
  let i = 0;
  await waitFor(() => {
    publisher.publish("org.plantd.Event", `${tag}${i++}`);
    return clients.every((c) => c.tagged(tag).some((m) => offset.test(m.offset)));
  }, { what: `${tag} messages on every client`, intervalMs: 20, timeoutMs: 15_000 });
}

Deno.test("without Redis, a client that reconnects with its last offset gets exactly what it missed, then live messages", async () => {
  const system = await startSystem();
  const publisher = new Publisher(system.frontends.event!, { form: "frames" });
  const first = await new WsClient(system.url).open();
  let second: WsClient | undefined;
  try {
    first.send({ type: "subscribe", id: "e", bus: "event", prefix: "org.plantd.Event" });
    const subscribed = await first.next((m) => m.type === "subscribed");
    assert.equal(subscribed.history, true);
    await warmUp(publisher, [first]);
    for (let i = 0; i < 5; i++) publisher.publish("org.plantd.Event", `a${i}`);
    await waitFor(() => first.tagged("a").length === 5, { what: "a0..a4" });
    const seen = first.tagged("a");
    assert.ok(seen.every((m) => RING_OFFSET.test(m.offset)), JSON.stringify(seen));
    const last = seen.at(-1)!.offset;
    await first.close();

    // Missed while away: b0..b4, and something another prefix would see.
    const watcher = await new WsClient(system.url).open();
    watcher.send({ type: "subscribe", id: "all", bus: "event", prefix: "" });
    await watcher.next((m) => m.type === "subscribed");
    for (let i = 0; i < 5; i++) {
      publisher.publish("org.plantd.Event", `b${i}`);
      publisher.publish("org.plantd.Other", `b-other${i}`);
    }
    await waitFor(() => watcher.tagged("b-other").length === 5, { what: "b messages published" });
    await watcher.close();

    second = await new WsClient(system.url).open();
    second.send({
      type: "subscribe",
      id: "e",
      bus: "event",
      prefix: "org.plantd.Event",
      from: last,
    });
    await second.next((m) => m.type === "subscribed");
    await waitFor(() => second!.tagged("b").length === 5, { what: "replayed b0..b4" });
    publisher.publish("org.plantd.Event", "c0");
    await waitFor(() => second!.tagged("c").length === 1, { what: "live c0" });
    const messages = second.received.filter((m) => m.type === "message").map((m) => m.payload);
    assert.deepEqual(messages, ["b0", "b1", "b2", "b3", "b4", "c0"], "exactly the missed, once");
    assert.ok(!second.received.some((m) => m.type === "gap"));

    // An offset this gateway never gave: an explicit gap, then live messages.
    second.send({ type: "subscribe", id: "x", bus: "event", prefix: "org.plantd.", from: "0:1" });
    const gap = await second.next((m) => m.type === "gap" && m.id === "x");
    assert.equal(gap.code, "NOT_RECOVERABLE");
    assert.equal(gap.from, "0:1");
    publisher.publish("org.plantd.Event", "d0");
    await second.next((m) => m.type === "message" && m.id === "x" && m.payload === "d0");
  } finally {
    await first.close();
    await second?.close();
    await publisher.close();
    await system.stop();
  }
});

Deno.test("two gateway processes on one broker and one Redis share subscriptions, offsets, history and the state cache", async () => {
  const prefix = randomPrefix();
  const shared = {
    redis_url: TEST_REDIS_URL,
    redis_key_prefix: prefix,
    state_cache_ttl_ms: 60_000,
  };
  const system = await startSystem({ gateway: shared });
  const clients: WsClient[] = [];
  const publisher = new Publisher(system.frontends.event!, { form: "frames" });
  let b: Awaited<ReturnType<typeof spawnGateway>> | undefined;
  const links: RedisLink[] = [];
  try {
    b = await spawnGateway(system, {
      PLANTD_REDIS_URL: TEST_REDIS_URL, // the plain variable of the issue
      PLANTD_GATEWAY_REDIS_KEY_PREFIX: prefix,
      PLANTD_GATEWAY_STATE_CACHE_TTL_MS: "60000",
    });
    const gatewayB = b;
    for (const url of [system.url, b.url]) {
      await waitFor(async () => redisCheck((await health(url)).body)?.status === "UP", {
        what: `redis UP on ${url}`,
        timeoutMs: 15_000,
      });
    }

    // Subscriptions through A and through B see the same messages with the same offsets.
    const a1 = await new WsClient(system.url).open();
    const b1 = await new WsClient(b.url).open();
    clients.push(a1, b1);
    for (const c of [a1, b1]) {
      c.send({ type: "subscribe", id: "e", bus: "event", prefix: "org.plantd.Event" });
      await c.next((m) => m.type === "subscribed");
    }
    await warmUp(publisher, [a1, b1], "warm", STREAM_OFFSET);
    for (let i = 0; i < 10; i++) publisher.publish("org.plantd.Event", `n${i}`);
    await waitFor(() => a1.tagged("n").length === 10 && b1.tagged("n").length === 10, {
      what: "n0..n9 through both gateways",
    });
    assert.deepEqual(a1.tagged("n"), b1.tagged("n"));
    assert.ok(a1.tagged("n").every((m) => STREAM_OFFSET.test(m.offset)));
    const lastOnA = a1.tagged("n").at(-1)!.offset;
    await a1.close();

    // Missed by the client of A; it comes back through B with A's offset.
    for (let i = 10; i < 20; i++) publisher.publish("org.plantd.Event", `n${i}`);
    await waitFor(() => b1.tagged("n").length === 20, { what: "n10..n19 through B" });
    const b2 = await new WsClient(b.url).open();
    clients.push(b2);
    b2.send({
      type: "subscribe",
      id: "r",
      bus: "event",
      prefix: "org.plantd.Event",
      from: lastOnA,
    });
    await b2.next((m) => m.type === "subscribed");
    await waitFor(() => b2.tagged("n").length === 10, { what: "replay of n10..n19 on B" });
    publisher.publish("org.plantd.Event", "n20");
    await waitFor(() => b2.tagged("n").length === 11 && b1.tagged("n").length === 21, {
      what: "live n20",
    });
    assert.deepEqual(b2.tagged("n"), b1.tagged("n").slice(10), "exactly the missed, then live");
    assert.ok(!b2.received.some((m) => m.type === "gap"));

    // The state cache is shared: a value written through A is served by B
    // from Redis even with the state service gone.
    const put = await fetch(`${system.url}/api/state/plant/setpoint`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "42",
    });
    assert.equal(put.status, 200, await put.text());
    const direct = new RedisLink({ url: TEST_REDIS_URL, keyPrefix: prefix });
    links.push(direct);
    await waitFor(() => direct.up);
    const stored = await direct.redis.hget(direct.key("state-cache", "plant"), "setpoint");
    assert.match(stored ?? "", /\|1\|\{"value":"42","revision":1,/);
    await system.stopState();
    const read = await fetch(`${gatewayB.url}/api/state/plant/setpoint`);
    const body = await read.json();
    assert.equal(read.status, 200, JSON.stringify(body));
    assert.equal(body.value, "42");
  } finally {
    await publisher.close();
    for (const c of clients) await c.close();
    await b?.stop();
    for (const link of links) await link.close();
    await system.stop();
    await deleteKeys(TEST_REDIS_URL, prefix);
  }
});

Deno.test("two gateway processes on one Redis share the per-address rate limit: what A allowed, B refuses", async () => {
  const prefix = randomPrefix();
  const limit = 12;
  const system = await startSystem({
    gateway: { redis_url: TEST_REDIS_URL, redis_key_prefix: prefix, rate_limit_per_ip: limit },
  });
  let b: Awaited<ReturnType<typeof spawnGateway>> | undefined;
  try {
    b = await spawnGateway(system, {
      PLANTD_REDIS_URL: TEST_REDIS_URL,
      PLANTD_GATEWAY_REDIS_KEY_PREFIX: prefix,
      PLANTD_GATEWAY_RATE_LIMIT_PER_IP: String(limit),
    });
    for (const url of [system.url, b.url]) {
      await waitFor(async () => redisCheck((await health(url)).body)?.status === "UP", {
        what: `redis UP on ${url}`,
        timeoutMs: 15_000,
      });
    }
    const statuses = async (url: string, count: number) => {
      const out: number[] = [];
      for (let i = 0; i < count; i++) {
        const response = await fetch(`${url}/api/services`);
        await response.body?.cancel();
        out.push(response.status);
      }
      return out;
    };
    // The whole budget of this address is spent through A...
    assert.deepEqual(await statuses(system.url, limit), Array(limit).fill(200));
    // ...so B, counting in the same Redis window, refuses at once; A too.
    assert.deepEqual(await statuses(b.url, 2), [429, 429]);
    assert.deepEqual(await statuses(system.url, 1), [429]);
  } finally {
    await b?.stop();
    await system.stop();
    await deleteKeys(TEST_REDIS_URL, prefix);
  }
});

Deno.test("Redis going away: /healthz shows redis DOWN, the gateway keeps serving from its fallbacks, and recovers when Redis returns", async () => {
  const server = new RedisServer();
  await server.start();
  const system = await startSystem({
    gateway: { redis_url: server.url, redis_key_prefix: randomPrefix() },
  });
  const publisher = new Publisher(system.frontends.event!, { form: "frames" });
  const ws = await new WsClient(system.url).open();
  try {
    await waitFor(async () => redisCheck((await health(system.url)).body)?.status === "UP", {
      what: "redis UP",
    });
    ws.send({ type: "subscribe", id: "e", bus: "event", prefix: "org.plantd.Event" });
    await ws.next((m) => m.type === "subscribed");
    await warmUp(publisher, [ws], "before", STREAM_OFFSET);

    await server.stop();
    let down: { status: number; body: any } | undefined;
    await waitFor(async () => {
      down = await health(system.url);
      return redisCheck(down.body)?.status === "DOWN";
    }, { what: "redis DOWN on /healthz" });
    assert.equal(down!.status, 200, "redis is not required: the gateway stays UP");
    assert.equal(down!.body.status, "UP");
    assert.equal(redisCheck(down!.body)?.required, false);
    const gap = await ws.next((m) => m.type === "gap", "gap when Redis went away");
    assert.equal(gap.code, "NOT_RECOVERABLE");
    // Live messages carry on, with the gateway's own offsets.
    await warmUp(publisher, [ws], "during", RING_OFFSET);
    // Requests still work (state cache in process).
    const put = await fetch(`${system.url}/api/state/plant/mode`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "auto",
    });
    assert.equal(put.status, 200, await put.text());
    const get = await fetch(`${system.url}/api/state/plant/mode`);
    assert.equal((await get.json()).value, "auto");

    await server.start();
    await waitFor(async () => redisCheck((await health(system.url)).body)?.status === "UP", {
      what: "redis UP again",
      timeoutMs: 15_000,
    });
    await ws.next((m) => m.type === "gap", "gap when history went back to Redis");
    await warmUp(publisher, [ws], "after", STREAM_OFFSET);
    const again = await fetch(`${system.url}/api/state/plant/mode`);
    assert.equal((await again.json()).value, "auto");
  } finally {
    await ws.close();
    await publisher.close();
    await system.stop();
    await server.dispose();
  }
});
