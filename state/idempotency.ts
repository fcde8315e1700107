/**
 * Idempotency keys of state writes (the IETF httpapi draft "The
 * Idempotency-Key HTTP Header Field", carried on the wire as the request's
 * `idempotency_key` field): what any state store needs to apply a keyed write
 * at most once, independent of its database. A store keeps, per owner and
 * key, the request's fingerprint and the reply it got, written in the same
 * transaction as the write, for a window; a request with a known key gets
 * the stored reply back instead of being applied again (docs/state.md,
 * Idempotency keys).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import type { WriteResult } from "./store.ts";

/**
 * A key: 1 to 255 printable ASCII characters (space included), what the
 * draft's structured-field string can carry.
 */
const KEY_RULE = "must be a string of 1..255 printable ASCII characters";
export const IdempotencyKey = z.string({ error: KEY_RULE }).min(1, KEY_RULE).max(255, KEY_RULE)
  .regex(/^[\x20-\x7e]+$/, KEY_RULE);

/** The wire field carrying the key in a state request's JSON. */
export const IDEMPOTENCY_FIELD = "idempotency_key";

/** Operations that change the store: the ones a key applies to (reads ignore it). */
export const WRITE_OPERATIONS: ReadonlySet<string> = new Set([
  "state-set",
  "state-set-many",
  "delete",
  "create-scope",
  "delete-scope",
  "state-cas",
]);

/**
 * The owner of keys sent without authentication: with auth off every caller
 * is the same nobody, so they share one key space.
 */
export const ANONYMOUS_OWNER = "anonymous";

/** The error code of a key reused with another request (HTTP 422 at the gateway). */
export const KEY_REUSED = "IDEMPOTENCY_KEY_REUSED";

/** A write guarded by a key, as a store takes it. */
export interface KeyedWrite {
  /** Whose key it is (the caller's principal id, or {@link ANONYMOUS_OWNER}). */
  owner: string;
  key: string;
  /** {@link fingerprint} of the request. */
  fingerprint: string;
  /** The reply text of the write's result: stored with the key, in the write's transaction. */
  reply(result: WriteResult): string;
  /** How long this key is kept, when not the store's window (ms). */
  windowMs?: number;
}

/** A key as stored. */
export interface StoredKey {
  fingerprint: string;
  reply: string;
  /** ms since the epoch; at or after it the key is forgotten (treated as absent). */
  expiresAt: number;
}

/** What became of a keyed write. */
export type KeyedOutcome =
  | { kind: "applied"; reply: string }
  | { kind: "replayed"; reply: string }
  | { kind: "reused" };

/**
 * What a store answers a keyed write with, given the key's stored state
 * (undefined: unknown or expired) and how to apply the write when it must.
 */
export function resolveKeyed(
  known: StoredKey | undefined,
  fingerprint: string,
  apply: () => string,
): KeyedOutcome {
  if (known === undefined) return { kind: "applied", reply: apply() };
  if (known.fingerprint !== fingerprint) return { kind: "reused" };
  return { kind: "replayed", reply: known.reply };
}

/** A map id of owner and key (length-prefixed: no separator can be forged). */
export function keyId(owner: string, key: string): string {
  return `${owner.length}:${owner}${key}`;
}

/**
 * JSON with object keys sorted at every level: the same arguments give the
 * same text whatever order the client sent them in.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value).sort().map((k) =>
      `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`
    );
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The fingerprint of a request: SHA-256 (hex) of the operation and its
 * checked arguments in canonical form, never of the raw JSON, so field order,
 * the token and the key itself do not count.
 */
export function fingerprint(operation: string, args: Record<string, unknown>): string {
  return createHash("sha256").update(canonicalJson([operation, args])).digest("hex");
}

/** Marks a stored reply (a JSON object's text) as replayed: `,"replayed":true` before its `}`. */
const REPLAY_MARK = ',"replayed":true}';

/** The stored reply as a replay answers it. */
export function replayReply(reply: string): string {
  return reply.endsWith("}") ? reply.slice(0, -1) + REPLAY_MARK : reply;
}

/** A reply text without the replay mark, and whether it had one (for the gateway). */
export function unmarkReplay(reply: string): { reply: string; replayed: boolean } {
  return reply.endsWith(REPLAY_MARK)
    ? { reply: reply.slice(0, -REPLAY_MARK.length) + "}", replayed: true }
    : { reply, replayed: false };
}

/** The reply to a key reused with another request, in the shape of the auth errors' replies. */
export function reusedReply(key: string): string {
  return `{"error": "${KEY_REUSED}", "message": ${
    JSON.stringify(
      `Idempotency key '${key}' was used for a different request (another operation or other arguments); use a new key for a new request`,
    )
  }}`;
}

/** What {@link startKeyPurge} purges. */
export interface KeyPurging {
  /** Deletes at most `limit` expired keys; resolves with how many went. */
  purgeExpiredKeys(limit: number): Promise<number>;
}

/** Options of {@link startKeyPurge}. */
export interface PurgeOptions {
  /** Time between passes. */
  intervalMs: number;
  /** Keys deleted per pass at most (each pass is one short statement). @default 5000 */
  batch?: number;
  onPurged?(count: number): void;
  onError?(error: unknown): void;
}

/**
 * Purges expired keys every `intervalMs`, a bounded batch per pass; a full
 * batch is followed by another pass at once, so a backlog drains without
 * one long statement.
 */
export function startKeyPurge(store: KeyPurging, options: PurgeOptions): { stop(): Promise<void> } {
  const batch = options.batch ?? 5000;
  let stopped = false;
  let running: Promise<void> | undefined;
  const pass = async () => {
    try {
      let purged: number;
      do {
        purged = await store.purgeExpiredKeys(batch);
        if (purged > 0) options.onPurged?.(purged);
      } while (purged >= batch && !stopped);
    } catch (error) {
      options.onError?.(error);
    }
  };
  const timer = setInterval(() => {
    if (running) return;
    running = pass().finally(() => running = undefined);
  }, options.intervalMs);
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}

/** Time between purge passes for a window: a tenth of it, within 1 s and 60 s. */
export function purgeIntervalMs(windowMs: number): number {
  return Math.min(60_000, Math.max(1000, Math.floor(windowMs / 10)));
}
