/**
 * Majordomo client: many requests in flight on one DEALER socket.
 *
 * Each request carries a 4-byte request id as an envelope frame before the
 * empty delimiter (`id | "" | MDPC02 | REQUEST | service | body…`), the way
 * ROUTER chains carry return addresses; the plantd-ts broker hands it back
 * with every reply, so replies are matched to requests whatever order workers
 * answer in. Late replies of timed-out attempts are discarded.
 *
 * No phantom requests: a request is never sent after its caller was told it
 * failed. The socket queues nothing while disconnected (ZMQ_IMMEDIATE); a
 * request waiting to be sent is withdrawn when it times out; and each carries
 * a deadline frame (protocol.ts) so the broker drops it once its caller gave up.
 *
 * Both frames are extensions only plantd-ts brokers read: the client asks the
 * broker first (mdp/negotiation.ts) and, against any other broker, sends
 * plain RFC framing over a few connections instead (mdp/plain_lanes.ts).
 *
 * Given the endpoints of a broker pair (docs/ha.md), it talks to one at a
 * time and moves to the next when the connection is lost or never comes up,
 * when a request times out with nothing heard from the broker since it was
 * sent, or when the broker answers BROKER_PASSIVE (unless the other broker
 * was just found unreachable: then it asks the passive one again, its vote
 * for a takeover). Requests not yet sent, and those the passive broker
 * refused (it neither queued nor routed them), go to the next broker within
 * their own deadline; a request already sent to the broker that was left is
 * never sent again: its reply may still come, else it times out.
 *
 * Durable requests (`durable`, docs/durability.md) carry a journal key too
 * (durable_key.ts) and are asked again with it after every reconnection
 * while their caller waits (durable_resend.ts), at the other broker too
 * after a move (a pair shares its journal): a broker that journals the
 * service answers each exactly once, across restarts and failovers. With
 * several endpoints, one refused JOURNAL_UNAVAILABLE (a broker that just
 * became active opening the journal) is asked again shortly.
 *
 * @module
 */
import type { CurveClientKeys } from "../transport/curve.ts";
import { type Frames, readUint32, writeUint32 } from "../transport/frames.ts";
import type { HeartbeatOptions } from "../transport/heartbeat.ts";
import {
  connectDealer,
  type DealerOptions,
  type MessageSocket,
  type TransportChoice,
} from "../transport/message_socket.ts";
import { type BrokerFeatures, type ExtensionsMode, Negotiator } from "./negotiation.ts";
import { PlainLanes } from "./plain_lanes.ts";
import {
  deadlineFrame,
  decodeClientReply,
  type Dialect,
  encodeClientRequest,
  frame,
  text,
  writeBudget,
} from "./protocol.ts";
import { durableKeyFrame, newDurableKey } from "./durable_key.ts";
import { DurableResend, type DurableSent } from "./durable_resend.ts";
import { patternCovers } from "./service_pattern.ts";
import {
  MdpBrokerError,
  MdpClosedError,
  MdpServiceUnavailableError,
  MdpTimeoutError,
} from "./errors.ts";

/** A request or reply body: strings are sent as UTF-8 frames. */
export type Body = ReadonlyArray<string | Uint8Array>;

