/**
 * Majordomo worker: READY, heartbeats (also while a long handler runs),
 * reconnect with a fresh socket when the broker goes silent or says
 * DISCONNECT, DISCONNECT on clean shutdown, and optional concurrency (several
 * connections, each one MDP worker serving one request at a time).
 *
 * Given the endpoints of a broker pair (docs/ha.md), it registers with both
 * brokers: the passive one never sends it a request, and after a failover
 * the new active broker has it registered already.
 *
 * @module
 */
import type { CurveClientKeys } from "../transport/curve.ts";
import type { Frames } from "../transport/frames.ts";
import type { HeartbeatOptions } from "../transport/heartbeat.ts";
import {
  connectDealer,
  type MessageSocket,
  type TransportChoice,
} from "../transport/message_socket.ts";
import {
  decodeBrokerToWorker,
  type Dialect,
  encodeWorkerReply,
  encodeWorkerSignal,
  frame,
} from "./protocol.ts";
import type { Body } from "./client.ts";
import { DialectDiscovery, type WorkerDialect } from "./dialect_discovery.ts";

/** What a handler gets besides the request body. */
export interface RequestContext {
  /** The client address frame, opaque. */
  client: Uint8Array;
  /** Sends a PARTIAL reply ahead of the final one. */
  partial(body: Body): Promise<void>;
  /** Aborted when the connection the request came on is dropped. */
  signal: AbortSignal;
}

/** Serves one request: returns the FINAL reply body. */
export type Handler = (body: Frames, context: RequestContext) => Body | Promise<Body>;

/** Options of {@link MdpWorker}. */
export interface WorkerOptions {
  /** Heartbeat interval, the same as the broker's. @default 2500 */
  heartbeatIntervalMs?: number;
  /** Silent heartbeat intervals before reconnecting. @default 3 */
  heartbeatLiveness?: number;
  /** Wait before reconnecting. @default 1000 */
  reconnectMs?: number;
  /**
   * Dialect to speak; "auto" tries plantd, RFC 7 then RFC 18 until the broker
   * answers (mdp/dialect_discovery.ts). @default "plantd"
   */
  dialect?: WorkerDialect;
  /** Broker connections, each one MDP worker. @default 1 */
  concurrency?: number;
  /**
   * Requests one connection takes at once. Above 1 the worker announces it in
   * READY (a plantd-ts extension, README "Wire extensions") and a plantd-ts broker sends
   * that many before the first FINAL; other brokers ignore it and send one at
   * a time. @default 1
   */
  capacity?: number;
  /** CURVE keys, for a broker that requires CURVE. @default plaintext */
  curve?: CurveClientKeys;
  /** "libzmq" forces libzmq's DEALER on a plaintext tcp:// endpoint. @default "auto" */
  transport?: TransportChoice;
  /** ZMTP heartbeats of the connection (below MDP's). @default none */
  wireHeartbeat?: HeartbeatOptions;
}

/** Events a worker reports; the application decides what to log. */
export type WorkerEvent =
  | { type: "ready"; service: string }
  | { type: "reconnect"; service: string; reason: string }
  | { type: "handler-error"; service: string; error: unknown }
  | {
    /** Dialect "auto": the broker answered in `dialect`, or did not (`next` is tried). */
    type: "dialect";
    service: string;
    dialect: Dialect;
    outcome: "confirmed" | "silent" | "exhausted";
    next?: Dialect;
  };

/** A worker for one service. */
export class MdpWorker {
  readonly service: string;
  /** The broker endpoints, each with `concurrency` connections. */
  readonly endpoints: readonly string[];
  #sessions: Session[] = [];
  #byEndpoint: Session[][] = [];

  constructor(
    endpoint: string | readonly string[],
    service: string,
    handler: Handler,
    options: WorkerOptions = {},
    onEvent: (event: WorkerEvent) => void = () => {},
  ) {
    this.service = service;
    const given = typeof endpoint === "string" ? [endpoint] : endpoint;
    if (given.length === 0) throw new Error("a worker needs at least one broker endpoint");
    this.endpoints = given.map((e) => e.startsWith(">") ? e.slice(1) : e);
    const count = Math.max(1, options.concurrency ?? 1);
    for (const target of this.endpoints) {
      const sessions: Session[] = [];
      for (let i = 0; i < count; i++) {
        sessions.push(new Session(target, service, handler, options, onEvent));
      }
      this.#byEndpoint.push(sessions);
      this.#sessions.push(...sessions);
    }
  }

  /**
   * True when every connection to some broker has heard from it within its
   * liveness window (one broker: every connection).
   */
  get connected(): boolean {
    return this.#byEndpoint.some((sessions) => sessions.every((s) => s.connected));
  }

