/**
 * Hostile WebSocket clients: floods that never read (closed with 4008),
 * oversized text and binary messages (1009), binary and malformed frames,
 * invalid JSON, thousands of subscriptions, floods of requests, and
 * connections dropped without a closing handshake. After each, the open
 * session gauge returns to its baseline, the gateway closes its side of them,
 * and the gateway still serves REST and WebSocket clients.
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { metricValue, RawWs, serverSocketsFor, untilMetric, wsFrame } from "./_hostile.ts";
import type { GatewayConfig } from "../config/components.ts";
import { startSystem, type System } from "./_system.ts";
import { Publisher } from "../bus/publisher.ts";

const MAX_MESSAGE = 64 * 1024;

async function withSystem(
  body: (system: System) => Promise<void>,
  gateway: Partial<GatewayConfig> = {},
): Promise<void> {
  const system = await startSystem({
    gateway: {
      ws_max_buffered_bytes: 4 * 1024 * 1024,
      ws_max_message_bytes: MAX_MESSAGE,
      ws_max_subscriptions: 256,
      // Most tests here send faster and open more sockets than the defaults allow.
      ws_max_messages_per_s: 100_000,
      ws_max_per_user: 1000,
      // A loaded machine (tests run in parallel) must not turn answers into 504s.
      request_timeout_ms: 30_000,
      ...gateway,
    },
  });
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

/** The gateway still answers REST and a fresh WebSocket's ping. */
async function assertServes(system: System, after: string): Promise<void> {
  const response = await fetch(system.url + "/api/state");
  assert.equal(response.status, 200, `REST after ${after}`);
  await response.body?.cancel();
  const ws = await RawWs.open(system.url);
  try {
    assert.equal((await ws.message())?.type, "welcome");
    await ws.send(JSON.stringify({ type: "ping", id: "alive" }));
    const pong = await ws.message();
    assert.deepEqual(pong, { type: "pong", id: "alive" }, `WebSocket after ${after}`);
  } finally {
    ws.drop();
  }
}

/** Waits for the open-session gauge to read `expected`. */
function untilSessions(system: System, expected: number, what: string): Promise<void> {
  return untilMetric(
    system.url,
    "ws_connections",
    expected,
    `ws_connections back to ${expected} after ${what}`,
  );
}

Deno.test("a client flooding pings without reading is rate limited, then dropped, and released", async () => {
  await withSystem(async (system) => {
    const sessions = await metricValue(system.url, "ws_connections");
    const limited = 'ws_protocol_errors_total{code="RATE_LIMITED"}';
    const before = await metricValue(system.url, limited);
    const ws = await RawWs.open(system.url);
    try {
      assert.equal((await ws.message())?.type, "welcome");
      // 50,000 pings with long ids, in batches, never a read.
      const ping = wsFrame(0x1, JSON.stringify({ type: "ping", id: "p".repeat(120) }));
      const batch = new Uint8Array(ping.length * 1000);
      for (let i = 0; i < 1000; i++) batch.set(ping, i * ping.length);
      for (let sent = 0; sent < 50_000; sent += 1000) {
        // A write the gateway no longer reads would wait forever: stop there.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const written = await Promise.race([
          ws.write(batch),
          new Promise<"stalled">((resolve) => timer = setTimeout(() => resolve("stalled"), 2000)),
        ]);
        clearTimeout(timer);
        if (written !== true) break; // closed (or stalled) by the server
      }
      // Beyond ws_max_messages_per_s the pings are dropped and counted.
      await untilMetric(system.url, limited, (v) => v > before);
      // What the client finds when it reads at last: pongs, one RATE_LIMITED error
      // per second of flood, then the end (Deno's WebSocket layer drops a
      // connection whose unread input piles up; a 4008 close if the send buffer did).
      let pongs = 0;
      let rateLimited = 0;
      while (true) {
        const frame = await ws.frame();
        if (!frame) break;
        if (frame.opcode === 0x8) {
          const code = (frame.payload[0]! << 8) | frame.payload[1]!;
          assert.ok([4008, 1008, 1011].includes(code), `close code ${code}`);
          break;
        }
        const message = JSON.parse(new TextDecoder().decode(frame.payload));
        if (message.type === "pong") pongs++;
        else if (message.code === "RATE_LIMITED") rateLimited++;
        else assert.fail(JSON.stringify(message));
        if (pongs + rateLimited >= 5000) break; // the connection may also stay open: enough read
      }
      assert.ok(pongs > 0 && pongs < 50_000, `pongs ${pongs}`);
      // The RATE_LIMITED error itself may be among what is lost when the connection
      // is dropped; the counter above is what proves the limit.
      assert.ok(rateLimited <= pongs, `${rateLimited} RATE_LIMITED errors`);
    } finally {
      ws.drop();
    }
    await untilSessions(system, sessions, "a ping flood");
    await assertServes(system, "a ping flood");
  }, { ws_max_messages_per_s: 1000 });
});