/** Options of {@link MdpClient}. */
export interface ClientOptions {
  /** Per-attempt timeout. @default 5000 */
  timeoutMs?: number;
  /** Further attempts after a timeout or a lost worker. @default 0 */
  retries?: number;
  /** First backoff between attempts, doubled each time. @default 100 */
  backoffMs?: number;
  /** Longest backoff. @default 2000 */
  maxBackoffMs?: number;
  /** Dialect to speak. @default "plantd" */
  dialect?: Dialect;
  /** CURVE keys, for a broker that requires CURVE. @default plaintext */
  curve?: CurveClientKeys;
  /** "libzmq" forces libzmq's DEALER on a plaintext tcp:// endpoint. @default "auto" */
  transport?: TransportChoice;
  /** ZMTP heartbeats of the connection (below MDP's). @default none */
  wireHeartbeat?: HeartbeatOptions;
  /**
   * Request ids and deadline frames: "auto" asks the broker (mmi.broker) and
   * uses them only with a plantd-ts broker, "on" assumes one, "off" speaks
   * plain MDP (docs/interop.md). @default "auto"
   */
  extensions?: ExtensionsMode;
  /** How long "auto" waits for the broker's answer once asked. @default 1000 */
  probeTimeoutMs?: number;
  /** Plain MDP: connections used at most, each with one request in flight. @default 4 */
  plainConnections?: number;
  /**
   * Several endpoints: how long a connection may take to come up before the
   * next endpoint is tried. @default 500
   */
  connectTimeoutMs?: number;
  /**
   * Several endpoints: the least time between two moves, so a pair still
   * deciding which broker is active is not asked in a busy loop. @default 200
   */
  failoverSettleMs?: number;
  /** Several endpoints: told of each move to another endpoint. */
  onFailover?: (event: FailoverEvent) => void;
  /**
   * Services (names or `a.b.*` patterns) whose requests are sent durable, as
   * with the request option `durable`. @default none
   */
  durableServices?: readonly string[];
}

/** A move of the client to another broker of a pair. */
export interface FailoverEvent {
  from: string;
  to: string;
  /** Why: "connection lost", "no connection", "no reply" or "broker passive". */
  reason: string;
}

/** The abort reason of a send withdrawn because the client moved to another broker. */
const MOVED = new Error("moved to another broker");

/** How often a client of several brokers looks at its connection. */
const WATCH_MS = 50;

/** How often a socket left behind checks whether its requests have settled. */
const RETIRE_CHECK_MS = 100;
/** How long a durable request refused by a broker opening its journal waits to ask again. */
const JOURNAL_RETRY_MS = 200;

/** Per-request overrides. */
export interface RequestOptions {
  timeoutMs?: number;
  /** Ignored for durable requests: asking again after a reconnection is their retry. */
  retries?: number;
  signal?: AbortSignal;
  /**
   * Send with a journal key and ask again with it after reconnections, for a
   * service the broker journals (docs/durability.md). `timeoutMs` is then
   * the caller's whole wait, across broker restarts.
   */
  durable?: boolean;
}

/** One reply of a (possibly streamed) request. */
export interface Reply {
  final: boolean;
  body: Frames;
}

/**
 * What a caller of services needs of a client ({@link MdpClient}): the
 * gateway's app takes this, so its routes can be tested with a fake.
 */
export interface BrokerClient {
  /** Whether the connection to the broker is up; undefined when the transport cannot tell. */
  readonly connected: boolean | undefined;
  /** Sends a request and resolves with the FINAL reply's body. */
  request(service: string, body: Body, options?: RequestOptions): Promise<Frames>;
  /** Sends a request and yields every PARTIAL reply, then the FINAL one. */
  stream(service: string, body: Body, options?: RequestOptions): AsyncIterable<Reply>;
}

/** One attempt waiting for its FINAL reply (a class: no closures per request). */
class Pending {
  readonly service: string;
  readonly onPartial: ((body: Frames) => void) | undefined;
  /** Date.now() after which the attempt times out. */
  readonly deadline: number;
  /** The request as sent, with its deadline frame (re-stamped at each send). */
  message: Frames = [];
  deadlineFrame: Uint8Array | undefined;
  /** The socket the request was written to; undefined while it may still go anywhere. */
  socket: MessageSocket | undefined;
  /** A durable request's record for asking again after a reconnection. */
  durable: DurableSent | undefined;
  settled = false;
  readonly #table: Map<number, Pending>;
  readonly #id: number;
  readonly #timeoutMs: number;
  readonly #attempt: number;
  readonly #resolve: (body: Frames) => void;
  readonly #reject: (error: unknown) => void;
  readonly #signal: AbortSignal | undefined;
  #onAbort: (() => void) | undefined;
  /** Withdraws the request from the socket while it waits to be sent (made only then). */
  #unsent: AbortController | undefined;