  /** The endpoints whose every connection is up, in configuration order. */
  get connectedEndpoints(): string[] {
    return this.endpoints.filter((_, i) => this.#byEndpoint[i]!.every((s) => s.connected));
  }

  /** Requests being handled right now. */
  get busy(): number {
    return this.#sessions.reduce((n, s) => n + s.active, 0);
  }

  /** Sends DISCONNECT on every connection and closes them. */
  async close(): Promise<void> {
    await Promise.all(this.#sessions.map((s) => s.close()));
  }
}

function toFrames(body: Body): Frames {
  return body.map((p) => typeof p === "string" ? frame(p) : p);
}

function isPromiseLike(value: unknown): value is PromiseLike<Body> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** The {@link RequestContext} of one request. */
class ServeContext implements RequestContext {
  readonly client: Uint8Array;
  readonly signal: AbortSignal;
  #session: Session;
  #socket: MessageSocket;

  constructor(session: Session, client: Uint8Array, socket: MessageSocket, signal: AbortSignal) {
    this.#session = session;
    this.client = client;
    this.#socket = socket;
    this.signal = signal;
  }

  partial(body: Body): Promise<void> {
    return this.#session.partialReply(this.client, body, this.#socket, this.signal);
  }
}

class Session {
  /** Requests being handled on this connection. */
  active = 0;
  /** Whether the broker has spoken on the current connection and has not gone silent. */
  connected = false;
  #endpoint: string;
  #service: string;
  #handler: Handler;
  #dialect: Dialect;
  #heartbeatMs: number;
  #liveness: number;
  #maxLiveness: number;
  #reconnectMs: number;
  #capacity: number;
  #curve?: CurveClientKeys;
  #transport?: TransportChoice;
  #wireHeartbeat: HeartbeatOptions;
  #onEvent: (event: WorkerEvent) => void;
  /** Set for dialect "auto" until the worker's life ends. */
  #discovery: DialectDiscovery | undefined;
  #socket!: MessageSocket;
  #abort!: AbortController;
  #timer: ReturnType<typeof setInterval> | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #loop: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    endpoint: string,
    service: string,
    handler: Handler,
    options: WorkerOptions,
    onEvent: (event: WorkerEvent) => void,
  ) {
    this.#endpoint = endpoint;
    this.#service = service;
    this.#handler = handler;
    if (options.dialect === "auto") this.#discovery = new DialectDiscovery();
    this.#dialect = this.#discovery?.dialect ?? (options.dialect as Dialect | undefined) ??
      "plantd";
    this.#heartbeatMs = options.heartbeatIntervalMs ?? 2500;
    this.#maxLiveness = options.heartbeatLiveness ?? 3;
    this.#liveness = this.#maxLiveness;
    this.#reconnectMs = options.reconnectMs ?? 1000;
    this.#capacity = Math.max(1, options.capacity ?? 1);
    if (options.curve) this.#curve = options.curve;
    if (options.transport) this.#transport = options.transport;
    this.#wireHeartbeat = options.wireHeartbeat ?? {};
    this.#onEvent = onEvent;
    this.#connect();
  }

  #connect(): void {
    this.#abort = new AbortController();
    if (this.#discovery) this.#dialect = this.#discovery.dialect;
    // Linger lets a DISCONNECT sent just before close() reach the broker.
    this.#socket = connectDealer(this.#endpoint, {
      linger: 200,
      // Discovery judges a dialect only while connected (libzmq needs a monitor to tell).
      ...(this.#discovery ? { watchConnection: true } : {}),
      ...(this.#curve ? { curveClient: this.#curve } : {}),
      ...(this.#transport ? { transport: this.#transport } : {}),
      ...this.#wireHeartbeat,
    });
    this.#liveness = this.#maxLiveness;
    const capacity = this.#discovery?.capacity(this.#capacity) ?? this.#capacity;
    this.#send(encodeWorkerSignal(this.#dialect, "READY", this.#service, capacity));
    this.#onEvent({ type: "ready", service: this.#service });
    this.#timer = setInterval(() => this.#heartbeat(), this.#heartbeatMs);
    const socket = this.#socket;
    const signal = this.#abort.signal;
    this.#loop = (async () => {
      try {
        await socket.drain((message) => this.#onMessage(message, socket, signal));
      } catch (error) {
        // A socket failure ends this connection; a fresh one replaces it.
        this.#reconnect(`socket error: ${(error as Error).message}`);
      }
    })();
  }

  #send(frames: Frames, socket: MessageSocket = this.#socket): Promise<void> {
    return socket.send(frames).catch(() => {});
  }

  #heartbeat(): void {
    this.#send(encodeWorkerSignal(this.#dialect, "HEARTBEAT"));
    // The broker heartbeats idle workers only, so silence while busy is expected.
    if (this.active > 0) return;
    if (--this.#liveness <= 0) this.#reconnect(this.#silence());
  }

