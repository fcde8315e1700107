/**
 * One ZMTP 3.1 connection over a Deno TCP stream, NULL mechanism: the
 * handshake, incoming frames assembled into messages, and outgoing messages
 * encoded into one buffer that is written in a single call per event-loop
 * turn (many messages per system call under load, no timer wait when idle:
 * `setImmediate` runs in the same turn).
 *
 * Incoming bytes are read into one slab per connection, reused (4 KiB,
 * doubling up to 64 KiB while reads fill it). A delivered message's frames
 * are copied out of it (copy_arena.ts); a large frame not yet all in is
 * read into a buffer of its own and delivered as is. What a receiver keeps
 * costs what it holds, not a slab per message.
 *
 * With `borrow`, a message's frames are instead views of the slab (and of
 * one reused buffer for large frames), valid only while the `message` event
 * runs: a receiver that forwards or drops most of what it reads (the broker)
 * allocates nothing for it, and copies what it keeps. Frames of a message not
 * yet complete when the slab is read into again are copied first.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { Frames } from "../frames.ts";
import {
  checkGreeting,
  compatible,
  encodeMessageInto,
  errorCommand,
  type FrameHead,
  greeting,
  GREETING_BYTES,
  messageBytes,
  parseCommand,
  parseProperties,
  pingCommand,
  pingTtlMs,
  pongFor,
  readFrameHead,
  readyCommand,
  RESERVED_FLAGS,
} from "./codec.ts";
import type { HeartbeatOptions } from "../heartbeat.ts";
import { waitAtMost } from "../../support/wait_at_most.ts";
import type { OutputBudget } from "./output_budget.ts";
import { CopyArena } from "../copy_arena.ts";

const SLAB_BYTES = 64 * 1024;
/** Below this much room left in the slab (a quarter of a smaller one), the unread tail moves to its start. */
const MIN_READ_ROOM = 8 * 1024;
/** A frame this large that is not all in yet is read into a buffer of its own. */
const LARGE_FRAME_BYTES = 16 * 1024;
/** Borrowing: large frames up to this size reuse one buffer per connection; larger get their own. */
const SPARE_MAX_BYTES = 1024 * 1024;
/** Small: an idle peer holds two of these; a busy one's grow with its traffic. */
const OUT_INITIAL_BYTES = 2 * 1024;
/** The first read slab after the handshake; it doubles on reads that fill it. */
const READ_START_BYTES = 4 * 1024;
/** The read buffer of a connection until its handshake is done (a greeting and a READY). */
const HANDSHAKE_BYTES = 1024;
/**
 * What a frame costs in memory beyond its bytes (a view and its slot in the
 * message): counted toward the message limit, so a flood of empty frames is
 * bounded too.
 */
const FRAME_COST = 64;
/**
 * Default of {@link ZmtpConnectionOptions.maxMessageBytes}: 4 times the
 * broker's default `max_message_bytes` (16 MiB), so a broker configured higher
 * still works, while a peer declaring a huge frame cannot make us allocate it.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Default of {@link ZmtpConnectionOptions.sendBufferBytes}. */
const SEND_BUFFER_BYTES = 64 * 1024 * 1024;

/** The socket type this side announces. */
export type ZmtpSocketType = "ROUTER" | "DEALER";

/** Who is at the other end, from its READY command. */
export interface ZmtpPeer {
  socketType: string;
  /** Its Identity property (empty when it sent none). */
  identity: Uint8Array;
}

/** Options of one {@link ZmtpConnection}. */
export interface ZmtpConnectionOptions extends HeartbeatOptions {
  socketType: ZmtpSocketType;
  /** Our Identity property (a DEALER's routing id). */
  identity?: Uint8Array;
  /**
   * A frame larger than this closes the connection (libzmq's ZMQ_MAXMSGSIZE);
   * a message of smaller frames that adds up to more is discarded as it
   * arrives and reported by {@link ZmtpConnectionEvents.oversized}. Checked
   * on a frame's header, before a buffer is allocated for it.
   * @default {@link DEFAULT_MAX_MESSAGE_BYTES}
   */
  maxMessageBytes?: number;
  /**
   * Bytes queued for this peer beyond which {@link ZmtpConnection.send}
   * refuses (libzmq's high-water mark, in bytes). @default 64 MiB
   */
  sendBufferBytes?: number;
  /** A peer that has not completed the handshake by then is dropped. @default 10000 */
  handshakeMs?: number;
  /** Output queued across the socket's connections (see {@link OutputBudget}). @default none */
  outputBudget?: OutputBudget;
  /**
   * Message frames are views valid only during the `message` event (see the
   * module documentation). @default false: frames are the receiver's to keep
   */
  borrow?: boolean;
}

