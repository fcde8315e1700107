import assert from "node:assert/strict";
import type { BusMessage } from "../../bus/envelope.ts";
import type { HistorySink } from "../bus_hub.ts";
import { waitFor } from "../../tests/_helpers.ts";
import { TEST_REDIS_URL, withLink } from "../../tests/_redis.ts";
import { TopicHistory } from "./history.ts";
import { compareStreamIds, Ring } from "./history_ring.ts";
import { RedisLink } from "./redis.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const all = () => true;

function frames(topic: string, payload: string): BusMessage {
  return { bus: "metric", topic, payload: encoder.encode(payload), form: "frames" };
}

const texts = (replay: { messages: { message: BusMessage }[] }) =>
  replay.messages.map((m) => decoder.decode(m.message.payload));

Deno.test("Ring: offsets, exact replay by prefix, gaps by count, age and epoch", () => {
  const time = { now: 1000 };
  const ring = new Ring(3, 100, () => time.now);
  const offsets = ["a", "b", "c"].map((p) => ring.record(frames(`t.${p}`, p)));
  assert.match(offsets[0]!, /^[0-9a-f]{8}:1$/);
  assert.equal(ring.compare(offsets[0]!, offsets[1]!), -1);
  const replay = ring.replay(offsets[0]!, all);
  assert.ok(!replay.gap);
  assert.deepEqual(texts(replay), ["b", "c"]);
  assert.equal(replay.until, offsets[2]);
  const byPrefix = ring.replay(offsets[0]!, (m) => m.topic === "t.c");
  assert.ok(!byPrefix.gap);
  assert.deepEqual(texts(byPrefix), ["c"]);
  // Up to date: nothing to replay.
  const none = ring.replay(offsets[2]!, all);
  assert.ok(!none.gap);
  assert.deepEqual(none.messages, []);

  // A fourth message pushes "a" out: resuming right after "a" is still exact,
  // resuming before it is not.
  offsets.push(ring.record(frames("t.d", "d")));
  const exact = ring.replay(offsets[0]!, all);
  assert.ok(!exact.gap);
  assert.deepEqual(texts(exact), ["b", "c", "d"]);
  const early = `${ring.epoch}:0`;
  assert.equal(ring.replay(early, all).gap?.code, "NOT_RECOVERABLE");

  // Age: after 100 ms, everything recorded at t=1000 is gone.
  time.now = 1050;
  offsets.push(ring.record(frames("t.e", "e")));
  time.now = 1101;
  const aged = ring.replay(offsets[3]!, all);
  assert.ok(!aged.gap, "e is young enough: resuming after d is exact");
  assert.deepEqual(texts(aged), ["e"]);
  assert.equal(ring.replay(offsets[2]!, all).gap?.code, "NOT_RECOVERABLE", "d is too old");

  // Other epochs and things that are not offsets.
  assert.equal(ring.replay("00000000:1", all).gap?.code, "NOT_RECOVERABLE");
  assert.equal(ring.replay("1718000000000-0", all).gap?.code, "NOT_RECOVERABLE");
  assert.equal(ring.replay("garbage", all).gap?.code, "NOT_RECOVERABLE");
  ring.reset();
  assert.equal(ring.replay(offsets[4]!, all).gap?.code, "NOT_RECOVERABLE", "reset: new epoch");
});

Deno.test("compareStreamIds orders Redis stream ids numerically", () => {
  assert.equal(compareStreamIds("9-0", "10-0"), -1);
  assert.equal(compareStreamIds("10-2", "10-10"), -1);
  assert.equal(compareStreamIds("10-1", "10-1"), 0);
  assert.equal(compareStreamIds("11-0", "10-99"), 1);
  assert.equal(compareStreamIds("a:1", "10-0"), undefined);
});

/** A hub stand-in that records what a history hands it. */
class Sink implements HistorySink {
  delivered: { offset: string; topic: string; text: string }[] = [];
  gaps: string[] = [];
  deliver(_bus: string, message: BusMessage, offset: string): void {
    this.delivered.push({ offset, topic: message.topic, text: decoder.decode(message.payload) });
  }
  gap(_bus: string, message: string): void {
    this.gaps.push(message);
  }
  split(bus: string, frame: Uint8Array): BusMessage {
    const envelope = encoder.encode("org.plantd.Metric");
    const match = envelope.every((b, i) => frame[i] === b);
    return {
      bus,
      topic: match ? "org.plantd.Metric" : "",
      payload: frame.subarray(match ? envelope.length : 0),
      form: "single",
    };
  }
}

