/**
 * The state channel of a broker pair: runs the {@link BinaryStar} machine of
 * this broker on its peer's reports. Each broker listens for its peer on a
 * ROUTER (`state_bind`) and reports its own state to the peer's listener
 * through a DEALER, every heartbeat and at once on every change, as the
 * guide's PUB/SUB pair does. The DEALER queues nothing while the peer is
 * down (ZMQ_IMMEDIATE): a stale report must never arrive late.
 *
 * A report is three frames: `PLANTD-PAIR1 | state | role`.
 *
 * @module
 */
import type { CurveServerKeys } from "../transport/curve.ts";
import type { Frames } from "../transport/frames.ts";
import type { ListenerEvent } from "../transport/guard.ts";
import {
  connectDealer,
  type MessageSocket,
  type TransportChoice,
} from "../transport/message_socket.ts";
import { listenRouter, type RouterListener } from "../transport/router_listener.ts";
import { frame, text } from "../mdp/protocol.ts";
import {
  BinaryStar,
  PAIR_STATES,
  type PairRole,
  type PairState,
  type Transition,
} from "./binary_star.ts";

/** The first frame of every state report. */
export const PAIR_HEADER = "PLANTD-PAIR1";
const HEADER = frame(PAIR_HEADER);

/** A state report is tiny: anything larger is not one, and closes its connection. */
const MAX_REPORT_BYTES = 1024;

/** CURVE of the state channel: the key pair both brokers of the pair share. */
export interface PairCurve {
  secretKey: string;
  publicKey: string;
}

/** Options of {@link BrokerPair.start}. */
export interface PairOptions {
  role: PairRole;
  /** Where this broker listens for its peer's reports. */
  stateBind: string;
  /** The peer's `stateBind`, as this broker reaches it. */
  peerStateEndpoint: string;
  /** How often each broker reports; silent for two of them, the peer is dead. */
  heartbeatMs: number;
  /** With it, only a peer holding the pair's secret key may report (and be reported to). */
  curve?: PairCurve;
  /** "libzmq" keeps libzmq's sockets on plaintext tcp://. @default "auto" */
  transport?: TransportChoice;
  /** Refused peers and ended connections of the listener (labelled "pair"). */
  onListenerEvent?: (event: ListenerEvent) => void;
  now?: () => number;
}

/** What the pair reports; the broker role logs and counts it. */
export interface PairObserver {
  /** The machine changed state. */
  transition?(transition: Transition): void;
  /** The pair is misconfigured or split (same roles, dual active or passive). */
  error?(message: string): void;
  /** A client request refused because this broker is not active. */
  refused?(state: PairState): void;
  /** A message on the state channel that is no report (dropped). */
  badReport?(reason: string): void;
}

/** A pair error, as /healthz shows it. */
export interface PairError {
  message: string;
  /** When (the pair's clock). */
  at: number;
  /** Both brokers claim the same role: neither serves until that is fixed. */
  misconfigured: boolean;
}

const STATE_FRAMES = new Map(PAIR_STATES.map((state) => [state, frame(state)]));

/** Reads a report (after the routing id); a reason string when it is none. */
export function decodeReport(
  message: Frames,
): { state: PairState; role: PairRole } | { bad: string } {
  if (message.length !== 4) return { bad: "not three frames" };
  const [, header, state, role] = message as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  if (text(header) !== PAIR_HEADER) return { bad: "unknown header" };
  const stateText = text(state);
  const roleText = text(role);
  if (!(PAIR_STATES as readonly string[]).includes(stateText)) return { bad: "unknown state" };
  if (roleText !== "primary" && roleText !== "backup") return { bad: "unknown role" };
  return { state: stateText as PairState, role: roleText };
}

/** One broker's side of the pair. */
export class BrokerPair {
  readonly fsm: BinaryStar;
  /** The state channel's endpoint as bound. */
  readonly endpoint: string;
  readonly peerEndpoint: string;
  #listener: RouterListener;
  #dealer: MessageSocket;
  #observer: PairObserver;
  #timer: ReturnType<typeof setInterval>;
  #loop: Promise<void>;
  #lastError: PairError | undefined;
  #now: () => number;