/** What a {@link ZmtpConnection} tells its socket. */
export interface ZmtpConnectionEvents {
  /** The handshake is done; a returned string refuses the peer with that reason. */
  ready(connection: ZmtpConnection, peer: ZmtpPeer): string | undefined;
  message(frames: Frames): void;
  /** A message over `maxMessageBytes` was discarded. */
  oversized?(): void;
  /** {@link ZmtpConnection.send} refused a message: the socket's output budget is spent. */
  overBudget?(): void;
  /** Everything handed to {@link ZmtpConnection.send} has been written. */
  drained(connection: ZmtpConnection): void;
  /**
   * Called once; `reason` is undefined when this side closed it. `refused`:
   * the peer broke the protocol or never completed the handshake (as opposed
   * to a peer that talked and then left).
   */
  closed(connection: ZmtpConnection, reason: string | undefined, refused: boolean): void;
}

class ProtocolError extends Error {}
/** The peer sent ERROR: it is going away; nothing to tell it. */
class PeerError extends Error {}

/** A ZMTP connection; see the module documentation. */
export class ZmtpConnection {
  readonly remote: string;
  #conn: Deno.TcpConn;
  #options: ZmtpConnectionOptions;
  #events: ZmtpConnectionEvents;
  #maxBytes: number;
  #ready = false;
  #closed = false;
  #greeted = false;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #message: Frames = [];
  /** Borrowing: indexes in #message of frames that are views of the read slab. */
  #borrowed: number[] = [];
  /** Borrowing: the buffer large frames are read into, reused once their message is handed over. */
  #largeSpare: Uint8Array | undefined;
  #spareBusy = false;
  /** Where message frames are copied to out of the read slab. */
  #arena = new CopyArena();
  /** A large frame being read into its own buffer. */
  #large: { head: FrameHead; body: Uint8Array; filled: number } | undefined;
  #messageBytes = 0;
  #discarding = false;
  #needed = 0;
  #prefix: Uint8Array | undefined;
  #out: Uint8Array<ArrayBuffer> = new Uint8Array(OUT_INITIAL_BYTES);
  #outLength = 0;
  /** Bytes of ours counted in the socket's output budget (queued or being written). */
  #charged = 0;
  #spare: Uint8Array<ArrayBuffer> | undefined;
  #inFlight = 0;
  #writing = false;
  #flushQueued = false;
  /** A PONG is queued and not yet handed to a write (at most one is: a PING flood stays bounded). */
  #pongQueued = false;
  /** Settled once queued output is written or the connection closes (see #flushedWithin). */
  #flushed: PromiseWithResolvers<void> | undefined;
  /** The peer's greeting's minor version (0: ZMTP 3.0, which has no PING). */
  #minor = 0;
  /** When the last bytes came from the peer (performance.now()), set once per read. */
  #lastHeard = 0;
  /** The TTL of the peer's last PING, in ms: silent that long, it is closed. 0: none. */
  #peerTtlMs = 0;
  #nextPingAt = 0;
  #pings = 0;
  /** The one liveness timer of this connection, and when it fires. */
  #livenessTimer: ReturnType<typeof setTimeout> | undefined;
  #livenessAt = Infinity;

