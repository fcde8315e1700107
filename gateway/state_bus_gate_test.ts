/** The gateway's state bus ingress check (gateway/state_bus_gate.ts). */
import assert from "node:assert/strict";
import type { BusMessage } from "../bus/envelope.ts";
import { ChangeKey, ChangeSigner, publishChanges, publishHeartbeat } from "../state/changes.ts";
import type { Change } from "../state/store.ts";
import type { Logger } from "@logtape/logtape";
import { loggedStateBusGate, type RejectReason, StateBusGate } from "./state_bus_gate.ts";

const encoder = new TextEncoder();
const KEY = new ChangeKey(encoder.encode("a state bus secret of 32+ characters, for tests"));
const START = 1_800_000_000_000;

function set(key: string, value: string, revision = 1): Change {
  return { op: "set", scope: "plant", key, value, revision, timestamp: "2027-01-15T08:00:00.000Z" };
}

/** The bus messages `signer` (none: unsigned) makes of `changes`. */
function messages(changes: Change[], signer?: ChangeSigner): BusMessage[] {
  const out: BusMessage[] = [];
  publishChanges(
    {
      publish: (topic, payload) =>
        out.push({ bus: "state", topic, payload: encoder.encode(payload), form: "frames" }),
    },
    changes,
    signer,
  );
  return out;
}

/** The heartbeat `signer` sends now. */
function heartbeat(signer: ChangeSigner): BusMessage {
  let out: BusMessage | undefined;
  publishHeartbeat(
    {
      publish: (topic, payload) =>
        out = { bus: "state", topic, payload: encoder.encode(payload), form: "frames" },
    },
    signer,
    { everyMs: 1000, workers: 2 },
  );
  return out!;
}

function gate(options: { maxKeys?: number; key?: ChangeKey | null } = {}) {
  const rejected: RejectReason[] = [];
  const stream: string[] = [];
  const one = new StateBusGate({
    ...(options.key === null ? {} : { key: options.key ?? KEY }),
    maxSkewMs: 30_000,
    now: () => START,
    ...(options.maxKeys ? { maxKeys: options.maxKeys } : {}),
    onReject: (reason) => rejected.push(reason),
    stream: {
      change: (pub, n) => stream.push(`change ${pub} ${n}`),
      heartbeat: (pub, n, every, workers) =>
        stream.push(`heartbeat ${pub} ${n} ${every} ${workers}`),
    },
  });
  return { gate: one, rejected, stream };
}

Deno.test("genuine events pass; unsigned, badly signed and single-frame ones do not", () => {
  const { gate: g, rejected } = gate();
  const signer = new ChangeSigner(KEY, () => START);
  const [genuine] = messages([set("valve", "CLOSED")], signer);
  assert.equal(g.admit(genuine!), true);
  const [unsigned] = messages([set("valve", "OPEN-FORGED", 9)]);
  assert.equal(g.admit(unsigned!), false);
  const wrongKey = new ChangeSigner(new ChangeKey(encoder.encode("x".repeat(32))), () => START);
  const [forged] = messages([set("valve", "OPEN-FORGED", 9)], wrongKey);
  assert.equal(g.admit(forged!), false);
  // The genuine bytes in one frame (topic glued on): not what the state service sends.
  assert.equal(g.admit({ ...genuine!, form: "single" }), false);
  // The genuine payload under another topic (scope).
  assert.equal(g.admit({ ...genuine!, topic: "other" }), false);
  assert.deepEqual(rejected, ["unsigned", "bad_signature", "unsigned", "bad_signature"]);
});

Deno.test("a replayed event, or an older one for the same key, is refused; other keys are not", () => {
  const { gate: g, rejected } = gate();
  let now = START;
  const signer = new ChangeSigner(KEY, () => now);
  const [open, close] = messages([set("valve", "OPEN", 1), set("valve", "CLOSED", 2)], signer);
  now += 1;
  const [pump] = messages([set("pump", "ON")], signer);
  assert.equal(g.admit(open!), true);
  assert.equal(g.admit(close!), true);
  assert.equal(g.admit(close!), false, "the same event again");
  assert.equal(g.admit(open!), false, "an older event of the key");
  assert.equal(g.admit(pump!), true);
  assert.deepEqual(rejected, ["replayed", "replayed"]);
});

Deno.test("a key deleted and set again (revision 1 again) passes; the old set replayed does not", () => {
  const { gate: g } = gate();
  let now = START;
  const signer = new ChangeSigner(KEY, () => now++);
  const [old] = messages([set("valve", "OPEN", 5)], signer);
  const [deleted] = messages(
    [{ op: "delete", scope: "plant", key: "valve", timestamp: "t" }],
    signer,
  );
  const [again] = messages([set("valve", "CLOSED", 1)], signer);
  assert.equal(g.admit(old!), true);
  assert.equal(g.admit(deleted!), true);
  assert.equal(g.admit(again!), true);
  assert.equal(g.admit(old!), false);
  assert.equal(g.admit(deleted!), false);
});

