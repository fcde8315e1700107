/**
 * How committed changes leave the state service: published on the state bus
 * with envelope = scope name and a JSON payload
 * `{op, scope, key, value, revision, timestamp, pub, n, seq, sig}`.
 *
 * `seq` and `sig` make the event the state service's word (docs/security.md,
 * "Only the state service speaks for state"): `sig` is HMAC-SHA256 with the
 * state bus key over `topic + "\n" + payload-without-sig`, where
 * payload-without-sig is the payload with its final `,"sig":"…"` removed (the
 * JSON up to and including `seq`, closed with `}`), in base64url without
 * padding. It is the last field so a verifier strips a fixed-length suffix
 * instead of re-serialising; Go plantd subscribers ignore both fields. `seq`
 * is the publisher's clock in microseconds, strictly increasing, so a
 * verifier can refuse a replayed event (gateway/state_bus_gate.ts).
 *
 * `pub` names this publisher (random per process) and `n` counts its events
 * without gaps (1, 2, …); a heartbeat on topic `""` (no scope has an empty
 * name) says every `every` ms how many it has sent, and how many broker
 * connections (`workers`) its worker holds:
 * `{op:"heartbeat", pub, n, every, workers, seq, sig}`. A verifier that sees every
 * `n` of every live publisher knows it missed no change, so a gateway can keep
 * its read cache until a change arrives (gateway/state_coherence.ts).
 *
 * @module
 */