Deno.test("a subscriber that stops reading a busy bus is closed with 4008 and counted", async () => {
  await withSystem(async (system) => {
    const sessions = await metricValue(system.url, "ws_connections");
    const slow = await metricValue(system.url, "ws_slow_consumer_disconnects_total");
    const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
    const ws = await RawWs.open(system.url);
    try {
      assert.equal((await ws.message())?.type, "welcome");
      await ws.send(JSON.stringify({ type: "subscribe", id: "s", bus: "event", prefix: "flood" }));
      assert.equal((await ws.message())?.type, "subscribed");
      // From here on the client reads nothing.
      const big = "x".repeat(16 * 1024);
      await waitFor(async () => {
        for (let i = 0; i < 100; i++) publisher.publish("flood", big);
        return await metricValue(system.url, "ws_slow_consumer_disconnects_total") > slow;
      }, { timeoutMs: 30_000, intervalMs: 10, what: "a slow consumer disconnect" });
      assert.equal(await ws.closeCode(), 4008);
    } finally {
      ws.drop();
      await publisher.close();
    }
    await untilSessions(system, sessions, "a slow consumer");
    await assertServes(system, "a slow consumer");
  }, { ws_max_buffered_bytes: 256 * 1024 });
});

Deno.test("oversized, binary, malformed and invalid messages get their close code or error", async () => {
  await withSystem(async (system) => {
    const sessions = await metricValue(system.url, "ws_connections");
    const tooBig = 'ws_protocol_errors_total{code="TOO_BIG"}';
    const before = await metricValue(system.url, tooBig);
    const cases: Array<
      { name: string; frames: Uint8Array[]; close?: number[]; error?: RegExp; code?: string }
    > = [
      {
        name: "text one byte over the limit",
        frames: [wsFrame(0x1, JSON.stringify({ type: "ping", id: "x".repeat(MAX_MESSAGE) }))],
        close: [1009],
      },
      {
        // 40,000 two-byte characters: 80,000 bytes, though only 40,000 UTF-16 units.
        name: "multi-byte text over the limit in bytes",
        frames: [wsFrame(0x1, JSON.stringify({ type: "ping", id: "é".repeat(40_000) }))],
        close: [1009],
      },
      {
        name: "binary over the limit",
        frames: [wsFrame(0x2, new Uint8Array(1024 * 1024))],
        close: [1009],
      },
      {
        name: "a fragmented message over the limit",
        frames: [
          wsFrame(0x1, "[" + "1,".repeat(20_000), { fin: false }),
          wsFrame(0x0, "1,".repeat(20_000), { fin: false }),
          wsFrame(0x0, "1]"),
        ],
        close: [1009],
      },
      {
        name: "a small binary message",
        frames: [wsFrame(0x2, Uint8Array.of(0, 1, 2, 0xff))],
        error: /JSON text/,
      },
      { name: "not JSON", frames: [wsFrame(0x1, "{'type': 'ping'")], error: /not valid JSON/ },
      { name: "JSON of the wrong shape", frames: [wsFrame(0x1, "[1,2,3]")], error: /./ },
      {
        name: "30,000 levels of nesting",
        frames: [wsFrame(0x1, "[".repeat(30_000) + "]".repeat(30_000))],
        error: /./,
      },
      {
        name: "unknown type",
        frames: [wsFrame(0x1, JSON.stringify({ type: "__proto__", id: "u" }))],
        error: /./,
      },
      {
        name: "prototype pollution",
        frames: [
          wsFrame(
            0x1,
            '{"type":"subscribe","id":"p","bus":"__proto__","prefix":"","__proto__":{"x":1}}',
          ),
        ],
        error: /Unknown bus/,
        code: "NOT_FOUND",
      },
      {
        name: "a 10 KB id",
        frames: [wsFrame(0x1, JSON.stringify({ type: "ping", id: "i".repeat(10_000) }))],
        error: /./,
      },
      // The WebSocket layer itself (Deno): a close frame with a reserved code gets
      // 1002; the rest make it drop the connection without a close frame (0 here).
      {
        name: "a close frame with a reserved code",
        frames: [wsFrame(0x8, Uint8Array.of(0x03, 0xe7))],
        close: [1002],
      },
      {
        name: "invalid UTF-8 in a text frame",
        frames: [wsFrame(0x1, Uint8Array.of(0x22, 0xff, 0xfe, 0x22))],
        close: [1007, 0],
      },
      { name: "a reserved opcode", frames: [wsFrame(0x3, "x")], close: [1002, 0] },
      {
        name: "a continuation with nothing to continue",
        frames: [wsFrame(0x0, "x")],
        close: [1002, 0],
      },
      {
        name: "a control frame over 125 bytes",
        frames: [wsFrame(0x9, new Uint8Array(200))],
        close: [1002, 0],
      },
      {
        name: "reserved bits set",
        frames: [
          Uint8Array.from(wsFrame(0x1, '{"type":"ping"}'), (b, i) => i === 0 ? b | 0x40 : b),
        ],
        close: [1002, 0],
      },
      {
        name: "a length of 2^62",
        frames: [Uint8Array.of(0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4)],
        close: [1009, 1002, 0],
      },
    ];
    for (const test of cases) {
      const ws = await RawWs.open(system.url);
      try {
        assert.equal((await ws.message())?.type, "welcome");
        for (const frame of test.frames) await ws.write(frame);
        if (test.close) {
          const code = (await ws.closeCode()) ?? 0;
          assert.ok(test.close.includes(code), `${test.name}: close code ${code}`);
        } else {
          const reply = await ws.message();
          assert.equal(
            reply?.type,
            "error",
            `${test.name}: ${JSON.stringify(reply)?.slice(0, 200)}`,
          );
          assert.equal(reply?.code, test.code ?? "BAD_REQUEST", test.name);
          assert.match(String(reply?.message), test.error!, test.name);
          // The connection stays usable after a bad message.
          await ws.send(JSON.stringify({ type: "ping", id: "after" }));
          assert.deepEqual(await ws.message(), { type: "pong", id: "after" }, test.name);
        }
      } finally {
        ws.drop();
      }
    }
    assert.equal(
      await metricValue(system.url, tooBig),
      before + 4,
      "each oversized message counted",
    );
    await untilSessions(system, sessions, "malformed messages");
    await assertServes(system, "malformed messages");
  });
});