  constructor(
    table: Map<number, Pending>,
    id: number,
    service: string,
    timeoutMs: number,
    attempt: number,
    resolve: (body: Frames) => void,
    reject: (error: unknown) => void,
    onPartial: ((body: Frames) => void) | undefined,
    signal: AbortSignal | undefined,
  ) {
    this.#table = table;
    this.#id = id;
    this.service = service;
    this.#timeoutMs = timeoutMs;
    this.#attempt = attempt;
    this.#resolve = resolve;
    this.#reject = reject;
    this.onPartial = onPartial;
    this.deadline = Date.now() + timeoutMs;
    this.#signal = signal;
    if (signal) {
      this.#onAbort = () => this.reject(signal.reason);
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  /** Date.now() when the attempt started. */
  get started(): number {
    return this.deadline - this.#timeoutMs;
  }

  #settle(): void {
    this.settled = true;
    this.#table.delete(this.#id);
    if (this.#onAbort) this.#signal?.removeEventListener("abort", this.#onAbort);
    // Its caller is told now: the message must not go out later.
    this.#unsent?.abort();
  }

  /** A signal that aborts when the attempt settles, for a send still waiting (one per send). */
  unsentSignal(): AbortSignal {
    this.#unsent = new AbortController();
    return this.#unsent.signal;
  }

  /** Withdraws a send still waiting, because the client moved (it is sent again there). */
  move(): void {
    this.#unsent?.abort(MOVED);
  }

  resolve(body: Frames): void {
    this.#settle();
    this.#resolve(body);
  }

  reject(error: unknown): void {
    this.#settle();
    this.#reject(error);
  }

  timeout(): Error {
    return new MdpTimeoutError(this.service, this.#timeoutMs, this.#attempt);
  }
}

const ERROR_PREFIX = frame('{"success":false,');

function toFrames(body: Body): Frames {
  return body.map((part) => typeof part === "string" ? frame(part) : part);
}

/** Reads a broker-made error out of a final reply, if it is one. */
export function brokerErrorOf(service: string, body: Frames): MdpBrokerError | undefined {
  const only = body[0];
  if (body.length !== 1 || !only || only.length < ERROR_PREFIX.length) return undefined;
  for (let i = 0; i < ERROR_PREFIX.length; i++) if (only[i] !== ERROR_PREFIX[i]) return undefined;
  try {
    const parsed = JSON.parse(text(only));
    const code = parsed?.mdp?.code;
    if (typeof code !== "string") return undefined;
    const message = String(parsed.error);
    return code === "SERVICE_UNAVAILABLE"
      ? new MdpServiceUnavailableError(service, message)
      : new MdpBrokerError(service, code, message);
  } catch {
    return undefined;
  }
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

/** A Majordomo client connected to one broker, or to the active one of a pair. */
export class MdpClient implements BrokerClient {
  /** The broker endpoints, in the order they are tried. */
  readonly endpoints: readonly string[];
  #socket: MessageSocket;
  #index = 0;
  #socketOptions: DealerOptions;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #timeoutMs: number;
  #retries: number;
  #backoffMs: number;
  #maxBackoffMs: number;
  #dialect: Dialect;
  #loops = new Set<Promise<void>>();
  #durableServices: readonly string[];
  #durable = new DurableResend();
  /** Added to the socket's handshake count: a move starts a new series (durable re-asks). */
  #generationBase = 0;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #sweepPeriod = Infinity;
  /** The last socket error the reading loop survived, for diagnosis. */
  #lastError: unknown;
  #negotiator: Negotiator;
  /** Plain MDP connections, opened once a broker without our extensions is found. */
  #plain: PlainLanes | undefined;
  #plainConnections: number;
  // Failover between several endpoints; unused with one.
  #connectTimeoutMs: number;
  #settleMs: number;
  #onFailover: ((event: FailoverEvent) => void) | undefined;
  #watcher: ReturnType<typeof setInterval> | undefined;
  #openedAt = 0;
  #everConnected = false;
  #lastHeard = 0;
  #lastMove = -Infinity;
  /** Per endpoint: until when it counts as unreachable (left for its connection or silence). */
  #unreachableUntil: number[] = [];
  #unreachableMs: number;
  #moveTimer: ReturnType<typeof setTimeout> | undefined;
  /** Requests the passive broker refused, to be sent once the client has moved. */
  #parked = new Set<Pending>();
  /** Durable requests waiting to be asked again of a broker opening its journal. */
  #journalRetries = new Set<ReturnType<typeof setTimeout>>();
  /** Sockets left behind, open until the requests written to them settle, with their check timers. */
  #retired = new Map<MessageSocket, ReturnType<typeof setTimeout> | undefined>();

  constructor(endpoint: string | readonly string[], options: ClientOptions = {}) {
    const given = typeof endpoint === "string" ? [endpoint] : endpoint;
    if (given.length === 0) throw new Error("a client needs at least one broker endpoint");
    this.endpoints = given.map((e) => e.startsWith(">") ? e.slice(1) : e);
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#retries = options.retries ?? 0;
    this.#backoffMs = options.backoffMs ?? 100;
    this.#maxBackoffMs = options.maxBackoffMs ?? 2000;
    this.#dialect = options.dialect ?? "plantd";
    this.#plainConnections = Math.max(1, options.plainConnections ?? 4);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 500;
    this.#settleMs = options.failoverSettleMs ?? 200;
    this.#unreachableMs = 4 * this.#connectTimeoutMs;
    this.#onFailover = options.onFailover;
    this.#durableServices = options.durableServices ?? [];
    this.#socketOptions = {
      linger: 0,
      // Nothing waits in the socket for a connection: a request whose caller
      // timed out meanwhile could not be taken back (see #attempt).
      immediate: true,
      // Known connection state on libzmq too: the gateway fails fast on it.
      watchConnection: true,
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
      ...(options.curve ? { curveClient: options.curve } : {}),
      ...(options.transport ? { transport: options.transport } : {}),
      ...options.wireHeartbeat,
    };
    this.#socket = this.#open();
    this.#negotiator = new Negotiator({
      mode: options.extensions ?? "auto",
      dialect: this.#dialect,
      probeTimeoutMs: options.probeTimeoutMs ?? 1000,
      // The current socket: after a move to the other broker of a pair, that one's.
      send: (frames, signal) => this.#socket.send(frames, { signal }),
      connected: () => this.#socket.connected,
    });
    if (this.endpoints.length > 1) this.#watcher = setInterval(() => this.#watch(), WATCH_MS);
  }

  /** The endpoint of the broker the client talks to now. */
  get endpoint(): string {
    return this.endpoints[this.#index]!;
  }

  /** Which connection requests go out on: it changes at each reconnection and each move. */
  #generation(): number {
    return this.#generationBase + (this.#socket.handshakes ?? 0);
  }

  #open(): MessageSocket {
    const socket = connectDealer(this.endpoint, this.#socketOptions);
    this.#openedAt = Date.now();
    this.#everConnected = false;
    const loop: Promise<void> = this.#run(socket).finally(() => this.#loops.delete(loop));
    this.#loops.add(loop);
    return socket;
  }

  /** What the broker reads beyond plain MDP; resolves once it has answered (or not). */
  features(): Promise<BrokerFeatures> {
    return this.#negotiator.settled();
  }

  /** {@link features} once known, else undefined. */
  get knownFeatures(): BrokerFeatures | undefined {
    return this.#negotiator.features;
  }

  /**
   * Whether the connection to the broker is up (handshake done, not closed,
   * heartbeats answered).
   */
  get connected(): boolean | undefined {
    return this.#socket.connected;
  }

  /** Number of requests waiting for their final reply. */
  get inFlight(): number {
    return this.#pending.size + (this.#plain?.inFlight ?? 0);
  }

  /** Sends a request and resolves with the FINAL reply's body (PARTIAL replies are skipped). */
  request(service: string, body: Body, options: RequestOptions = {}): Promise<Frames> {
    return this.#withRetries(service, toFrames(body), options);
  }

  /** Sends a request and yields every PARTIAL reply, then the FINAL one. */
  async *stream(service: string, body: Body, options: RequestOptions = {}): AsyncGenerator<Reply> {
    const queue: Reply[] = [];
    let wake: (() => void) | undefined;
    let failure: Error | undefined;
    let done = false;
    const onPartial = (partial: Frames) => {
      queue.push({ final: false, body: partial });
      wake?.();
    };
    // Once a partial reply has arrived a retry would repeat it: stream without retries.
    this.#attempt(
      service,
      toFrames(body),
      options.timeoutMs ?? this.#timeoutMs,
      1,
      onPartial,
      options.signal,
    )
      .then((final) => queue.push({ final: true, body: final }), (error) => failure = error)
      .finally(() => {
        done = true;
        wake?.();
      });
    while (true) {
      const next = queue.shift();
      if (next) {
        yield next;
        if (next.final) return;
        continue;
      }
      if (failure) throw failure;
      if (done) return;
      await new Promise<void>((resolve) => wake = resolve);
      wake = undefined;
    }
  }

