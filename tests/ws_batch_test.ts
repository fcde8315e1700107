/**
 * Batched delivery on /ws (`batch_ms`, docs/websocket.md): frames that are
 * JSON arrays of the usual messages, in order, without reordering what else
 * the connection sends.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem, type System } from "./_system.ts";
import { WsClient } from "./_ws.ts";

async function withSystem(body: (system: System) => Promise<void>): Promise<void> {
  const system = await startSystem();
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

const messagesOf = (ws: WsClient, id: string) =>
  ws.all.filter((m) => m.type === "message" && m.id === id);

Deno.test("batch_ms: messages arrive complete and in order in fewer frames; unbatched ones alone", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
    try {
      ws.send({ type: "subscribe", id: "b", bus: "event", prefix: "batched", batch_ms: 50 });
      await ws.nextOf("subscribed", "b");
      ws.send({ type: "subscribe", id: "u", bus: "event", prefix: "plain" });
      await ws.nextOf("subscribed", "u");
      // Subscriptions reach the bus asynchronously: publish until both deliver.
      await waitFor(() => {
        publisher.publish("batched", "warm");
        publisher.publish("plain", "warm");
        return messagesOf(ws, "b").length > 0 && messagesOf(ws, "u").length > 0;
      }, { what: "first messages of both subscriptions", intervalMs: 20 });

      const N = 500;
      for (let i = 0; i < N; i++) {
        publisher.publish("batched", String(i));
        if (i % 50 === 0) publisher.publish("plain", `p${i}`);
      }
      const numbered = (id: string) =>
        messagesOf(ws, id).filter((m) => m.payload !== "warm").map((m) => m.payload);
      await waitFor(() => numbered("b").length >= N && numbered("u").length >= N / 50, {
        what: `${N} batched messages`,
        timeoutMs: 30_000,
      });
      assert.deepEqual(numbered("b"), Array.from({ length: N }, (_, i) => String(i)));
      assert.deepEqual(numbered("u"), Array.from({ length: N / 50 }, (_, i) => `p${i * 50}`));
      // Batched messages are ordinary messages, offsets included.
      const one = messagesOf(ws, "b").at(-1)!;
      assert.deepEqual(Object.keys(one).sort(), [
        "bus",
        "encoding",
        "form",
        "id",
        "offset",
        "payload",
        "topic",
        "type",
      ]);
      assert.equal(one.topic, "batched");
      assert.ok(ws.arrayFrames > 0, "some frames were arrays");
      const all = ws.all.length;
      assert.ok(ws.frames < all, `${ws.frames} frames for ${all} messages`);
      // Only the batched subscription's messages come in arrays.
      assert.ok(messagesOf(ws, "u").every((m) => !ws.batched.has(m)));
      assert.ok(ws.all.filter((m) => m.type !== "message").every((m) => !ws.batched.has(m)));
    } finally {
      await publisher.close();
      await ws.close();
    }
  });
});

Deno.test("batch_ms: what the connection sends after a batched message comes after it", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
    try {
      // Fill the history: a plain subscription sees the messages arrive.
      ws.send({ type: "subscribe", id: "h", bus: "event", prefix: "hist" });
      await ws.nextOf("subscribed", "h");
      await waitFor(() => {
        publisher.publish("hist", "warm");
        return messagesOf(ws, "h").length > 0;
      }, { what: "first history message", intervalMs: 20 });
      const from = messagesOf(ws, "h")[0]!.offset;
      for (let i = 0; i < 20; i++) publisher.publish("hist", String(i));
      await waitFor(() => messagesOf(ws, "h").some((m) => m.payload === "19"), {
        what: "20 history messages",
      });
      const expected = messagesOf(ws, "h").slice(1).map((m) => m.payload);

      // A resume replays into the batch at once; a second later it would be
      // flushed by its timer. The ping right behind must not overtake it.
      ws.send({ type: "subscribe", id: "r", bus: "event", prefix: "hist", from, batch_ms: 1000 });
      ws.send({ type: "ping", id: "p" });
      ws.send({ type: "unsubscribe", id: "r" });
      await ws.nextOf("unsubscribed", "r");
      const order = ws.all.filter((m) =>
        (m.type === "message" && m.id === "r") || m.id === "p" || m.type === "unsubscribed" ||
        (m.type === "subscribed" && m.id === "r")
      );
      assert.deepEqual(
        order.map((m) => m.type === "message" ? m.payload : m.type),
        ["subscribed", ...expected, "pong", "unsubscribed"],
      );
      assert.ok(messagesOf(ws, "r").every((m) => ws.batched.has(m)), "replayed in one array");

      // Live: a batched message, then an unbatched one on the same bus behind it.
      ws.send({ type: "subscribe", id: "b", bus: "event", prefix: "slow", batch_ms: 1000 });
      await ws.nextOf("subscribed", "b");
      let k = 0;
      await waitFor(() => {
        publisher.publish("slow", String(k));
        publisher.publish("hist", `after${k++}`);
        return messagesOf(ws, "b").length > 0;
      }, { what: "a batched message", intervalMs: 50 });
      const batched = messagesOf(ws, "b")[0]!;
      await waitFor(
        () => messagesOf(ws, "h").some((m) => m.payload === `after${batched.payload}`),
        {
          what: "the unbatched message behind it",
        },
      );
      // Published right behind the batched message, on the same bus: not before it.
      const at = (payload: string) => ws.all.findIndex((m) => m.payload === payload);
      assert.ok(at(batched.payload) < at(`after${batched.payload}`));
    } finally {
      await publisher.close();
      await ws.close();
    }
  });
});

Deno.test("batch_ms outside 1..1000 is a BAD_REQUEST", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    try {
      for (const batch_ms of [0, 1001, 1.5, "10"]) {
        ws.send({ type: "subscribe", id: "x", bus: "event", prefix: "", batch_ms });
        const error = await ws.nextOf("error", "x");
        assert.equal(error.code, "BAD_REQUEST");
      }
    } finally {
      await ws.close();
    }
  });
});
