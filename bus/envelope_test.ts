import assert from "node:assert/strict";
import { decodeMessage, encodeFrames, encodeSingle, PrefixSet } from "./envelope.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("PrefixSet.match() finds the longest prefix", () => {
  const set = new PrefixSet(["org.plantd.", "org.plantd.Metric", "org"]);
  const match = (data: Uint8Array, length?: number, offset?: number) => {
    const found = set.match(data, length, offset);
    return found && { text: found.text, length: found.length };
  };
  assert.deepEqual(set.list(), ["org.plantd.Metric", "org.plantd.", "org"]);
  assert.deepEqual(match(enc.encode('org.plantd.Metric{"v":1}')), {
    text: "org.plantd.Metric",
    length: 17,
  });
  assert.deepEqual(match(enc.encode("org.plantd.Event{}")), {
    text: "org.plantd.",
    length: 11,
  });
  assert.equal(match(enc.encode("net.other")), undefined);
  // Only the first `length` bytes count.
  assert.deepEqual(match(enc.encode("org.plantd.Metric"), 5), { text: "org", length: 3 });
  // Matching can start at an offset.
  assert.deepEqual(match(enc.encode("xxorg.plantd.Metric"), 17, 2), {
    text: "org.plantd.Metric",
    length: 17,
  });
});

Deno.test("PrefixSet.remove() keeps a prefix still known for another reason", () => {
  const set = new PrefixSet(["a"]);
  set.add("a");
  assert.equal(set.remove("a"), false);
  assert.equal(set.size, 1);
  assert.equal(set.remove("a"), true);
  assert.equal(set.size, 0);
  assert.equal(set.remove("a"), false);
});

Deno.test("decodeMessage() reads a Go plantd single-frame metric", () => {
  const json = '{"time":"2024-01-01T00:00:00Z","device":"d","channel":"c","value":1.5}';
  const frame = enc.encode(`org.plantd.Metric${json}`);
  const message = decodeMessage([frame], new PrefixSet(["org.plantd.Metric"]), "metric");
  assert.equal(message.bus, "metric");
  assert.equal(message.topic, "org.plantd.Metric");
  assert.equal(message.form, "single");
  assert.deepEqual(JSON.parse(dec.decode(message.payload)), {
    time: "2024-01-01T00:00:00Z",
    device: "d",
    channel: "c",
    value: 1.5,
  });
});

Deno.test("decodeMessage() keeps JSON that looks like an envelope intact", () => {
  // Go plantd splits with a regular expression; a payload starting with "{" that
  // itself holds braces must come through byte for byte.
  const payload = '{"a":"org.plantd.Metric{}"}';
  const message = decodeMessage(
    [enc.encode(`org.plantd.Event${payload}`)],
    new PrefixSet(["org.plantd.Event", "org.plantd.Metric"]),
    "event",
  );
  assert.equal(message.topic, "org.plantd.Event");
  assert.equal(dec.decode(message.payload), payload);
});

Deno.test("decodeMessage() gives topic '' and the whole frame when no prefix matches", () => {
  const frame = enc.encode("unknown payload");
  const message = decodeMessage([frame], new PrefixSet(["org."]), "b");
  assert.equal(message.topic, "");
  assert.equal(dec.decode(message.payload), "unknown payload");
});

Deno.test("decodeMessage() reads the two-frame form", () => {
  const message = decodeMessage(
    encodeFrames("org.plantd.Metric", new Uint8Array([0, 1, 2])),
    new PrefixSet(),
    "metric",
  );
  assert.equal(message.topic, "org.plantd.Metric");
  assert.deepEqual([...message.payload], [0, 1, 2]);
  assert.equal(message.form, "frames");
});

Deno.test("encodeSingle() glues envelope and payload", () => {
  assert.equal(
    dec.decode(encodeSingle("org.plantd.Metric", '{"v":1}')),
    'org.plantd.Metric{"v":1}',
  );
  assert.deepEqual([...encodeSingle(new Uint8Array([1]), new Uint8Array([2, 3]))], [1, 2, 3]);
});
