import assert from "node:assert/strict";
import type { BusMessage } from "../bus/envelope.ts";
import { parseEvent } from "./event.ts";

const NOW = Date.UTC(2025, 5, 1);

function message(payload: string | Uint8Array, topic = "alarm.pump1.temp"): BusMessage {
  return {
    bus: "event",
    topic,
    payload: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
    form: "frames",
  };
}

Deno.test("parseEvent takes time, device, severity and kind from a JSON object payload", () => {
  const payload = JSON.stringify({
    kind: "alarm",
    state: "raised",
    severity: "critical",
    device: "pump1",
    channel: "temp",
    time: "2024-01-01T00:00:01.5+01:00",
  });
  const result = parseEvent(message(payload), NOW);
  assert.deepEqual(result, {
    ok: true,
    event: {
      time: Date.UTC(2023, 11, 31, 23, 0, 1, 500),
      bus: "event",
      topic: "alarm.pump1.temp",
      device: "pump1",
      severity: "critical",
      kind: "alarm",
      payload,
    },
  });
});

Deno.test("parseEvent keeps anything else as text with the receive time", () => {
  for (const payload of ["plain text", "[1,2]", '{"time":"yesterday","device":7}', "{broken"]) {
    const result = parseEvent(message(payload), NOW);
    assert.ok(result.ok);
    assert.equal(result.event.time, NOW, payload);
    assert.equal(result.event.device, null, payload);
    assert.equal(result.event.severity, null, payload);
    assert.equal(result.event.payload, payload);
  }
});

Deno.test("parseEvent makes invalid UTF-8 and NUL storable and refuses oversized payloads", () => {
  const bytes = parseEvent(message(new Uint8Array([0x41, 0xff, 0x00, 0x42])), NOW);
  assert.ok(bytes.ok);
  assert.equal(bytes.event.payload, "A\uFFFD\uFFFDB");
  const nul = parseEvent(message('{"device":"a\\u0000b"}', "t\u0000"), NOW);
  assert.ok(nul.ok);
  assert.equal(nul.event.device, "a\uFFFDb");
  assert.equal(nul.event.topic, "t\uFFFD");
  const big = parseEvent(message("x".repeat(1001)), NOW, 1000);
  assert.equal(big.ok, false);
  assert.equal(!big.ok && big.reason, "too_large");
  assert.ok(parseEvent(message("x".repeat(1000)), NOW, 1000).ok);
});
