/** Signed change events (state/changes.ts): what the state service signs, what verifies. */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  ChangeKey,
  ChangeSigner,
  HEARTBEAT_TOPIC,
  publishChanges,
  publishHeartbeat,
  verifyChange,
} from "./changes.ts";
import type { Change } from "./store.ts";

const encoder = new TextEncoder();
const KEY = encoder.encode("a state bus secret of 32+ characters, for tests");
const change: Change = {
  op: "set",
  scope: "plant",
  key: "valve",
  value: "OPEN",
  revision: 3,
  timestamp: "2026-12-07T20:00:00.000Z",
};

function published(changes: Change[], signer?: ChangeSigner): [string, string][] {
  const out: [string, string][] = [];
  publishChanges({ publish: (topic, payload) => out.push([topic, payload]) }, changes, signer);
  return out;
}

Deno.test("ChangeKey computes HMAC-SHA256 (short keys and keys longer than a block)", () => {
  for (const key of [KEY, encoder.encode("k".repeat(100))]) {
    const parts = ["plant", "\n", encoder.encode('{"op":"set"'), "}"];
    const expected = createHmac("sha256", key).update('plant\n{"op":"set"}').digest();
    assert.deepEqual(new ChangeKey(key).mac(...parts), expected);
    // The precomputed state is copied, not consumed: the same MAC again.
    assert.deepEqual(new ChangeKey(key).mac("x"), new ChangeKey(key).mac("x"));
  }
});

Deno.test("a signed event keeps the JSON fields, adds pub, n, seq and a final sig over topic and payload", () => {
  const key = new ChangeKey(KEY);
  const signer = new ChangeSigner(key, () => 1_000);
  const [[topic, payload]] = published([change], signer) as [[string, string]];
  assert.equal(topic, "plant");
  const event = JSON.parse(payload);
  assert.deepEqual(
    { ...event, sig: undefined },
    { ...change, pub: signer.pub, n: 1, seq: 1_000_000, sig: undefined },
  );
  assert.match(payload, /,"sig":"[A-Za-z0-9_-]{43}"}$/);
  const body = payload.slice(0, payload.lastIndexOf(',"sig"')) + "}";
  assert.equal(event.sig, createHmac("sha256", KEY).update(`plant\n${body}`).digest("base64url"));
  assert.equal(verifyChange(key, topic, encoder.encode(payload)), null);
});

Deno.test("without a signer events are published as before (no seq, no sig)", () => {
  const [[, payload]] = published([change]) as [[string, string]];
  assert.deepEqual(JSON.parse(payload), change);
});

Deno.test("seq strictly increases, also within a millisecond and when the clock goes back", () => {
  let now = 5_000;
  const signer = new ChangeSigner(new ChangeKey(KEY), () => now);
  const seen = [signer.nextSeq(), signer.nextSeq()];
  now = 4_000; // clock set back
  seen.push(signer.nextSeq());
  now = 6_000;
  seen.push(signer.nextSeq());
  assert.deepEqual(seen, [5_000_000, 5_000_001, 5_000_002, 6_000_000]);
});

Deno.test("verifyChange refuses one flipped bit anywhere in topic, payload or signature", () => {
  const key = new ChangeKey(KEY);
  const [[topic, payload]] = published([change], new ChangeSigner(key)) as [[string, string]];
  const bytes = encoder.encode(payload);
  const topicBytes = encoder.encode(topic);
  for (let i = 0; i < topicBytes.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const flipped = topicBytes.slice();
      flipped[i]! ^= 1 << bit;
      assert.notEqual(
        verifyChange(key, new TextDecoder().decode(flipped), bytes),
        null,
        `topic byte ${i} bit ${bit}`,
      );
    }
  }
  for (let i = 0; i < bytes.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const flipped = bytes.slice();
      flipped[i]! ^= 1 << bit;
      assert.notEqual(verifyChange(key, topic, flipped), null, `payload byte ${i} bit ${bit}`);
    }
  }
});

Deno.test("verifyChange: unsigned, wrong key, truncated, non-base64url signature", () => {
  const key = new ChangeKey(KEY);
  const [[topic, payload]] = published([change], new ChangeSigner(key)) as [[string, string]];
  const [[, unsigned]] = published([change]) as [[string, string]];
  assert.equal(verifyChange(key, topic, encoder.encode(unsigned)), "unsigned");
  assert.equal(verifyChange(key, topic, encoder.encode("")), "unsigned");
  const other = new ChangeKey(encoder.encode("another secret of at least 32 characters!"));
  assert.equal(verifyChange(other, topic, encoder.encode(payload)), "bad_signature");
  assert.equal(verifyChange(key, topic, encoder.encode(payload.slice(1))), "bad_signature");
  // Same length, characters outside base64url: refused before any comparison.
  const garbled = payload.replace(/"sig":"(.{43})"/, `"sig":"${"!".repeat(43)}"`);
  assert.equal(verifyChange(key, topic, encoder.encode(garbled)), "bad_signature");
  // The last character holds 4 bits of the MAC and 2 unused bits: set one of them and the
  // text decodes to the same bytes. Refused: one signature, one spelling.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const last = payload.length - 3;
  const unusedBit = alphabet[alphabet.indexOf(payload[last]!) ^ 1]!;
  const respelled = payload.slice(0, last) + unusedBit + payload.slice(last + 1);
  assert.equal(verifyChange(key, topic, encoder.encode(respelled)), "bad_signature");
  // A signature over the topic and payload of another event does not carry over.
  const [[, otherPayload]] = published([{ ...change, value: "OPEN-FORGED" }]) as [
    [string, string],
  ];
  const forged = otherPayload.slice(0, -1) + payload.slice(payload.lastIndexOf(',"sig"'));
  assert.equal(verifyChange(key, topic, encoder.encode(forged)), "bad_signature");
});

Deno.test("n counts a publisher's events without gaps; heartbeats carry the count, signed on topic ''", () => {
  const key = new ChangeKey(KEY);
  const signer = new ChangeSigner(key, () => 2_000);
  const other = new ChangeSigner(key, () => 2_000);
  assert.notEqual(signer.pub, other.pub, "each publisher has its own name");
  const out: [string, string][] = [];
  const sink = { publish: (topic: string, payload: string) => out.push([topic, payload]) };
  publishHeartbeat(sink, signer, { everyMs: 1000, workers: 4 });
  publishChanges(sink, [change, { ...change, key: "pump" }], signer);
  publishChanges(sink, [{ ...change, revision: 4 }], signer);
  publishHeartbeat(sink, signer, { everyMs: 1000, workers: 4 });
  const events = out.map(([, payload]) => JSON.parse(payload));
  assert.deepEqual(events.map((e) => [e.op, e.n]), [
    ["heartbeat", 0],
    ["set", 1],
    ["set", 2],
    ["set", 3],
    ["heartbeat", 3],
  ]);
  const [beatTopic, beat] = out.at(-1)!;
  assert.equal(beatTopic, HEARTBEAT_TOPIC);
  assert.deepEqual({ ...JSON.parse(beat), seq: undefined, sig: undefined }, {
    op: "heartbeat",
    pub: signer.pub,
    n: 3,
    every: 1000,
    workers: 4,
    seq: undefined,
    sig: undefined,
  });
  assert.equal(verifyChange(key, beatTopic, encoder.encode(beat)), null);
});
