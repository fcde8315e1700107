/**
 * Shared helpers for tests that talk to a real broker over ZeroMQ: frame
 * builders, a readable byte-exact frame description, a bounded polling wait,
 * a raw DEALER test peer and a broker fixture. Every socket goes through
 * transport/native_socket.ts (see docs on the Deno receive defect).
 *
 * @module
 */
import type { Registry } from "prom-client";
import type { Frames } from "../transport/frames.ts";
import { ZMQ_DEALER } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { BrokerServer, type BrokerServerOptions } from "../broker/server.ts";
import type { BrokerObserver } from "../broker/broker.ts";
import type { CurveClientKeys } from "../transport/curve.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Something a frame can be written as: text (UTF-8), bytes, or a list of byte values. */
export type FrameLike = string | Uint8Array | readonly number[];

/** One frame from text, bytes or byte values. */
export function toFrame(part: FrameLike): Uint8Array {
  if (typeof part === "string") return encoder.encode(part);
  if (part instanceof Uint8Array) return part;
  return Uint8Array.from(part);
}

/** A multipart message from parts. */
export function toFrames(parts: readonly FrameLike[]): Frames {
  return parts.map(toFrame);
}

/** A single byte frame, e.g. an RFC 7 / RFC 18 command. */
export function byte(value: number): Uint8Array {
  return Uint8Array.of(value);
}

/** Decodes a frame as UTF-8. */
export function str(bytes: Uint8Array | undefined): string {
  return bytes ? decoder.decode(bytes) : "<missing>";
}

/**
 * Describes a frame exactly and readably: printable ASCII as a JSON string,
 * anything else as hex bytes in angle brackets. Two frames are equal byte for
 * byte if and only if their descriptions are equal.
 */
export function describeFrame(bytes: Uint8Array): string {
  let printable = true;
  for (const b of bytes) {
    if (b < 0x20 || b > 0x7e) {
      printable = false;
      break;
    }
  }
  if (printable) return JSON.stringify(decoder.decode(bytes));
  return `<${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ")}>`;
}

/** Describes a message frame by frame; see {@link describeFrame}. */
export function describe(frames: readonly Uint8Array[]): string[] {
  return frames.map(describeFrame);
}

/** Sleeps; prefer {@link waitFor} when waiting for a condition. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this long. @default 5000 */
  timeoutMs?: number;
  /** Re-check interval. @default 10 */
  intervalMs?: number;
  /** What is waited for, for the error message (a function: worded when the wait fails). */
  what?: string | (() => string);
}

/** Polls `condition` until it holds, failing after a bounded time. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: WaitOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() >= deadline) {
      const what = typeof options.what === "function" ? options.what() : options.what;
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what ?? "condition"}`);
    }
    await sleep(options.intervalMs ?? 10);
  }
}

/** Options of {@link Peer}. */
export interface PeerOptions {
  /** Routing id the broker's ROUTER will see (libzmq makes a 5-byte one otherwise). */
  routingId?: string;
  /** Name used in failure messages. */
  name?: string;
  /** CURVE keys, for an endpoint that requires CURVE. */
  curveClient?: CurveClientKeys;
}

/**
 * A raw DEALER connected to an endpoint. A background loop reads every message
 * into a queue so a test can wait for the next one with a bound, without ever
 * leaving a native receive pending.
 */
export class Peer {
  readonly name: string;
  readonly socket: NativeSocket;
  readonly received: Frames[] = [];
  #waiters: Array<() => void> = [];
  #loop: Promise<void>;
  #failure: unknown;

  constructor(endpoint: string, options: PeerOptions = {}) {
    this.name = options.name ?? options.routingId ?? "peer";
    this.socket = new NativeSocket(ZMQ_DEALER, {
      linger: 0,
      ...(options.routingId ? { routingId: options.routingId } : {}),
      ...(options.curveClient ? { curveClient: options.curveClient } : {}),
    });
    this.socket.connect(endpoint);
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    try {
      for await (const message of this.socket) {
        this.received.push(message);
        for (const wake of this.#waiters.splice(0)) wake();
      }
    } catch (error) {
      this.#failure = error;
    } finally {
      for (const wake of this.#waiters.splice(0)) wake();
    }
  }

  /** Sends one message built from parts. */
  send(parts: readonly FrameLike[]): Promise<void> {
    return this.socket.send(toFrames(parts));
  }

  /**
   * Resolves with the next message for which `skip` is false (skipped ones are
   * discarded), or fails after `timeoutMs`.
   */
  async next(
    options: { timeoutMs?: number; skip?: (frames: Frames) => boolean } = {},
  ): Promise<Frames> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    while (true) {
      while (this.received.length > 0) {
        const message = this.received.shift()!;
        if (!options.skip?.(message)) return message;
      }
      if (this.#failure) throw this.#failure;
      if (this.socket.closed) throw new Error(`${this.name}: socket closed while waiting`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no message within ${timeoutMs} ms`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Closes the socket and waits for the reading loop to end. */
  async close(): Promise<void> {
    this.socket.close();
    await this.#loop;
  }
}

/** Waits until the shared poller has no poll in flight, so a test ends with no pending op. */
export async function settleTransport(): Promise<void> {
  await sharedPoller().idle();
}

/**
 * Starts a broker on a random loopback port, runs `body`, then closes the
 * broker and every peer registered through `track`, whatever happened.
 */
export async function withBroker(
  options: BrokerServerOptions,
  body: (
    server: BrokerServer,
    track: <T extends { close(): unknown }>(closable: T) => T,
  ) => Promise<void>,
  observer: BrokerObserver = {},
): Promise<void> {
  const server = await BrokerServer.start(
    { endpoint: "tcp://127.0.0.1:*", ...options },
    observer,
  );
  const closables: Array<{ close(): unknown }> = [];
  const track = <T extends { close(): unknown }>(closable: T): T => {
    closables.push(closable);
    return closable;
  };
  try {
    await body(server, track);
  } finally {
    for (const closable of closables.reverse()) {
      try {
        await closable.close();
      } catch {
        // keep closing the rest
      }
    }
    await server.close();
    await settleTransport();
  }
}

/** A small deterministic PRNG (mulberry32) so a failure can be replayed from its seed. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A child process whose stderr is collected, with its exit tracked. */
export interface WatchedChild {
  readonly process: Deno.ChildProcess;
  /** Its exit status, once it has exited (stderr fully read). */
  readonly status: Promise<Deno.CommandStatus>;
  exited(): boolean;
  stderr(): string;
  /** Sends `signal` unless it has exited, then waits for the exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Spawns `command` (with `stderr: "piped"`) and collects what it writes to stderr. */
export function spawnWatched(command: Deno.Command): WatchedChild {
  const process = command.spawn();
  let stderr = "";
  const reading = (async () => {
    for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  let exited = false;
  const status = process.status.then(async (s) => {
    exited = true;
    await reading;
    return s;
  });
  return {
    process,
    status,
    exited: () => exited,
    stderr: () => stderr,
    stop(signal = "SIGTERM") {
      if (!exited) process.kill(signal);
      return status;
    },
  };
}

/** The sum of a metric's series whose labels include `labels` (0 when it has none yet). */
export async function metricSum(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return 0;
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((sum, v) => sum + v.value, 0);
}
