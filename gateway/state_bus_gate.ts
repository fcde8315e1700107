/**
 * The gateway's ingress check of the state bus: only change events signed by
 * the state service (state/changes.ts), and each at most once, reach the
 * hub's listeners (read cache, history, WebSocket watches, bus subscriptions).
 * Everything else is dropped, counted and logged (rate-limited).
 *
 * Replays: a genuine event sent again is refused when its `seq` is not above
 * the last one accepted for its scope and key (scope events: the scope), or
 * not above a floor. The floor starts `maxSkewMs` before this gateway started
 * (what was published before then is never accepted), and rises to the `seq`
 * of each entry evicted from the bounded map, so an evicted key cannot be
 * replayed either.
 *
 * Heartbeats (topic `""`, state/changes.ts) pass the same checks, replays
 * per publisher, and go to `stream` only: no listener sees them. So does the
 * publisher and number of each signed change, admitted or refused as a
 * replay, so the read cache can tell that it missed none
 * (gateway/state_coherence.ts). A replayed heartbeat is not passed on: it
 * would keep a silent publisher alive.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { z } from "zod";
import type { BusMessage } from "../bus/envelope.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import {
  type ChangeKey,
  HEARTBEAT_TOPIC,
  type SignatureFault,
  verifyChange,
} from "../state/changes.ts";

/** Why a state bus message was dropped (label `reason` of gateway_bus_rejected_total). */
export type RejectReason = "no_key" | SignatureFault | "malformed" | "replayed";

/** Options of {@link StateBusGate}. */
export interface StateBusGateOptions {
  /** The state bus key; absent: every message is refused ("no_key"). */
  key?: ChangeKey;
  /** Clock skew allowed between the state service and this gateway, in ms. */
  maxSkewMs: number;
  /** Scopes and keys whose last `seq` is remembered. @default 100000 */
  maxKeys?: number;
  /** Told of each refused message. */
  onReject?: (reason: RejectReason, message: BusMessage) => void;
  /** Told of each admitted change's publisher and number, and of each heartbeat. */
  stream?: ChangeStreamObserver;
  now?: () => number;
}

/** What {@link StateBusGate} tells of the state service's publishers (gateway/state_coherence.ts). */
export interface ChangeStreamObserver {
  change(pub: string, n: number): void;
  heartbeat(pub: string, n: number, everyMs: number, workers: number): void;
}

/** The signed fields the replay check needs (signed, so only the key holder wrote them). */
const signedChange = z.object({
  op: z.enum(["set", "delete", "create-scope", "delete-scope"]),
  scope: z.string(),
  key: z.string().nullable(),
  seq: z.number().int().nonnegative(),
  pub: z.string().min(1).max(64).optional(),
  n: z.number().int().positive().optional(),
});

const signedHeartbeat = z.object({
  op: z.literal("heartbeat"),
  pub: z.string().min(1).max(64),
  n: z.number().int().nonnegative(),
  every: z.number().int().positive(),
  workers: z.number().int().nonnegative(),
  seq: z.number().int().nonnegative(),
});

/** {@link StateBusGate.admit}'s verdict on a genuine heartbeat: consumed, not delivered. */
const HEARTBEAT = "heartbeat";

const decoder = new TextDecoder();

/** Checks state bus messages in arrival order; see the module doc. */
export class StateBusGate {
  readonly #key: ChangeKey | undefined;
  readonly #maxKeys: number;
  readonly #onReject: StateBusGateOptions["onReject"];
  readonly #stream: ChangeStreamObserver | undefined;
  /** Last accepted `seq` per `scope\0key`, oldest first (re-inserted on update). */
  readonly #last = new Map<string, number>();
  #floor: number;

  constructor(options: StateBusGateOptions) {
    this.#key = options.key;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#onReject = options.onReject;
    this.#stream = options.stream;
    this.#floor = Math.max(0, ((options.now ?? Date.now)() - options.maxSkewMs) * 1000);
  }

  /** Whether the gate can accept anything at all. */
  get hasKey(): boolean {
    return this.#key !== undefined;
  }

  /**
   * Whether `message` may go on; a refused one is reported to `onReject`, a
   * heartbeat to `stream` only.
   */
  admit(message: BusMessage): boolean {
    const reason = this.#check(message);
    if (reason === null) return true;
    if (reason !== HEARTBEAT) this.#onReject?.(reason, message);
    return false;
  }

  #check(message: BusMessage): RejectReason | typeof HEARTBEAT | null {
    if (!this.#key) return "no_key";
    // The state service sends [scope, payload]; a single frame was not signed by it.
    if (message.form !== "frames") return "unsigned";
    const fault = verifyChange(this.#key, message.topic, message.payload);
    if (fault) return fault;
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(message.payload));
    } catch {
      return "malformed";
    }
    if (message.topic === HEARTBEAT_TOPIC) {
      const parsed = signedHeartbeat.safeParse(json);
      if (!parsed.success) return "malformed";
      const beat = parsed.data;
      if (!this.#fresh(`\0heartbeat\0${beat.pub}`, beat.seq)) return "replayed";
      this.#stream?.heartbeat(beat.pub, beat.n, beat.every, beat.workers);
      return HEARTBEAT;
    }
    const parsed = signedChange.safeParse(json);
    if (!parsed.success) return "malformed";
    const change = parsed.data;
    const id = change.key === null ? change.scope : `${change.scope}\0${change.key}`;
    const fresh = this.#fresh(id, change.seq);
    // Counted even when refused: a genuine event overtaken by a newer one of its key (two
    // workers' events travel on two connections) is no loss; a replay's old number only
    // looks like a gap, which costs cache hits, never a stale read.
    if (change.pub !== undefined && change.n !== undefined) {
      this.#stream?.change(change.pub, change.n);
    }
    return fresh ? null : "replayed";
  }

  /** Whether `seq` is above the last accepted for `id` (and the floor); if so it becomes the last. */
  #fresh(id: string, seq: number): boolean {
    const last = this.#last.get(id) ?? this.#floor;
    if (seq <= last) return false;
    this.#last.delete(id);
    this.#last.set(id, seq);
    if (this.#last.size > this.#maxKeys) {
      const [oldest, evicted] = this.#last.entries().next().value!;
      this.#last.delete(oldest);
      if (evicted > this.#floor) this.#floor = evicted;
    }
    return true;
  }
}

/**
 * The gate of a gateway: each refusal counted with `count` and logged at
 * warning level, at most once per 10 s per reason (a flood must not flood the
 * log), with the number held back.
 */
export function loggedStateBusGate(
  options: Omit<StateBusGateOptions, "onReject"> & {
    count?: (reason: RejectReason) => void;
    log: Logger;
  },
): StateBusGate {
  const { count, log, ...rest } = options;
  const limited = logLimiter(10_000);
  return new StateBusGate({
    ...rest,
    onReject: (reason, message) => {
      count?.(reason);
      limited(
        reason,
        (repeated) =>
          log.warn("state bus: dropped a change event ({reason}) on topic {topic}", {
            reason,
            topic: message.topic.slice(0, 200),
            ...(repeated ? { repeated } : {}),
          }),
      );
    },
  });
}
