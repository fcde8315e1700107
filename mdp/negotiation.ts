/**
 * What a client may send its broker beyond plain Majordomo, learned once per
 * connection. The request id stack and the deadline frame (README "Wire
 * extensions") are ours: a strict RFC 7 broker reads the id where it wants
 * the empty frame 0, an RFC 18 broker where it wants "MDPC02", and both drop
 * the request (the Guide's example broker dies on it). So the client asks
 * first, in plain framing, with an RFC 8 management request:
 *
 *     "" | MDPC02 | REQUEST | mmi.broker | extensions          (or its dialect's framing)
 *
 * A plantd-ts broker answers one JSON frame whose `extensions` lists what it
 * reads ({@link BROKER_EXTENSIONS}); an older plantd-ts broker answers the
 * same JSON without that list and reads the stack and the deadline frame too.
 * Any other answer ("501" from Go plantd and MMI brokers) means plain
 * Majordomo; no answer within the probe timeout means plain Majordomo from a
 * broker without MMI. The answer is kept for the client's life: a broker
 * replaced by a different implementation behind the same endpoint needs the
 * client restarted (docs/interop.md).
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import { type ClientReply, type Dialect, encodeClientRequest, frame, text } from "./protocol.ts";

/** The management service asked (answered by the broker itself, RFC 8). */
export const PROBE_SERVICE = "mmi.broker";

/** Extensions a broker may announce in its `mmi.broker` answer. */
export const EXTENSION = {
  /** Frames before the empty delimiter come back with every reply (request ids). */
  envelopeStack: "envelope-stack",
  /** The deadline frame of protocol.ts is read and taken off the stack. */
  deadlineFrame: "deadline-frame",
  /** A worker's READY may carry its capacity. */
  workerCapacity: "worker-capacity",
  /** `org.plantd.Broker` answers `services` and `service` with real data. */
  brokerService: "org.plantd.Broker",
} as const;

/** What a plantd-ts broker reads (what its `mmi.broker` answer lists). */
export const BROKER_EXTENSIONS: readonly string[] = Object.values(EXTENSION);

/** What the client does: ask the broker, assume a plantd-ts broker, or speak plain MDP. */
export type ExtensionsMode = "auto" | "on" | "off";

export const EXTENSIONS_MODES: readonly ExtensionsMode[] = ["auto", "on", "off"];

/** What the client learned of its broker. */
export interface BrokerFeatures {
  /**
   * "extended": request ids and deadline frames, many requests in flight on
   * one connection; "plain": RFC framing, one request in flight per connection.
   */
  framing: "extended" | "plain";
  extensions: ReadonlySet<string>;
  /** Whether the broker answers `mmi.*` (RFC 8); undefined when it was not asked. */
  mmi: boolean | undefined;
  /** What the broker answered, in words (for messages). */
  summary: string;
}

/** What {@link Negotiator} needs of its client. */
export interface NegotiatorOptions {
  mode: ExtensionsMode;
  dialect: Dialect;
  /** How long to wait for the answer once the probe is out. */
  probeTimeoutMs: number;
  /** Sends once the connection is up; resolves when the connection took the message. */
  send(frames: Frames, signal: AbortSignal): Promise<void>;
  /** Whether the connection is up (undefined: the socket cannot tell). */
  connected(): boolean | undefined;
}

function features(
  extensions: readonly string[],
  mmi: boolean | undefined,
  summary: string,
): BrokerFeatures {
  const set = new Set(extensions);
  const extended = set.has(EXTENSION.envelopeStack) && set.has(EXTENSION.deadlineFrame);
  return { framing: extended ? "extended" : "plain", extensions: set, mmi, summary };
}

/** What a probe answer says, or undefined when it is not one. */
export function featuresOfAnswer(reply: ClientReply): BrokerFeatures | undefined {
  if (!reply.final || reply.service !== PROBE_SERVICE) return undefined;
  const last = reply.body[reply.body.length - 1];
  const answer = last === undefined ? "" : text(last);
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed === "object" && parsed !== null && "version" in parsed) {
    const listed = (parsed as { extensions?: unknown }).extensions;
    if (Array.isArray(listed)) {
      const names = listed.filter((e): e is string => typeof e === "string");
      return features(names, true, `plantd-ts broker (${names.join(", ") || "no extensions"})`);
    }
    // plantd-ts brokers from before the list: they read all but the newest.
    return features(
      [EXTENSION.envelopeStack, EXTENSION.deadlineFrame, EXTENSION.brokerService],
      true,
      "plantd-ts broker (before extension lists)",
    );
  }
  return features(
    [],
    true,
    `an MMI broker answering ${PROBE_SERVICE} with '${answer.slice(0, 32)}'`,
  );
}