  /** Why the broker's silence ends this connection; in discovery, moves to the next dialect. */
  #silence(): string {
    const discovery = this.#discovery;
    if (!discovery || discovery.confirmed || this.#socket.connected === false) {
      return "broker silent";
    }
    const { tried, next, exhausted } = discovery.silent();
    this.#onEvent({
      type: "dialect",
      service: this.#service,
      dialect: tried,
      outcome: exhausted ? "exhausted" : "silent",
      next,
    });
    return `no answer to READY in the ${tried} dialect; trying ${next}`;
  }

  #onMessage(message: Frames, socket: MessageSocket, signal: AbortSignal): void {
    this.#liveness = this.#maxLiveness;
    this.connected = true;
    if (this.#discovery?.heard(message)) {
      this.#onEvent({
        type: "dialect",
        service: this.#service,
        dialect: this.#dialect,
        outcome: "confirmed",
      });
    }
    const decoded = decodeBrokerToWorker(message);
    if (decoded.kind === "disconnect") return this.#reconnect("broker sent DISCONNECT");
    if (decoded.kind !== "request") return;
    this.#serve(decoded.client, decoded.body, socket, signal);
  }

  /**
   * Runs the handler; a synchronous handler's reply goes out at once, an
   * asynchronous one's when it settles.
   */
  #serve(client: Uint8Array, body: Frames, socket: MessageSocket, signal: AbortSignal): void {
    this.active++;
    const context = new ServeContext(this, client, socket, signal);
    let result: Body | Promise<Body>;
    try {
      result = this.#handler(body, context);
    } catch (error) {
      this.active--;
      return this.#final(client, this.#failure(error), socket, signal);
    }
    if (isPromiseLike(result)) {
      Promise.resolve(result).then(
        (reply) => {
          this.active--;
          let frames: Frames;
          try {
            frames = toFrames(reply);
          } catch (error) {
            frames = this.#failure(error);
          }
          this.#final(client, frames, socket, signal);
        },
        (error) => {
          this.active--;
          this.#final(client, this.#failure(error), socket, signal);
        },
      );
      return;
    }
    this.active--;
    let frames: Frames;
    try {
      frames = toFrames(result);
    } catch (error) {
      frames = this.#failure(error);
    }
    this.#final(client, frames, socket, signal);
  }

  /** Reports a handler error and makes the error reply for it. */
  #failure(error: unknown): Frames {
    this.#onEvent({ type: "handler-error", service: this.#service, error });
    const message = error instanceof Error ? error.message : String(error);
    return [frame(JSON.stringify({ success: false, error: `Internal error: ${message}` }))];
  }

  #final(client: Uint8Array, reply: Frames, socket: MessageSocket, signal: AbortSignal): void {
    // A reply for a dropped connection would reach a broker that no longer knows us.
    if (signal.aborted) return;
    this.#liveness = this.#maxLiveness;
    this.#sendNow(encodeWorkerReply(this.#dialect, true, client, reply), socket);
  }

  /** Sends at once when the socket has room, else waits for room; errors are dropped. */
  #sendNow(frames: Frames, socket: MessageSocket): void {
    try {
      if (socket.trySend(frames)) return;
    } catch {
      return;
    }
    this.#send(frames, socket);
  }

  /** A PARTIAL reply (see {@link RequestContext.partial}). */
  partialReply(
    client: Uint8Array,
    body: Body,
    socket: MessageSocket,
    signal: AbortSignal,
  ): Promise<void> {
    if (signal.aborted || this.#dialect === "mdp01") return Promise.resolve();
    return this.#send(encodeWorkerReply(this.#dialect, false, client, toFrames(body)), socket);
  }

  #teardown(): void {
    this.connected = false;
    clearInterval(this.#timer);
    this.#abort.abort();
    this.#socket.close();
  }

  #reconnect(reason: string): void {
    if (this.#closed || this.#reconnectTimer !== undefined) return;
    // If the broker is only slow, not gone, DISCONNECT spares it a stale registration
    // that would keep receiving requests until it expires.
    if (reason !== "broker sent DISCONNECT" && !this.#socket.closed) {
      this.#socket.trySend(encodeWorkerSignal(this.#dialect, "DISCONNECT"));
    }
    this.#teardown();
    this.#onEvent({ type: "reconnect", service: this.#service, reason });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (!this.#closed) this.#connect();
    }, this.#reconnectMs);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    if (this.#reconnectTimer === undefined) {
      await this.#send(encodeWorkerSignal(this.#dialect, "DISCONNECT"));
      this.#teardown();
    }
    this.#reconnectTimer = undefined;
    await this.#loop;
  }
}