Deno.test("events published before the gateway started (beyond the skew) are refused", () => {
  const { gate: g, rejected } = gate();
  const before = new ChangeSigner(KEY, () => START - 30_001);
  const within = new ChangeSigner(KEY, () => START - 29_999);
  assert.equal(g.admit(messages([set("valve", "OPEN")], before)[0]!), false);
  assert.equal(g.admit(messages([set("valve", "OPEN")], within)[0]!), true);
  assert.deepEqual(rejected, ["replayed"]);
});

Deno.test("a key evicted from the bounded map cannot be replayed: the floor rises to it", () => {
  const { gate: g } = gate({ maxKeys: 2 });
  let now = START;
  const signer = new ChangeSigner(KEY, () => now++);
  const [a, b, c] = messages([set("a", "1"), set("b", "1"), set("c", "1")], signer);
  assert.equal(g.admit(a!), true);
  assert.equal(g.admit(b!), true);
  assert.equal(g.admit(c!), true); // evicts "a"
  assert.equal(g.admit(a!), false);
});

Deno.test("without a key every message is refused as no_key", () => {
  const { gate: g, rejected } = gate({ key: null });
  assert.equal(g.hasKey, false);
  assert.equal(g.admit(messages([set("valve", "OPEN")], new ChangeSigner(KEY))[0]!), false);
  assert.deepEqual(rejected, ["no_key"]);
});

Deno.test("a signed payload that is not a change event is refused as malformed", () => {
  const { gate: g, rejected } = gate();
  const signer = new ChangeSigner(KEY, () => START);
  const payload = signer.sign("plant", JSON.stringify({ op: "set", scope: "plant" }));
  assert.equal(
    g.admit({ bus: "state", topic: "plant", payload: encoder.encode(payload), form: "frames" }),
    false,
  );
  assert.deepEqual(rejected, ["malformed"]);
});

Deno.test("a gateway's gate counts every refusal and logs a flood once per reason", () => {
  const counted: RejectReason[] = [];
  const lines: [string, Record<string, unknown>][] = [];
  const log = {
    warn: (message: string, props: Record<string, unknown>) => lines.push([message, props]),
  } as unknown as Logger;
  const g = loggedStateBusGate({ key: KEY, maxSkewMs: 0, count: (r) => counted.push(r), log });
  const [unsigned] = messages([set("valve", "OPEN-FORGED")]);
  for (let i = 0; i < 5; i++) assert.equal(g.admit(unsigned!), false);
  assert.deepEqual(counted, Array(5).fill("unsigned"));
  assert.deepEqual(lines, [[
    "state bus: dropped a change event ({reason}) on topic {topic}",
    { reason: "unsigned", topic: "plant" },
  ]]);
});

Deno.test("heartbeats go to the stream only; admitted changes tell it their publisher and number", () => {
  const { gate: g, rejected, stream } = gate();
  let now = START;
  const signer = new ChangeSigner(KEY, () => now++);
  const first = heartbeat(signer);
  assert.equal(g.admit(first), false, "no listener sees a heartbeat");
  const [open] = messages([set("valve", "OPEN")], signer);
  assert.equal(g.admit(open!), true);
  assert.equal(g.admit(heartbeat(signer)), false);
  assert.deepEqual(stream, [
    `heartbeat ${signer.pub} 0 1000 2`,
    `change ${signer.pub} 1`,
    `heartbeat ${signer.pub} 1 1000 2`,
  ]);
  assert.deepEqual(rejected, []);
});

Deno.test("a change overtaken by a newer one of its key is refused, and still counted in its publisher's numbers", () => {
  const { gate: g, rejected, stream } = gate();
  let now = START;
  // Two workers on one store: the older change of a key arrives after the newer one.
  const a = new ChangeSigner(KEY, () => now);
  const b = new ChangeSigner(KEY, () => now);
  const [older] = messages([set("valve", "OPEN", 1)], a);
  now += 1;
  const [newer] = messages([set("valve", "CLOSED", 2)], b);
  assert.equal(g.admit(newer!), true);
  assert.equal(g.admit(older!), false);
  assert.deepEqual(rejected, ["replayed"]);
  assert.deepEqual(stream, [`change ${b.pub} 1`, `change ${a.pub} 1`]);
});

Deno.test("a replayed, forged or malformed heartbeat is refused and never reaches the stream", () => {
  const { gate: g, rejected, stream } = gate();
  const signer = new ChangeSigner(KEY, () => START);
  const genuine = heartbeat(signer);
  assert.equal(g.admit(genuine), false);
  assert.equal(g.admit(genuine), false);
  const wrongKey = new ChangeSigner(new ChangeKey(encoder.encode("x".repeat(32))), () => START);
  assert.equal(g.admit(heartbeat(wrongKey)), false);
  const odd = signer.sign("", JSON.stringify({ op: "heartbeat", pub: "p", n: -1, seq: 1 }));
  assert.equal(
    g.admit({ bus: "state", topic: "", payload: encoder.encode(odd), form: "frames" }),
    false,
  );
  assert.deepEqual(rejected, ["replayed", "bad_signature", "malformed"]);
  assert.deepEqual(stream, [`heartbeat ${signer.pub} 0 1000 2`]);
});