Deno.test("TopicHistory on Redis: one writer for two replicas, the same offsets on both, exact resume, NOT_RECOVERABLE once trimmed, a gap when the writer changes", async () => {
  await withLink(async (link) => {
    const otherLink = new RedisLink({ url: TEST_REDIS_URL, keyPrefix: link.keyPrefix });
    const options = { buses: ["metric"], maxMessages: 5, maxAgeMs: 0, writerTtlMs: 600 };
    const a = new TopicHistory({ ...options, link });
    const b = new TopicHistory({ ...options, link: otherLink });
    const sinkA = new Sink();
    const sinkB = new Sink();
    a.attach(sinkA);
    b.attach(sinkB);
    try {
      await waitFor(() => a.mode === "stream" && b.mode === "stream", { what: "streaming" });
      await waitFor(() => a.writer || b.writer, { what: "a writer" });
      assert.notEqual(a.writer, b.writer, "exactly one writer");
      // Both gateways receive every bus message; neither delivers it directly.
      const publish = (message: BusMessage) => {
        assert.equal(a.received("metric", message), null);
        assert.equal(b.received("metric", message), null);
      };
      for (let i = 0; i < 3; i++) publish(frames("org.plantd.Event", `m${i}`));
      publish({
        bus: "metric",
        topic: "org.plantd.Metric",
        payload: encoder.encode('{"v":1}'),
        form: "single",
      });
      await waitFor(() => sinkA.delivered.length === 4 && sinkB.delivered.length === 4, {
        what: "4 deliveries on both",
      });
      assert.deepEqual(sinkA.delivered, sinkB.delivered, "same messages, same offsets");
      assert.deepEqual(sinkA.delivered.map((d) => d.text), ["m0", "m1", "m2", '{"v":1}']);
      assert.equal(sinkA.delivered[3]!.topic, "org.plantd.Metric", "single frame split again");
      assert.equal(
        await link.redis.xlen(link.key("history", "metric")),
        5,
        "stored once (4 messages and the writer's opening marker), not once per gateway",
      );

      const offsets = sinkA.delivered.map((d) => d.offset);
      const replay = await b.replay("metric", offsets[0]!, all);
      assert.ok(!replay.gap, replay.gap?.message ?? "");
      assert.deepEqual(replay.messages.map((m) => m.offset), offsets.slice(1));
      assert.equal(replay.until, offsets[3]);
      const filtered = await a.replay(
        "metric",
        offsets[0]!,
        (m) => m.topic === "org.plantd.Metric",
      );
      assert.ok(!filtered.gap);
      assert.deepEqual(filtered.messages.map((m) => m.offset), [offsets[3]]);

      // Resuming from before the writer's opening marker is not exact.
      const marker = await link.redis.xrange(link.key("history", "metric"), "-", "+", "COUNT", 1);
      assert.equal(marker[0]![1][2], "g");
      const beforeMarker = "1-0";
      assert.equal((await a.replay("metric", beforeMarker, all)).gap?.code, "NOT_RECOVERABLE");

      // Six more: the stream keeps the last five.
      for (let i = 4; i < 10; i++) publish(frames("org.plantd.Event", `m${i}`));
      await waitFor(() => sinkA.delivered.length === 10 && sinkB.delivered.length === 10);
      const all10 = sinkA.delivered.map((d) => d.offset);
      assert.equal(await link.redis.xlen(link.key("history", "metric")), 5);
      const justBefore = await a.replay("metric", all10[4]!, all);
      assert.ok(!justBefore.gap, "the entry before the oldest held: still exact");
      assert.deepEqual(justBefore.messages.map((m) => m.offset), all10.slice(5));
      const trimmed = await b.replay("metric", all10[3]!, all);
      assert.equal(trimmed.gap?.code, "NOT_RECOVERABLE");
      assert.equal(trimmed.gap?.from, all10[3]);
      assert.equal(
        (await a.replay("metric", "99999999999999-0", all)).gap?.code,
        "NOT_RECOVERABLE",
      );
      assert.equal((await a.replay("metric", "abc:1", all)).gap?.code, "NOT_RECOVERABLE");

      // The writer goes away: the other takes over and opens with a marker,
      // which the remaining reader reports as a gap.
      const [writer, survivor, survivorSink] = a.writer ? [a, b, sinkB] : [b, a, sinkA];
      const gapsBefore = survivorSink.gaps.length;
      await writer.close();
      await waitFor(() => survivor.writer, { what: "takeover", timeoutMs: 10_000 });
      await waitFor(() => survivorSink.gaps.length > gapsBefore, { what: "gap marker read" });
      assert.equal(survivor.received("metric", frames("org.plantd.Event", "after")), null);
      await waitFor(() => survivorSink.delivered.at(-1)?.text === "after");
      const across = await survivor.replay("metric", all10[9]!, all);
      assert.equal(across.gap?.code, "NOT_RECOVERABLE", "a replay across a marker is not exact");
    } finally {
      await a.close();
      await b.close();
      await otherLink.close();
    }
  });
});