/** How often the connection is sampled while the probe is out (reconnects take longer). */
const WATCH_MS = 25;

/** Learns a broker's features once (see the module's doc). */
export class Negotiator {
  #options: NegotiatorOptions;
  #features: BrokerFeatures | undefined;
  #settled: PromiseWithResolvers<BrokerFeatures> = Promise.withResolvers();
  #abort = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Samples the connection while the probe is out: a drop voids the wait. */
  #watch: ReturnType<typeof setInterval> | undefined;
  #dropped = false;
  #awaiting = false;

  constructor(options: NegotiatorOptions) {
    this.#options = options;
    if (options.mode === "on") {
      this.#settle(features(BROKER_EXTENSIONS, undefined, "plantd-ts broker (assumed)"));
    } else if (options.mode === "off") {
      this.#settle(features([], undefined, "plain Majordomo (extensions off)"));
    } else {
      this.#probe();
    }
  }

  /** The framing to use, undefined while the broker has not answered. */
  get framing(): "extended" | "plain" | undefined {
    return this.#features?.framing;
  }

  get features(): BrokerFeatures | undefined {
    return this.#features;
  }

  /** Resolves once the broker's features are known. */
  settled(): Promise<BrokerFeatures> {
    return this.#settled.promise;
  }

  /** A reply that carried no request id: the probe's answer while it is awaited. */
  onReply(reply: ClientReply): void {
    if (!this.#awaiting) return;
    const learned = featuresOfAnswer(reply);
    if (learned) this.#settle(learned);
  }

  #probe(): void {
    const message = encodeClientRequest(this.#options.dialect, PROBE_SERVICE, [
      frame("extensions"),
    ]);
    this.#options.send(message, this.#abort.signal).then(() => {
      if (this.#features || this.#abort.signal.aborted) return;
      this.#awaiting = true;
      this.#dropped = false;
      this.#timer = setTimeout(() => this.#timedOut(), this.#options.probeTimeoutMs);
      // A broker restarted meanwhile lost the probe; the client may be back on
      // a new connection by the timeout, so the drop itself must be seen.
      this.#watch = setInterval(() => {
        if (this.#options.connected() === false) this.#dropped = true;
      }, WATCH_MS);
    }, () => {
      // Closed while waiting for a connection: settled by close().
    });
  }

  #timedOut(): void {
    this.#timer = undefined;
    clearInterval(this.#watch);
    if (this.#features) return;
    if (this.#dropped || this.#options.connected() === false) {
      // The connection went down with the probe out: no verdict, ask on the next one
      // (a new connection is a new client to the broker, with no request outstanding).
      this.#awaiting = false;
      return this.#probe();
    }
    this.#settle(features(
      [],
      false,
      `a broker that did not answer ${PROBE_SERVICE} within ${this.#options.probeTimeoutMs} ms (no MMI, or not the '${this.#options.dialect}' dialect)`,
    ));
  }

  #settle(learned: BrokerFeatures): void {
    if (this.#features) return;
    this.#features = learned;
    this.#awaiting = false;
    clearTimeout(this.#timer);
    clearInterval(this.#watch);
    this.#settled.resolve(learned);
  }

  /**
   * The client moved to another broker before the answer came: the probe
   * (maybe waiting on the connection left behind) is sent again on the new
   * one, and {@link settled} waits on. A known answer stands.
   */
  reprobe(): void {
    if (this.#features) return;
    this.#abort.abort();
    this.#abort = new AbortController();
    clearTimeout(this.#timer);
    clearInterval(this.#watch);
    this.#awaiting = false;
    this.#probe();
  }

  /** Stops asking; a pending {@link settled} resolves as plain Majordomo. */
  close(): void {
    this.#abort.abort();
    clearTimeout(this.#timer);
    clearInterval(this.#watch);
    this.#settle(features([], undefined, "client closed before the broker answered"));
  }
}