  private constructor(
    fsm: BinaryStar,
    listener: RouterListener,
    dealer: MessageSocket,
    options: PairOptions,
    observer: PairObserver,
  ) {
    this.fsm = fsm;
    this.#listener = listener;
    this.#dealer = dealer;
    this.#observer = observer;
    this.#now = options.now ?? Date.now;
    this.endpoint = listener.endpoint;
    this.peerEndpoint = options.peerStateEndpoint;
    this.#timer = setInterval(() => this.#report(), options.heartbeatMs);
    this.#loop = this.#run();
  }

  /** Binds the state channel and starts reporting. Rejects with a BindError when it cannot bind. */
  static async start(options: PairOptions, observer: PairObserver = {}): Promise<BrokerPair> {
    const fsm = new BinaryStar(options.role, {
      heartbeatMs: options.heartbeatMs,
      ...(options.now ? { now: options.now } : {}),
    });
    const serverCurve: CurveServerKeys | undefined = options.curve
      ? { secretKey: options.curve.secretKey, allowedKeys: [options.curve.publicKey] }
      : undefined;
    const listener = await listenRouter(options.stateBind, {
      label: "pair",
      ...(serverCurve ? { curve: serverCurve } : {}),
      ...(options.transport ? { transport: options.transport } : {}),
      ...(options.onListenerEvent ? { onListenerEvent: options.onListenerEvent } : {}),
      maxMessageSize: MAX_REPORT_BYTES,
      linger: 0,
      highWaterMark: 1000,
    });
    let dealer: MessageSocket;
    try {
      dealer = connectDealer(options.peerStateEndpoint, {
        linger: 0,
        immediate: true,
        maxMessageSize: MAX_REPORT_BYTES,
        ...(options.curve
          ? {
            curveClient: {
              serverKey: options.curve.publicKey,
              publicKey: options.curve.publicKey,
              secretKey: options.curve.secretKey,
            },
          }
          : {}),
        ...(options.transport ? { transport: options.transport } : {}),
      });
    } catch (error) {
      await listener.close();
      throw error;
    }
    const pair = new BrokerPair(fsm, listener, dealer, options, observer);
    pair.#report();
    return pair;
  }

  /** The Binary Star vote on a client request: whether this broker serves it. */
  admitClient(): boolean {
    const outcome = this.fsm.onClientRequest();
    if (outcome.transition) this.#changed(outcome.transition);
    if (!outcome.accept) this.#observer.refused?.(this.fsm.state);
    return outcome.accept;
  }

  /** The last pair error and when it happened, for /healthz. */
  get lastError(): PairError | undefined {
    return this.#lastError;
  }

  #changed(transition: Transition): void {
    this.#observer.transition?.(transition);
    // The peer learns at once rather than at the next heartbeat.
    this.#report();
  }

  #report(): void {
    if (this.#dealer.closed) return;
    try {
      this.#dealer.trySend([HEADER, STATE_FRAMES.get(this.fsm.state)!, frame(this.fsm.role)]);
    } catch {
      // Closed under us: nothing to report to.
    }
  }

  #onMessage(message: Frames): void {
    const report = decodeReport(message);
    if ("bad" in report) return this.#observer.badReport?.(report.bad);
    const outcome = this.fsm.onPeer(report.state, report.role);
    if (outcome.error) {
      this.#lastError = {
        message: outcome.error,
        at: this.#now(),
        misconfigured: report.role === this.fsm.role,
      };
      this.#observer.error?.(outcome.error);
    }
    if (outcome.transition) this.#changed(outcome.transition);
  }

  async #run(): Promise<void> {
    const socket = this.#listener.socket;
    while (!socket.closed) {
      try {
        await socket.drain((message) => this.#onMessage(message));
      } catch (error) {
        this.#observer.badReport?.(`socket error: ${(error as Error).message}`);
      }
    }
  }

  /** Stops reporting and closes the channel. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#dealer.close();
    const closed = this.#listener.close();
    await this.#loop;
    await closed;
  }
}