import { createHash, type Hash, randomBytes, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { Change } from "./store.ts";

/** Anything that can publish a topic and a payload (the bus Publisher does). */
export interface ChangeSink {
  publish(topic: string, payload: string): void;
}

/**
 * HMAC-SHA256 with one key (RFC 2104), its inner and outer hashes of the
 * padded key computed once: per message, copying them costs less than half
 * of a fresh `createHmac` (which sets the key up again each time).
 */
export class ChangeKey {
  readonly #inner: Hash;
  readonly #outer: Hash;

  constructor(key: Uint8Array) {
    const block = new Uint8Array(64);
    block.set(key.length > 64 ? createHash("sha256").update(key).digest() : key);
    const inner = block.map((byte) => byte ^ 0x36);
    const outer = block.map((byte) => byte ^ 0x5c);
    this.#inner = createHash("sha256").update(inner);
    this.#outer = createHash("sha256").update(outer);
  }

  /** The MAC of the concatenation of `parts`. */
  mac(...parts: (string | Uint8Array)[]): Buffer {
    const inner = this.#inner.copy();
    for (const part of parts) inner.update(part);
    return this.#outer.copy().update(inner.digest()).digest();
  }
}

/** `,"sig":"` + 43 base64url characters (32 bytes) + `"}`. */
const SIG_OPEN = ',"sig":"';
const SIG_CHARS = 43;
const SIG_SUFFIX_BYTES = SIG_OPEN.length + SIG_CHARS + 2;
const SIG_OPEN_BYTES = new TextEncoder().encode(SIG_OPEN);
const QUOTE = 0x22;
const CLOSE = 0x7d;

/** The topic of heartbeats: never a scope's (a scope's name is not empty). */
export const HEARTBEAT_TOPIC = "";

/** Signs change events; one per publisher (its `seq` only grows). */
export class ChangeSigner {
  /** This publisher's name in `pub`. */
  readonly pub: string = randomBytes(12).toString("base64url");
  #key: ChangeKey;
  #clock: () => number;
  #seq = 0;
  #sent = 0;

  /** `clock`: milliseconds (Date.now); `seq` is derived from it. */
  constructor(key: ChangeKey, clock: () => number = Date.now) {
    this.#key = key;
    this.#clock = clock;
  }

  /** The `n` of the next change event (1 for the first). */
  nextN(): number {
    return ++this.#sent;
  }

  /** Change events numbered so far (the `n` a heartbeat carries). */
  get sent(): number {
    return this.#sent;
  }

  /**
   * The next sequence number: the clock in microseconds, or one more than the
   * last when the clock has not moved on (same millisecond, or set back), so
   * it increases across restarts as long as the clock does.
   */
  nextSeq(): number {
    const now = Math.floor(this.#clock()) * 1000;
    this.#seq = now > this.#seq ? now : this.#seq + 1;
    return this.#seq;
  }

  /** The wire payload of `body` (a JSON object's text) under `topic`: `body` with `sig` appended. */
  sign(topic: string, body: string): string {
    const sig = this.#key.mac(topic, "\n", body).toString("base64url");
    return `${body.slice(0, -1)}${SIG_OPEN}${sig}"}`;
  }
}

/** Why {@link verifyChange} refused a payload. */
export type SignatureFault = "unsigned" | "bad_signature";

/**
 * Checks the `sig` of a change event's payload (bytes as received) under
 * `topic`: null when it is the key holder's, else why not. Nothing is
 * parsed or re-serialised: the signed bytes are the payload minus its suffix.
 */
export function verifyChange(
  key: ChangeKey,
  topic: string,
  payload: Uint8Array,
): SignatureFault | null {
  const end = payload.length;
  const open = end - SIG_SUFFIX_BYTES;
  if (open < 1 || payload[end - 1] !== CLOSE || payload[end - 2] !== QUOTE) return "unsigned";
  for (let i = 0; i < SIG_OPEN_BYTES.length; i++) {
    if (payload[open + i] !== SIG_OPEN_BYTES[i]) return "unsigned";
  }
  const sig = Buffer.from(
    payload.buffer,
    payload.byteOffset + open + SIG_OPEN_BYTES.length,
    SIG_CHARS,
  ).toString("latin1");
  const given = Buffer.from(sig, "base64url");
  // Buffer's decoder skips what is not base64url: re-encode to refuse such text.
  if (given.length !== 32 || given.toString("base64url") !== sig) return "bad_signature";
  const expected = key.mac(topic, "\n", payload.subarray(0, open), "}");
  return timingSafeEqual(expected, given) ? null : "bad_signature";
}

/** Publishes each change under its scope, signed when there is a signer. */
export function publishChanges(sink: ChangeSink, changes: Change[], signer?: ChangeSigner): void {
  for (const change of changes) {
    const event = {
      op: change.op,
      scope: change.scope,
      key: change.key ?? null,
      value: change.value ?? null,
      revision: change.revision ?? null,
      timestamp: change.timestamp,
    };
    if (!signer) {
      sink.publish(change.scope, JSON.stringify(event));
      continue;
    }
    // The store's number when it gives one (shared by several workers), else this publisher's.
    const body = JSON.stringify({
      ...event,
      pub: signer.pub,
      n: signer.nextN(),
      seq: change.seq ?? signer.nextSeq(),
    });
    sink.publish(change.scope, signer.sign(change.scope, body));
  }
}

/** What a heartbeat says besides the count: when the next comes, and the worker's broker connections. */
export interface HeartbeatInfo {
  everyMs: number;
  workers: number;
}

/** Publishes one heartbeat: how many change events `signer` has numbered, and `info`. */
export function publishHeartbeat(
  sink: ChangeSink,
  signer: ChangeSigner,
  info: HeartbeatInfo,
): void {
  const body = JSON.stringify({
    op: "heartbeat",
    pub: signer.pub,
    n: signer.sent,
    every: info.everyMs,
    workers: info.workers,
    seq: signer.nextSeq(),
  });
  sink.publish(HEARTBEAT_TOPIC, signer.sign(HEARTBEAT_TOPIC, body));
}

/** Publishes a heartbeat now and every `info.everyMs`; returns the stop. */
export function startHeartbeats(
  sink: ChangeSink,
  signer: ChangeSigner,
  info: HeartbeatInfo,
): () => void {
  const beat = () => publishHeartbeat(sink, signer, info);
  beat();
  const timer = setInterval(beat, info.everyMs);
  return () => clearInterval(timer);
}
