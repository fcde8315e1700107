/**
 * Plain Majordomo requests for a broker without our extensions: RFC framing
 * with no request id, so a reply can only be matched by being the one
 * awaited. Each lane is a connection with at most one request in flight (the
 * synchronous MDP/Client dialog of RFC 7 and RFC 18); up to `maxLanes` run
 * side by side and further requests wait their turn. A lane whose request
 * timed out or was given up is closed and replaced, as both RFCs recommend:
 * its late reply must not be taken for the next request's.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import {
  connectDealer,
  type DealerOptions,
  type MessageSocket,
} from "../transport/message_socket.ts";
import { MdpClosedError, MdpTimeoutError } from "./errors.ts";
import { decodeClientReply, type Dialect, encodeClientRequest } from "./protocol.ts";

/** One request waiting for, or on, a lane. */
interface Job {
  service: string;
  message: Frames;
  timeoutMs: number;
  attempt: number;
  onPartial: ((body: Frames) => void) | undefined;
  signal: AbortSignal | undefined;
  resolve: (body: Frames) => void;
  reject: (error: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
  onAbort: (() => void) | undefined;
  lane: Lane | undefined;
  /** Withdraws the message while the lane waits for its connection. */
  unsent: AbortController;
}

/** One connection carrying one request at a time. */
class Lane {
  readonly socket: MessageSocket;
  job: Job | undefined;
  readonly #loop: Promise<void>;

  constructor(endpoint: string, options: DealerOptions, onReply: (lane: Lane, m: Frames) => void) {
    this.socket = connectDealer(endpoint, options);
    this.#loop = this.socket.drain((message) => onReply(this, message)).catch(() => {});
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.#loop;
  }
}

/** Options of {@link PlainLanes}. */
export interface PlainLanesOptions {
  dialect: Dialect;
  /** Connections used at most. */
  maxLanes: number;
  /** Socket options of each connection (the client's). */
  dealer: DealerOptions;
  /** Added to timeout messages: what the broker said to the probe. */
  timeoutNote?: () => string | undefined;
}

/** Plain MDP requests over a small pool of connections (see the module's doc). */
export class PlainLanes {
  readonly #endpoint: string;
  readonly #options: PlainLanesOptions;
  readonly #lanes: Lane[] = [];
  readonly #waiting: Job[] = [];
  readonly #closing = new Set<Promise<void>>();
  #closed = false;

  constructor(endpoint: string, options: PlainLanesOptions) {
    this.#endpoint = endpoint;
    this.#options = options;
  }

  /** Requests waiting or in flight. */
  get inFlight(): number {
    return this.#waiting.length + this.#lanes.filter((l) => l.job).length;
  }

  /** Sends one request; resolves with its FINAL body, PARTIAL ones go to `onPartial`. */
  request(
    service: string,
    body: Frames,
    timeoutMs: number,
    attempt: number,
    onPartial?: (body: Frames) => void,
    signal?: AbortSignal,
  ): Promise<Frames> {
    if (this.#closed) return Promise.reject(new MdpClosedError(service));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const { promise, resolve, reject } = Promise.withResolvers<Frames>();
    const job: Job = {
      service,
      message: encodeClientRequest(this.#options.dialect, service, body),
      timeoutMs,
      attempt,
      onPartial,
      signal,
      resolve,
      reject,
      timer: setTimeout(() => {
        const note = this.#options.timeoutNote?.();
        const error = new MdpTimeoutError(service, timeoutMs, attempt);
        if (note) error.message += `: ${note}`;
        this.#fail(job, error);
      }, timeoutMs),
      onAbort: undefined,
      lane: undefined,
      unsent: new AbortController(),
    };
    if (signal) {
      job.onAbort = () => this.#fail(job, signal.reason);
      signal.addEventListener("abort", job.onAbort, { once: true });
    }
    this.#waiting.push(job);
    this.#pump();
    return promise;
  }

  /** Puts waiting requests on free lanes, opening lanes up to the limit. */
  #pump(): void {
    while (this.#waiting.length > 0) {
      let lane = this.#lanes.find((l) => l.job === undefined);
      if (!lane) {
        if (this.#lanes.length >= this.#options.maxLanes) return;
        lane = new Lane(this.#endpoint, this.#options.dealer, (l, m) => this.#onReply(l, m));
        this.#lanes.push(lane);
      }
      const job = this.#waiting.shift()!;
      job.lane = lane;
      lane.job = job;
      this.#send(lane, job);
    }
  }

  #send(lane: Lane, job: Job): void {
    try {
      if (lane.socket.trySend(job.message)) return;
    } catch (error) {
      return this.#fail(job, error);
    }
    // Waits for the connection; withdrawn if the request settles first.
    lane.socket.send(job.message, { signal: job.unsent.signal }).catch((error) => {
      if (!job.unsent.signal.aborted) this.#fail(job, error);
    });
  }

  #onReply(lane: Lane, message: Frames): void {
    const job = lane.job;
    const reply = decodeClientReply(message);
    // Nothing awaited, or not an answer to what is: a stale or foreign message.
    if (!job || reply.kind === "malformed" || reply.stack.length > 0) return;
    if (reply.service !== job.service) return;
    if (!reply.final) return job.onPartial?.(reply.body);
    this.#settle(job);
    lane.job = undefined;
    job.resolve(reply.body);
    this.#pump();
  }

  #settle(job: Job): void {
    clearTimeout(job.timer);
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
    job.unsent.abort();
  }

  /** Fails a request; a lane it was on may still get its reply, so it is replaced. */
  #fail(job: Job, error: unknown): void {
    this.#settle(job);
    const waiting = this.#waiting.indexOf(job);
    if (waiting >= 0) this.#waiting.splice(waiting, 1);
    const lane = job.lane;
    if (lane && lane.job === job) {
      lane.job = undefined;
      this.#lanes.splice(this.#lanes.indexOf(lane), 1);
      const closing: Promise<void> = lane.close().finally(() => this.#closing.delete(closing));
      this.#closing.add(closing);
    }
    job.reject(error);
    if (!this.#closed) this.#pump();
  }

  /** Fails every request with {@link MdpClosedError} and closes the connections. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const job of [...this.#waiting]) this.#fail(job, new MdpClosedError(job.service));
    for (const lane of [...this.#lanes]) {
      if (lane.job) this.#fail(lane.job, new MdpClosedError(lane.job.service));
    }
    await Promise.all([...this.#lanes.map((l) => l.close()), ...this.#closing]);
    this.#lanes.length = 0;
  }
}