Deno.test("thousands of subscriptions stop at the limit and are all released", async () => {
  await withSystem(async (system) => {
    const sessions = await metricValue(system.url, "ws_connections");
    const ws = await RawWs.open(system.url);
    try {
      assert.equal((await ws.message())?.type, "welcome");
      const frames = [];
      for (let i = 0; i < 3000; i++) {
        frames.push(
          wsFrame(
            0x1,
            JSON.stringify({ type: "subscribe", id: `s${i}`, bus: "metric", prefix: `p${i}.` }),
          ),
        );
      }
      for (const frame of frames) await ws.write(frame);
      let subscribed = 0;
      let refused = 0;
      while (subscribed + refused < 3000) {
        const message = await ws.message();
        assert.ok(message, "the connection stays open");
        if (message.type === "subscribed") subscribed++;
        else if (message.code === "TOO_MANY_SUBSCRIPTIONS") refused++;
        else assert.fail(`unexpected ${JSON.stringify(message)}`);
      }
      assert.deepEqual([subscribed, refused], [256, 2744]);
      // Unsubscribing frees room again.
      await ws.send(JSON.stringify({ type: "unsubscribe", id: "s0" }));
      assert.deepEqual(await ws.message(), { type: "unsubscribed", id: "s0" });
      await ws.send(JSON.stringify({ type: "subscribe", id: "again", bus: "metric", prefix: "" }));
      assert.equal((await ws.message())?.type, "subscribed");
    } finally {
      ws.drop();
    }
    await untilSessions(system, sessions, "3000 subscriptions");
    await assertServes(system, "3000 subscriptions");
  });
});