  constructor(conn: Deno.TcpConn, options: ZmtpConnectionOptions, events: ZmtpConnectionEvents) {
    this.#conn = conn;
    this.#options = options;
    this.#events = events;
    this.#maxBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const address = conn.remoteAddr as Deno.NetAddr;
    this.remote = `tcp://${address.hostname}:${address.port}`;
    try {
      conn.setNoDelay(true);
      // The kernel reaps a half-open connection even when no heartbeat is configured.
      conn.setKeepAlive(true);
    } catch {
      // Already reset by the peer: the first read reports it.
    }
    this.#handshakeTimer = setTimeout(
      () => this.#shut("handshake not completed in time"),
      options.handshakeMs ?? 10_000,
    );
    const properties: Record<string, Uint8Array> = {
      "Socket-Type": new TextEncoder().encode(options.socketType),
    };
    if (options.socketType === "DEALER") {
      properties["Identity"] = options.identity ?? new Uint8Array(0);
    }
    // Greeting and READY go out together: a libzmq peer reads our greeting, then the command.
    this.#append(greeting());
    this.#append(readyCommand(properties));
    void this.#readLoop();
  }

  /** The handshake is done and messages flow. */
  get ready(): boolean {
    return this.#ready;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A frame put before every incoming message (a ROUTER's routing id of the peer). */
  setPrefix(frame: Uint8Array): void {
    this.#prefix = frame;
  }

  /** The frame of {@link setPrefix}, if one was set. */
  get prefix(): Uint8Array | undefined {
    return this.#prefix;
  }

  /** Bytes handed to {@link send} and not yet written to the kernel. */
  get pendingBytes(): number {
    return this.#outLength + this.#inFlight;
  }

  /**
   * Queues `[head?, ...frames]` for writing; false once closed, or while more
   * than `sendBufferBytes` wait to be written.
   */
  send(frames: Frames, head?: Uint8Array): boolean {
    if (this.#closed || this.pendingBytes > (this.#options.sendBufferBytes ?? SEND_BUFFER_BYTES)) {
      return false;
    }
    const n = messageBytes(frames, head);
    const budget = this.#options.outputBudget;
    if (budget) {
      if (!budget.take(n)) {
        this.#events.overBudget?.();
        return false;
      }
      this.#charged += n;
    }
    this.#reserve(n);
    this.#outLength = encodeMessageInto(this.#out, this.#outLength, frames, head);
    this.#scheduleFlush();
    return true;
  }

  /** Queues bytes already encoded as message frames. */
  sendEncoded(bytes: Uint8Array): boolean {
    if (this.#closed) return false;
    this.#append(bytes);
    return true;
  }

  /**
   * Closes the connection. With `lingerMs` > 0, output still queued gets up
   * to that long to be written first.
   */
  async close(lingerMs = 0): Promise<void> {
    if (this.#closed) return;
    if (lingerMs > 0) await this.#flushedWithin(lingerMs);
    this.#shut(undefined);
  }

  /** Waits until queued output is written, or `ms` have passed. */
  async #flushedWithin(ms: number): Promise<void> {
    if (this.pendingBytes === 0) return;
    this.#flushed ??= Promise.withResolvers<void>();
    await waitAtMost(this.#flushed.promise, ms);
  }

  #append(bytes: Uint8Array): void {
    if (this.#options.outputBudget) {
      this.#options.outputBudget.force(bytes.length);
      this.#charged += bytes.length;
    }
    this.#reserve(bytes.length);
    this.#out.set(bytes, this.#outLength);
    this.#outLength += bytes.length;
    this.#scheduleFlush();
  }

  #reserve(n: number): void {
    if (this.#outLength + n <= this.#out.length) return;
    const grown = new Uint8Array(Math.max(this.#out.length * 2, this.#outLength + n));
    grown.set(this.#out.subarray(0, this.#outLength));
    this.#out = grown;
  }

  #scheduleFlush(): void {
    if (this.#writing || this.#flushQueued) return;
    this.#flushQueued = true;
    // Everything sent during this turn of the event loop goes out in one write:
    // the check phase comes after every I/O callback of the turn, where a
    // microtask would run after the first (a gateway serving 64 HTTP requests
    // wrote once per request: 1 message per write, 17 with this).
    setImmediate(() => void this.#flush());
  }

  async #flush(): Promise<void> {
    this.#flushQueued = false;
    if (this.#writing || this.#closed) return;
    this.#writing = true;
    try {
      while (this.#outLength > 0 && !this.#closed) {
        const chunk = this.#out.subarray(0, this.#outLength);
        this.#inFlight = this.#outLength;
        // The next messages go to the other buffer while this one is written.
        this.#out = this.#spare ?? new Uint8Array(OUT_INITIAL_BYTES);
        this.#spare = undefined;
        this.#outLength = 0;
        this.#pongQueued = false;
        let written = 0;
        while (written < chunk.length) {
          written += await this.#conn.write(chunk.subarray(written));
        }
        this.#inFlight = 0;
        this.#uncharge(chunk.length);
        // Keep a large buffer only while traffic needs one.
        this.#spare = chunk.buffer.byteLength <= 4 * SLAB_BYTES
          ? new Uint8Array(chunk.buffer)
          : undefined;
      }
    } catch (error) {
      this.#shut(`write failed: ${(error as Error).message}`);
      return;
    } finally {
      this.#writing = false;
    }
    if (this.#closed) return;
    this.#settleFlushed();
    this.#events.drained(this);
  }

  async #readLoop(): Promise<void> {
    // Small until the handshake is done: a flood of idle connections costs little.
    let slab = new Uint8Array(HANDSHAKE_BYTES);
    // An idle peer keeps a small slab; a busy one gets 64 KiB (fewer reads).
    let slabBytes = READ_START_BYTES;
    let start = 0;
    let end = 0;
    try {
      while (!this.#closed) {
        const large = this.#large;
        if (large) {
          // The rest of a large frame goes straight into its own buffer.
          const n = await this.#conn.read(large.body.subarray(large.filled));
          if (n === null) {
            this.#shut(this.#duringHandshake("peer closed the connection"));
            return;
          }
          large.filled += n;
          if (large.filled === large.body.length) {
            this.#large = undefined;
            this.#frame(large.head, large.body);
          }
          continue;
        }
        const room = slab.length - end;
        const minRoom = Math.min(MIN_READ_ROOM, slab.length >> 2);
        if ((room < minRoom && this.#ready) || start + this.#needed > slab.length) {
          if (slab.length >= slabBytes && this.#needed <= slab.length) {
            // One slab per connection, reused: message frames are copies, never views of it.
            if (start > 0) slab.copyWithin(0, start, end);
          } else {
            const next = new Uint8Array(Math.max(slabBytes, this.#needed + minRoom));
            next.set(slab.subarray(start, end));
            slab = next;
          }
          end -= start;
          start = 0;
        }
        const n = await this.#conn.read(slab.subarray(end));
        if (n === null) {
          this.#shut(this.#duringHandshake("peer closed the connection"));
          return;
        }
        // A read that filled the room: more is coming, the next slab is larger (up to 64 KiB).
        if (n === slab.length - end && slabBytes < SLAB_BYTES) slabBytes *= 2;
        end += n;
        // Any bytes count as traffic (libzmq: any frame); once per read, not per frame.
        this.#lastHeard = performance.now();
        start = this.#parse(slab, start, end);
        // The next read may move or overwrite what the message so far borrows.
        if (this.#borrowed.length > 0) this.#keepPartial();
      }
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) await this.#refuse(error.message);
      else if (error instanceof PeerError) this.#shut(error.message, true);
      else this.#shut(this.#duringHandshake(`read failed: ${(error as Error).message}`));
    }
  }

  /**
   * A peer that leaves before READY usually refused us (libzmq closes on a
   * mechanism mismatch, e.g. a CURVE client) rather than crashed.
   */
  #duringHandshake(reason: string): string {
    return this.#ready ? reason : `handshake not completed: ${reason}`;
  }

  /** Tells a libzmq peer why (it logs a reason instead of a bare disconnect), then closes. */
  async #refuse(reason: string): Promise<void> {
    this.#append(errorCommand(reason));
    await this.#flushedWithin(100);
    this.#shut(reason, true);
  }

  /** Consumes whole frames from `bytes[start, end)`; returns where the unread bytes start. */
  #parse(bytes: Uint8Array, start: number, end: number): number {
    let at = start;
    if (!this.#greeted) {
      if (end - at < GREETING_BYTES) {
        // Refused as soon as the bytes that show it are in, not after 64 of them
        // (a ZMTP 1.0/2.0 peer would wait for the rest of a greeting it never sends).
        if (bytes[at] !== 0xff) throw new ProtocolError("not a ZMTP peer");
        if (end - at >= 11) {
          const check = checkGreeting(bytes.subarray(at, end));
          // The mechanism is not in yet: only the signature and the version can fail here.
          if (!check.ok && (bytes[at + 9] !== 0x7f || bytes[at + 10]! < 3)) {
            throw new ProtocolError(check.reason);
          }
        }
        this.#needed = GREETING_BYTES;
        return at;
      }
      const check = checkGreeting(bytes.subarray(at, at + GREETING_BYTES));
      if (!check.ok) throw new ProtocolError(check.reason);
      this.#minor = check.minor;
      this.#greeted = true;
      at += GREETING_BYTES;
    }
    while (!this.#closed) {
      const head = readFrameHead(bytes, at, end);
      if (!head) {
        this.#needed = 9;
        return at;
      }
      if ((bytes[at]! & RESERVED_FLAGS) !== 0) {
        throw new ProtocolError("reserved frame flag bits set");
      }
      if (head.size > this.#maxBytes) {
        throw new ProtocolError(`frame over the limit of ${this.#maxBytes} bytes`);
      }
      const frameEnd = head.start + head.size;
      if (frameEnd > end) {
        if (head.size >= LARGE_FRAME_BYTES) {
          // Its own buffer (the size is within the limit, checked above): the slab stays free
          // for reuse, and the frame is delivered without another copy.
          const body = this.#largeBuffer(head.size);
          body.set(bytes.subarray(head.start, end));
          this.#large = { head, body, filled: end - head.start };
          return end;
        }
        this.#needed = frameEnd - at;
        return at;
      }
      at = frameEnd;
      // A command is used before the slab is read into again, and so is a frame of a message
      // being discarded; a message frame may be kept.
      if (head.command || this.#discarding) {
        this.#frame(head, bytes.subarray(head.start, frameEnd));
      } else if (this.#options.borrow) {
        this.#frame(head, bytes.subarray(head.start, frameEnd), true);
      } else {
        this.#frame(head, this.#arena.copy(bytes, head.start, head.size));
      }
    }
    return at;
  }

  /**
   * The buffer of a large frame: with `borrow`, the reused one while no
   * message being assembled holds it (and it is not oversized for reuse).
   */
  #largeBuffer(size: number): Uint8Array {
    if (!this.#options.borrow || this.#spareBusy || size > SPARE_MAX_BYTES) {
      return new Uint8Array(size);
    }
    if (!this.#largeSpare || this.#largeSpare.length < size) {
      this.#largeSpare = new Uint8Array(size);
    }
    this.#spareBusy = true;
    return this.#largeSpare.subarray(0, size);
  }

  /** Borrowing: the slab is about to be read into again; frames of the message so far are copied. */
  #keepPartial(): void {
    for (const index of this.#borrowed) {
      const frame = this.#message[index]!;
      this.#message[index] = this.#arena.copy(frame, 0, frame.length);
    }
    this.#borrowed = [];
  }

  /**
   * Handles one complete frame: a command's is a view of the slab, a message
   * frame's a copy or a large frame's own buffer.
   */
  #frame(head: FrameHead, body: Uint8Array, fromSlab = false): void {
    if (head.command) {
      this.#command(body);
      return;
    }
    if (!this.#ready) throw new ProtocolError("message before READY");
    if (this.#message.length === 0 && this.#prefix) this.#message.push(this.#prefix);
    this.#messageBytes += head.size + FRAME_COST;
    if (this.#messageBytes > this.#maxBytes) {
      // Memory stays bounded: the frames so far go now, the rest as they come.
      this.#discarding = true;
      this.#message.length = 0;
      this.#borrowed = [];
    } else if (!this.#discarding) {
      if (fromSlab) this.#borrowed.push(this.#message.length);
      this.#message.push(body);
    }
    if (head.more) return;
    const message = this.#message;
    this.#message = [];
    this.#messageBytes = 0;
    if (this.#discarding) {
      this.#discarding = false;
      this.#events.oversized?.();
    } else {
      this.#events.message(message);
    }
    // Handed over (and, borrowed, done with): the slab and the spare may be reused.
    this.#borrowed = [];
    this.#spareBusy = false;
  }

  #command(body: Uint8Array): void {
    const command = parseCommand(body);
    if (!command) throw new ProtocolError("malformed command");
    if (!this.#ready && command.name !== "READY" && command.name !== "ERROR") {
      // NULL's handshake is READY or ERROR, nothing else (libzmq closes too, without ERROR).
      throw new ProtocolError(`${command.name} where READY was expected`);
    }
    switch (command.name) {
      case "READY": {
        if (this.#ready) throw new ProtocolError("second READY");
        const properties = parseProperties(command.body);
        if (!properties) throw new ProtocolError("malformed READY metadata");
        const socketType = new TextDecoder().decode(properties.get("socket-type"));
        if (!compatible(this.#options.socketType, socketType)) {
          throw new ProtocolError(
            `socket type ${socketType || "(none)"} cannot talk to ${this.#options.socketType}`,
          );
        }
        clearTimeout(this.#handshakeTimer);
        this.#handshakeTimer = undefined;
        const identity = properties.get("identity")?.slice() ?? new Uint8Array(0);
        // RFC 37: an Identity is at most 255 octets; a leading zero is reserved (generated ids).
        if (identity.length > 255) throw new ProtocolError("Identity longer than 255 bytes");
        if (identity[0] === 0) throw new ProtocolError("Identity starting with a zero byte");
        const refusal = this.#events.ready(this, { socketType, identity });
        if (refusal) throw new ProtocolError(refusal);
        this.#ready = true;
        this.#startHeartbeats();
        return;
      }
      case "PING": {
        const ttl = pingTtlMs(command.body);
        if (ttl > 0) {
          // libzmq: the TTL bounds the silence that follows this PING.
          this.#peerTtlMs = ttl;
          this.#armLiveness(this.#lastHeard + ttl);
        }
        // A peer that pings without reading gets one PONG per write, not one per PING.
        if (this.#pongQueued) return;
        this.#pongQueued = true;
        this.#append(pongFor(command.body));
        return;
      }
      case "ERROR":
        throw new PeerError(
          `peer error: ${new TextDecoder().decode(command.body.subarray(1, 1 + command.body[0]!))}`,
        );
      default:
        // PONG and commands of later versions carry nothing we need.
        return;
    }
  }

  get #heartbeatIvlMs(): number {
    return this.#minor >= 1 ? this.#options.heartbeatIvlMs ?? 0 : 0;
  }

  get #heartbeatTimeoutMs(): number {
    return this.#options.heartbeatTimeoutMs || this.#heartbeatIvlMs;
  }

  #startHeartbeats(): void {
    const ivl = this.#heartbeatIvlMs;
    if (ivl <= 0) return;
    this.#nextPingAt = performance.now() + ivl;
    this.#armLiveness(this.#nextPingAt);
  }

  /**
   * Makes the liveness timer fire by `at` at the latest. One timer per
   * connection, moved only when it fires or a PING brings a nearer deadline:
   * traffic just updates #lastHeard.
   */
  #armLiveness(at: number): void {
    if (this.#closed || at >= this.#livenessAt) return;
    clearTimeout(this.#livenessTimer);
    this.#livenessAt = at;
    this.#livenessTimer = setTimeout(
      () => this.#onLiveness(),
      Math.max(0, at - performance.now()),
    );
  }

  #onLiveness(): void {
    this.#livenessTimer = undefined;
    this.#livenessAt = Infinity;
    if (this.#closed) return;
    const now = performance.now();
    const silent = now - this.#lastHeard;
    const ivl = this.#heartbeatIvlMs;
    const timeout = ivl > 0 ? this.#heartbeatTimeoutMs : 0;
    if (timeout > 0 && silent >= timeout) {
      this.#shut(`peer silent for ${Math.round(silent)} ms (heartbeat timeout ${timeout} ms)`);
      return;
    }
    if (this.#peerTtlMs > 0 && silent >= this.#peerTtlMs) {
      this.#shut(`peer silent for ${Math.round(silent)} ms (its PING's TTL ${this.#peerTtlMs} ms)`);
      return;
    }
    if (ivl > 0 && now >= this.#nextPingAt) {
      const context = new Uint8Array(4);
      new DataView(context.buffer).setUint32(0, this.#pings++ >>> 0);
      this.#append(pingCommand(this.#options.heartbeatTtlMs ?? 0, context));
      this.#nextPingAt = now + ivl;
    }
    let next = Infinity;
    if (ivl > 0) next = Math.min(this.#nextPingAt, this.#lastHeard + timeout);
    if (this.#peerTtlMs > 0) next = Math.min(next, this.#lastHeard + this.#peerTtlMs);
    if (next < Infinity) this.#armLiveness(next);
  }

  /** Gives back to the output budget bytes written (or dropped at close). */
  #uncharge(n: number): void {
    const given = Math.min(n, this.#charged);
    if (given === 0) return;
    this.#charged -= given;
    this.#options.outputBudget?.give(given);
  }

  #settleFlushed(): void {
    this.#flushed?.resolve();
    this.#flushed = undefined;
  }

  #shut(reason: string | undefined, refused = reason !== undefined && !this.#ready): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    clearTimeout(this.#livenessTimer);
    this.#livenessTimer = undefined;
    // Output that will never be written goes now, whoever still holds this object.
    this.#out = new Uint8Array(0);
    this.#spare = undefined;
    this.#largeSpare = undefined;
    this.#outLength = 0;
    this.#message = [];
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
    this.#settleFlushed();
    // Output still queued will never be written: it leaves the budget with us.
    this.#uncharge(this.#charged);
    this.#events.closed(this, reason, refused);
  }
}