  #withRetries(service: string, frames: Frames, options: RequestOptions): Promise<Frames> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    if (options.durable ?? this.#durableServices.some((p) => patternCovers(p, service))) {
      if (options.signal?.aborted) return Promise.reject(options.signal.reason);
      return this.#attempt(service, frames, timeoutMs, 1, undefined, options.signal, true);
    }
    const retries = options.retries ?? this.#retries;
    // No retries: the attempt is the request (no extra async frame per request).
    if (retries <= 0) {
      if (options.signal?.aborted) return Promise.reject(options.signal.reason);
      return this.#attempt(service, frames, timeoutMs, 1, undefined, options.signal);
    }
    return this.#retrying(service, frames, timeoutMs, retries, options.signal);
  }

  async #retrying(
    service: string,
    frames: Frames,
    timeoutMs: number,
    retries: number,
    signal: AbortSignal | undefined,
  ): Promise<Frames> {
    for (let attempt = 1;; attempt++) {
      signal?.throwIfAborted();
      try {
        return await this.#attempt(service, frames, timeoutMs, attempt, undefined, signal);
      } catch (error) {
        const retryable = error instanceof MdpTimeoutError ||
          (error instanceof MdpBrokerError && error.code === "WORKER_LOST");
        if (!retryable || attempt > retries || this.#closed) throw error;
        const backoff = Math.min(this.#maxBackoffMs, this.#backoffMs * 2 ** (attempt - 1));
        await delay(backoff * (0.5 + Math.random() / 2), signal);
      }
    }
  }

  #attempt(
    service: string,
    frames: Frames,
    timeoutMs: number,
    attempt: number,
    onPartial?: (body: Frames) => void,
    signal?: AbortSignal,
    durable = false,
  ): Promise<Frames> {
    if (this.#closed) return Promise.reject(new MdpClosedError(service));
    if (this.#negotiator.framing !== "extended") {
      return this.#unextended(service, frames, timeoutMs, attempt, onPartial, signal, durable);
    }
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    const idFrame = new Uint8Array(4);
    writeUint32(idFrame, 0, id);
    const { promise, resolve, reject } = Promise.withResolvers<Frames>();
    const pending = new Pending(
      this.#pending,
      id,
      service,
      timeoutMs,
      attempt,
      resolve,
      reject,
      onPartial,
      signal,
    );
    this.#pending.set(id, pending);
    this.#sweepSoon(timeoutMs);
    const deadline = deadlineFrame(timeoutMs);
    pending.deadlineFrame = deadline;
    const keyFrame = durable ? durableKeyFrame(newDurableKey()) : undefined;
    pending.message = encodeClientRequest(
      this.#dialect,
      service,
      frames,
      keyFrame ? [idFrame, keyFrame, deadline] : [idFrame, deadline],
    );
    if (keyFrame) {
      const sent = {
        message: pending.message,
        keyFrame,
        deadlineFrame: deadline,
        deadline: pending.deadline,
        sentOn: undefined as number | undefined,
        settled: () => pending.settled,
      };
      pending.durable = sent;
      this.#durable.add(id, sent);
      promise.then(() => this.#durable.delete(id), () => this.#durable.delete(id));
    }
    this.#transmit(pending);
    return promise;
  }

  /**
   * Sends a request on the current socket: at once when connected with room;
   * otherwise it waits, withdrawn if its caller is answered first (or the
   * client moves to another broker, where it is sent instead), and carries
   * the time left when it goes.
   */
  #transmit(pending: Pending): void {
    const socket = this.#socket;
    const message = pending.message;
    try {
      if (socket.trySend(message)) {
        pending.socket = socket;
        if (pending.durable) pending.durable.sentOn = this.#generation();
        // Taken by an immediate socket: the connection was up (the watcher may not have looked).
        if (socket === this.#socket) this.#everConnected = true;
        return;
      }
      const signal = pending.unsentSignal();
      const deadline = pending.deadlineFrame!;
      socket.send(message, {
        signal,
        beforeTry: () => {
          if (signal.aborted) return;
          const left = pending.deadline - Date.now();
          if (left <= 0) pending.reject(pending.timeout());
          else writeBudget(deadline, left);
        },
      }).then(
        () => {
          pending.socket = socket;
          if (pending.durable && socket === this.#socket) {
            pending.durable.sentOn = this.#generation();
          }
          if (socket === this.#socket) this.#everConnected = true;
        },
        (error) => {
          if (signal.reason === MOVED) {
            if (!pending.settled) this.#resend(pending);
          } else if (!signal.aborted) pending.reject(error);
        },
      );
    } catch (error) {
      pending.reject(error);
    }
  }

  /** Sends again a request that never reached a broker that acts on it, with the time it has left. */
  #resend(pending: Pending): void {
    const left = pending.deadline - Date.now();
    if (left <= 0) return pending.reject(pending.timeout());
    pending.socket = undefined;
    writeBudget(pending.deadlineFrame!, left);
    this.#transmit(pending);
  }

  /**
   * An attempt while the broker's features are unknown (it waits for them,
   * within its own timeout) or to a broker without our extensions (plain MDP).
   */
  async #unextended(
    service: string,
    frames: Frames,
    timeoutMs: number,
    attempt: number,
    onPartial?: (body: Frames) => void,
    signal?: AbortSignal,
    durable = false,
  ): Promise<Frames> {
    const started = Date.now();
    if (this.#negotiator.framing === undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let onAbort: (() => void) | undefined;
      try {
        await Promise.race([
          this.#negotiator.settled(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new MdpTimeoutError(service, timeoutMs, attempt)),
              timeoutMs,
            );
            onAbort = () => reject(signal!.reason);
            signal?.addEventListener("abort", onAbort, { once: true });
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener("abort", onAbort);
      }
      if (this.#closed) throw new MdpClosedError(service);
      const left = timeoutMs - (Date.now() - started);
      if (left <= 0) throw new MdpTimeoutError(service, timeoutMs, attempt);
      if (this.#negotiator.framing === "extended") {
        return this.#attempt(service, frames, left, attempt, onPartial, signal, durable);
      }
      timeoutMs = left;
    }
    if (durable) {
      // Only a plantd-ts broker journals: sent as a plain request it would not be durable.
      throw new MdpBrokerError(
        service,
        "BAD_REQUEST",
        `A durable request needs a plantd-ts broker; the broker is ${this.#negotiator.features?.summary}`,
      );
    }
    this.#plain ??= new PlainLanes(this.endpoint, {
      dialect: this.#dialect,
      maxLanes: this.#plainConnections,
      dealer: this.#socketOptions,
      timeoutNote: () => {
        const features = this.#negotiator.features;
        return features?.mmi === false ? `the broker is ${features.summary}` : undefined;
      },
    });
    const body = await this.#plain.request(service, frames, timeoutMs, attempt, onPartial, signal);
    const error = brokerErrorOf(service, body);
    if (error) throw error;
    return body;
  }

  /**
   * Timeouts come from one sweeping timer rather than a timer per request (a
   * timer costs several µs to set and clear). It runs only while requests are
   * pending, at a tenth of the shortest timeout (10 ms to 250 ms).
   */
  #sweepSoon(timeoutMs: number): void {
    const period = Math.min(250, Math.max(10, Math.floor(timeoutMs / 10)));
    if (this.#sweeper !== undefined && period >= this.#sweepPeriod) return;
    clearInterval(this.#sweeper);
    this.#sweepPeriod = period;
    this.#sweeper = setInterval(() => this.#sweep(), period);
  }

  #sweep(): void {
    const now = Date.now();
    let silent = false;
    for (const pending of [...this.#pending.values()]) {
      if (pending.deadline > now) continue;
      // Nothing heard from the broker since this went out: it may be gone without a word.
      if (pending.socket === this.#socket && this.#lastHeard < pending.started) silent = true;
      pending.reject(pending.timeout());
    }
    if (silent && this.#watcher !== undefined) this.#requestMove("no reply");
    if (this.#durable.size > 0) {
      // A new connection: the broker may have restarted and forgotten what was sent.
      this.#durable.check(this.#generation(), (_sent, id) => {
        const pending = this.#pending.get(id);
        if (!pending) return;
        pending.socket = undefined;
        this.#transmit(pending);
      });
    }
    if (this.#pending.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
      this.#sweepPeriod = Infinity;
    }
  }

  async #run(socket: MessageSocket): Promise<void> {
    while (!socket.closed) {
      try {
        await socket.drain((message) => this.#onMessage(message, socket));
      } catch (error) {
        // Keep reading: pending requests still have their timeouts.
        this.#lastError = error;
      }
    }
  }

  #onMessage(message: Frames, socket: MessageSocket): void {
    if (this.#watcher !== undefined && socket === this.#socket) {
      this.#lastHeard = Date.now();
      this.#everConnected = true;
    }
    const reply = decodeClientReply(message);
    if (reply.kind === "malformed") return;
    const idFrame = reply.stack[0];
    if (!idFrame || idFrame.length !== 4) return this.#negotiator.onReply(reply);
    const id = readUint32(idFrame, 0);
    const pending = this.#pending.get(id);
    if (!pending) return; // a late reply of an attempt that timed out
    if (!reply.final) {
      pending.onPartial?.(reply.body);
      return;
    }
    const error = brokerErrorOf(pending.service, reply.body);
    if (error?.code === "BROKER_PASSIVE" && this.#watcher !== undefined) {
      // Neither queued nor routed there: it goes to the other broker, within its deadline.
      pending.socket = undefined;
      if (socket !== this.#socket) return this.#resend(pending);
      this.#parked.add(pending);
      return this.#requestMove("broker passive");
    }
    if (
      error?.code === "JOURNAL_UNAVAILABLE" && pending.durable && this.#watcher !== undefined
    ) {
      // A pair's broker that just became active opens the shared journal: nothing was
      // stored, so asking again (with its key) is safe, within the caller's deadline.
      return this.#retryLater(pending);
    }
    if (error) pending.reject(error);
    else pending.resolve(reply.body);
  }

  #retryLater(pending: Pending): void {
    pending.socket = undefined;
    const timer = setTimeout(() => {
      this.#journalRetries.delete(timer);
      if (!pending.settled && !this.#closed) this.#resend(pending);
    }, JOURNAL_RETRY_MS);
    this.#journalRetries.add(timer);
  }

  /** Several endpoints: checks the connection now and then (see the module documentation). */
  #watch(): void {
    const connected = this.#socket.connected;
    if (connected) {
      this.#everConnected = true;
      return;
    }
    if (this.#everConnected) return this.#requestMove("connection lost");
    if (Date.now() - this.#openedAt >= this.#connectTimeoutMs) this.#requestMove("no connection");
  }

  /**
   * Moves to the next endpoint now, or once the last move is `failoverSettleMs`
   * old. Refused by a passive broker while the other one was found
   * unreachable within `4 × connectTimeoutMs`, it stays and asks again.
   */
  #requestMove(reason: string): void {
    if (this.#closed || this.#moveTimer !== undefined) return;
    const wait = this.#lastMove + this.#settleMs - Date.now();
    if (wait <= 0) return this.#move(reason);
    this.#moveTimer = setTimeout(() => {
      this.#moveTimer = undefined;
      if (!this.#closed) this.#move(reason);
    }, wait);
  }

  #move(reason: string): void {
    // A move decided a moment ago for a connection that has come up since is not needed.
    if (reason !== "broker passive" && reason !== "no reply" && this.#socket.connected) return;
    const now = Date.now();
    const next = (this.#index + 1) % this.endpoints.length;
    this.#lastMove = now;
    if (reason === "broker passive" && (this.#unreachableUntil[next] ?? 0) > now) {
      // The other broker was just found unreachable: ask this one again. Each request is
      // a vote that makes it take over once its peer has been silent long enough.
      return this.#resendParked();
    }
    if (reason !== "broker passive") {
      this.#unreachableUntil[this.#index] = now + this.#unreachableMs;
    }
    const from = this.endpoint;
    const old = this.#socket;
    this.#index = next;
    this.#socket = this.#open();
    this.#generationBase += 1_000_000;
    // Durable requests written to the broker left behind are asked again at this one with
    // their key (the sweep sees the new connection): a pair shares its journal (docs/ha.md),
    // so the re-ask is attached to the journaled request or answered from the stored reply.
    this.#lastHeard = 0;
    this.#retire(old);
    // Requests still waiting for the old connection go to the new one.
    for (const pending of this.#pending.values()) if (pending.socket === undefined) pending.move();
    this.#resendParked();
    // A probe still unanswered is asked again of this broker (a pair's brokers answer alike,
    // so a known answer stands); plain connections go to this broker from now on.
    this.#negotiator.reprobe();
    const plain = this.#plain;
    this.#plain = undefined;
    void plain?.close();
    this.#onFailover?.({ from, to: this.endpoint, reason });
  }

  #resendParked(): void {
    const parked = [...this.#parked];
    this.#parked.clear();
    for (const pending of parked) if (!pending.settled) this.#resend(pending);
  }

  /**
   * The requests written to a socket left behind keep their deadline: a
   * reply may still come there. It closes once none of them is pending.
   */
  #retire(socket: MessageSocket): void {
    const check = () => {
      for (const pending of this.#pending.values()) {
        if (pending.socket === socket) {
          this.#retired.set(socket, setTimeout(check, RETIRE_CHECK_MS));
          return;
        }
      }
      this.#retired.delete(socket);
      socket.close(0);
    };
    check();
  }

  /** Fails pending requests with {@link MdpClosedError} and closes the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const pending of [...this.#pending.values()]) {
      pending.reject(new MdpClosedError(pending.service));
    }
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    clearInterval(this.#watcher);
    clearTimeout(this.#moveTimer);
    for (const timer of this.#journalRetries) clearTimeout(timer);
    this.#journalRetries.clear();
    this.#negotiator.close();
    const plain = this.#plain?.close();
    this.#socket.close();
    for (const [socket, timer] of this.#retired) {
      clearTimeout(timer);
      socket.close(0);
    }
    this.#retired.clear();
    await Promise.all(this.#loops);
    await plain;
  }
}