Deno.test({
  name: "connections dropped without a closing handshake leak no session and no descriptor",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await withSystem(async (system) => {
      await assertServes(system, "warm-up");
      const sessions = 0;
      await untilSessions(system, sessions, "warm-up");
      const dropped: RawWs[] = [];
      for (let i = 0; i < 200; i++) {
        const ws = await RawWs.open(system.url);
        dropped.push(ws);
        // Some hold subscriptions and watches, some pending requests, some a half-sent frame.
        if (i % 4 === 0) {
          await ws.send(JSON.stringify({ type: "subscribe", id: "s", bus: "event", prefix: "" }));
        } else if (i % 4 === 1) {
          await ws.send(JSON.stringify({ type: "watch", id: "w", scope: "plant" }));
        } else if (i % 4 === 2) {
          await ws.send(JSON.stringify({
            type: "request",
            id: "r",
            service: "nobody.home",
            body: ["x"],
            timeout_ms: 300_000,
          }));
        } else {
          await ws.write(wsFrame(0x1, '{"type":"ping","id":"half"}').subarray(0, 10));
        }
      }
      await untilSessions(system, sessions + 200, "200 opened");
      for (const ws of dropped) ws.drop();
      await untilSessions(system, sessions, "200 dropped");
      const port = Number(new URL(system.url).port);
      const ports = dropped.map((ws) => (ws.conn.localAddr as Deno.NetAddr).port);
      await waitFor(() => serverSocketsFor(port, ports) === 0, {
        timeoutMs: 20_000,
        intervalMs: 50,
        what: `the gateway closing the dropped connections (${serverSocketsFor(port, ports)} open)`,
      });
      await assertServes(system, "200 dropped connections");
    });
  },
});

Deno.test("a flood of requests to services without workers is answered and leaves nothing behind", async () => {
  await withSystem(async (system) => {
    const sessions = await metricValue(system.url, "ws_connections");
    const ws = await RawWs.open(system.url);
    try {
      assert.equal((await ws.message())?.type, "welcome");
      const count = 2000;
      // A duplicate id while the first is pending is refused.
      const pending = {
        type: "request",
        id: "dup",
        service: "nobody.dup",
        body: ["x"],
        timeout_ms: 300_000,
      };
      await ws.send(JSON.stringify(pending));
      await ws.send(JSON.stringify(pending));
      for (let i = 0; i < count; i++) {
        await ws.send(JSON.stringify({
          type: "request",
          id: `r${i}`,
          service: `nobody.${i % 50}`,
          body: ["x"],
          timeout_ms: 300,
        }));
      }
      const answered = new Set<string>();
      let duplicate = false;
      while (answered.size < count || !duplicate) {
        const message = await ws.message();
        assert.ok(message, "the connection stays open");
        assert.equal(message.type, "error", JSON.stringify(message));
        if (/in use/.test(String(message.message))) duplicate = true;
        else {
          // Past ws_max_pending_requests waiting (default 1024), TOO_MANY_REQUESTS at once.
          assert.ok(
            ["TIMEOUT", "SERVICE_UNAVAILABLE", "TOO_MANY_REQUESTS"].includes(String(message.code)),
            JSON.stringify(message),
          );
          answered.add(String(message.id));
        }
      }
      assert.equal(answered.size, count);
    } finally {
      ws.drop();
    }
    await untilSessions(system, sessions, "a request flood");
    await assertServes(system, "a request flood");
  });
});
