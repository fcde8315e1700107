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
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { z } from "zod";
import type { BusMessage } from "../bus/envelope.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import { type ChangeKey, type SignatureFault, verifyChange } from "../state/changes.ts";

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
  now?: () => number;
}

/** The signed fields the replay check needs (signed, so only the key holder wrote them). */
const signedChange = z.object({
  op: z.enum(["set", "delete", "create-scope", "delete-scope"]),
  scope: z.string(),
  key: z.string().nullable(),
  seq: z.number().int().nonnegative(),
});

const decoder = new TextDecoder();

/** Checks state bus messages in arrival order; see the module doc. */
export class StateBusGate {
  readonly #key: ChangeKey | undefined;
  readonly #maxKeys: number;
  readonly #onReject: StateBusGateOptions["onReject"];
  /** Last accepted `seq` per `scope\0key`, oldest first (re-inserted on update). */
  readonly #last = new Map<string, number>();
  #floor: number;

  constructor(options: StateBusGateOptions) {
    this.#key = options.key;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#onReject = options.onReject;
    this.#floor = Math.max(0, ((options.now ?? Date.now)() - options.maxSkewMs) * 1000);
  }

  /** Whether the gate can accept anything at all. */
  get hasKey(): boolean {
    return this.#key !== undefined;
  }

  /** Whether `message` may go on; a refused one is reported to `onReject`. */
  admit(message: BusMessage): boolean {
    const reason = this.#check(message);
    if (reason === null) return true;
    this.#onReject?.(reason, message);
    return false;
  }

  #check(message: BusMessage): RejectReason | null {
    if (!this.#key) return "no_key";
    // The state service sends [scope, payload]; a single frame was not signed by it.
    if (message.form !== "frames") return "unsigned";
    const fault = verifyChange(this.#key, message.topic, message.payload);
    if (fault) return fault;
    let change: z.infer<typeof signedChange>;
    try {
      const parsed = signedChange.safeParse(JSON.parse(decoder.decode(message.payload)));
      if (!parsed.success) return "malformed";
      change = parsed.data;
    } catch {
      return "malformed";
    }
    const id = change.key === null ? change.scope : `${change.scope}\0${change.key}`;
    const last = this.#last.get(id) ?? this.#floor;
    if (change.seq <= last) return "replayed";
    this.#last.delete(id);
    this.#last.set(id, change.seq);
    if (this.#last.size > this.#maxKeys) {
      const [oldest, seq] = this.#last.entries().next().value!;
      this.#last.delete(oldest);
      if (seq > this.#floor) this.#floor = seq;
    }
    return null;
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
