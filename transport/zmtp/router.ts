/**
 * A ROUTER socket in TypeScript: listens on TCP, speaks ZMTP 3.1 with the
 * NULL mechanism, and routes by routing id as libzmq's ROUTER does (the
 * peer's Identity when it sends one that is free, else a 5-byte id; a reply
 * to an unknown id is dropped). Incoming messages start with the routing id.
 * A second peer asking for an Identity in use is kept connected but not
 * routed to until the name is free, as libzmq's ROUTER does (closing it
 * made a libzmq peer reconnect every 100 ms); with `handover` it takes the
 * name and the old connection waits instead (ZMQ_ROUTER_HANDOVER).
 *
 * Why not libzmq's ROUTER: every message through it crosses libzmq's I/O
 * thread and a wake-up of ours, which made a brokered round trip cost about
 * three times a plain TCP one on this project's 2-core machines. Here reads and
 * writes happen on Deno's event loop directly. CURVE needs libzmq and stays
 * there ({@link NativeSocket}).
 *
 * @module
 */
import { BindError, listenFailure } from "../bind.ts";
import type { Frames } from "../frames.ts";
import { ZmtpConnection, type ZmtpConnectionEvents, type ZmtpPeer } from "./connection.ts";
import { formatTcpEndpoint, parseTcpEndpoint } from "./endpoint.ts";
import { type HeartbeatOptions, heartbeatOptions } from "../heartbeat.ts";
import { Inbox } from "./inbox.ts";
import { OutputBudget } from "./output_budget.ts";
import { RoomWaiters } from "./room.ts";

/** Options of {@link ZmtpRouter.bind}. */
export interface ZmtpRouterOptions extends HeartbeatOptions {
  /**
   * A peer sending a larger frame is disconnected; a larger message of
   * smaller frames is discarded and reported to `onOversized`. @default 64 MiB
   */
  maxMessageSize?: number;
  /** A message over `maxMessageSize` was discarded. */
  onOversized?: () => void;
  /**
   * Bytes queued for one peer beyond which {@link ZmtpRouter.trySend} refuses
   * (libzmq's high-water mark, in bytes). @default 64 MiB
   */
  sendBufferBytes?: number;
  /**
   * Connections (handshaking or not) beyond which a new one is closed as
   * soon as it is accepted, and counted. @default no limit
   */
  maxConnections?: number;
  /**
   * Output queued across all peers beyond which a message is dropped for
   * its peer (counted; as libzmq's ROUTER does at a peer's high-water mark
   * without ZMQ_ROUTER_MANDATORY), {@link ZmtpRouter.trySend} returning
   * false. @default no limit
   */
  maxBufferedOutputBytes?: number;
  /** A connection refused at `maxConnections`, or a message at `maxBufferedOutputBytes`. */
  onLimit?: (limit: "connections" | "output") => void;
  /** Milliseconds queued output gets to be written at close. @default 0 */
  linger?: number;
  /**
   * Frames handed to `drain` are views valid only while its handler runs
   * (connection.ts, `borrow`): a handler that keeps a frame copies it.
   * Messages queued while nothing drains are copied. @default false
   */
  borrowFrames?: boolean;
  /**
   * ZMQ_HANDSHAKE_IVL: a connection that has not completed its handshake
   * within this many ms is closed (and counted refused). @default 10000
   */
  handshakeMs?: number;
  /** Messages kept while nothing drains the socket. @default 100000 */
  receiveQueue?: number;
  /**
   * A connection that ended other than by {@link ZmtpRouter.close}: `refused`
   * when the peer broke the protocol (oversized frame, bad handshake, routing
   * id in use) or never completed the handshake. `routingId`: the peer's,
   * when its handshake was done and it still held the id.
   */
  onConnectionEnd?: (
    event: { refused: boolean; reason: string; address: string; routingId?: Uint8Array },
  ) => void;
  /**
   * ZMQ_ROUTER_HANDOVER: a peer whose Identity is in use takes it over; the
   * connection that held it stays open, unrouted, its messages dropped (as
   * libzmq detaches its pipe). @default false (as libzmq)
   */
  handover?: boolean;
}

const latin1 = new TextDecoder("latin1");

/** The map key of a routing id. */
function idKey(id: Uint8Array): string {
  return latin1.decode(id);
}

/** Runs an observer callback: its failure must not take a connection's I/O down with it. */
function report(callback: () => void): void {
  try {
    callback();
  } catch (error) {
    console.error("ZMTP ROUTER: an observer callback failed:", error);
  }
}

/** A bound ROUTER; see the module documentation. */
export class ZmtpRouter {
  /** The endpoint bound, with the real port when `*` or 0 was asked for. */
  readonly endpoint: string;
  #listener: Deno.TcpListener;
  #options: ZmtpRouterOptions;
  #connections = new Set<ZmtpConnection>();
  #byId = new Map<string, ZmtpConnection>();
  /**
   * Connections whose Identity was in use at their handshake, by their
   * prefix object: not routed to; each message of theirs tries the name again.
   */
  #anonymous = new Map<Uint8Array, ZmtpConnection>();
  #inbox: Inbox;
  #closed = false;
  #nextId = (Math.random() * 0xffff_ffff) >>> 0;
  #accepting: Promise<void>;
  #room = new RoomWaiters();
  #onPeerGone: ((routingId: Uint8Array) => void) | undefined;
  /** Messages sent to a routing id with no connection (dropped, as libzmq's ROUTER does). */
  unroutable = 0;
  /** Messages dropped from a peer whose Identity another connection holds. */
  duplicateDropped = 0;
  /** Connections closed at accept because `maxConnections` were open. */
  refusedConnections = 0;
  #budget: OutputBudget | undefined;

  private constructor(listener: Deno.TcpListener, options: ZmtpRouterOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#inbox = new Inbox(options.receiveQueue ?? 100_000, options.borrowFrames ?? false);
    if (options.maxBufferedOutputBytes !== undefined) {
      this.#budget = new OutputBudget(options.maxBufferedOutputBytes);
    }
    this.endpoint = formatTcpEndpoint(listener.addr);
    this.#accepting = this.#accept();
  }

  /** Binds `tcp://host:port`; a failure is a {@link BindError} naming `component`. */
  static bind(endpoint: string, component: string, options: ZmtpRouterOptions = {}): ZmtpRouter {
    const address = parseTcpEndpoint(endpoint);
    if (!address) throw new BindError(component, endpoint, "invalid endpoint");
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: address.hostname, port: address.port });
    } catch (error) {
      throw new BindError(component, endpoint, listenFailure(error), { cause: error });
    }
    return new ZmtpRouter(listener, options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Peers whose handshake is done. */
  get peers(): number {
    return this.#byId.size;
  }

  /** Output queued across all peers, in bytes (counted when `maxBufferedOutputBytes` is set). */
  get bufferedOutputBytes(): number {
    return this.#budget?.used ?? 0;
  }

  /** Messages dropped at `maxBufferedOutputBytes`. */
  get overBudget(): number {
    return this.#budget?.refused ?? 0;
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        // EMFILE and the like: wait a little rather than spin, then accept again.
        report(() =>
          this.#options.onConnectionEnd?.({
            refused: true,
            reason: `accept failed: ${(error as Error).message}`,
            address: this.endpoint,
          })
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.#closed) {
        conn.close();
        return;
      }
      if (this.#connections.size >= (this.#options.maxConnections ?? Infinity)) {
        // Refused before any buffer or timer exists for it: a flood costs an fd for a moment.
        conn.close();
        this.refusedConnections++;
        report(() => this.#options.onLimit?.("connections"));
        continue;
      }
      this.#connections.add(
        new ZmtpConnection(conn, {
          socketType: "ROUTER",
          ...(this.#options.borrowFrames ? { borrow: true } : {}),
          ...(this.#options.handshakeMs !== undefined
            ? { handshakeMs: this.#options.handshakeMs }
            : {}),
          ...(this.#options.sendBufferBytes !== undefined
            ? { sendBufferBytes: this.#options.sendBufferBytes }
            : {}),
          ...(this.#options.maxMessageSize !== undefined
            ? { maxMessageBytes: this.#options.maxMessageSize }
            : {}),
          ...heartbeatOptions(this.#options),
          ...(this.#budget ? { outputBudget: this.#budget } : {}),
        }, this.#events),
      );
    }
  }

  #events: ZmtpConnectionEvents = {
    ready: (connection: ZmtpConnection, peer: ZmtpPeer) => {
      let id = peer.identity;
      if (id.length === 0) {
        // libzmq's form: a zero byte (peers may not choose one) and a counter.
        do {
          id = new Uint8Array(5);
          new DataView(id.buffer).setUint32(1, this.#nextId);
          this.#nextId = (this.#nextId + 1) >>> 0;
        } while (this.#byId.has(idKey(id)));
      } else {
        const holder = this.#byId.get(idKey(id));
        if (holder && this.#options.handover) {
          // As libzmq: the holder is detached, not closed (a live one would reconnect and
          // take the name back, over and over). It waits as a newcomer does; heartbeats
          // reap it if it is dead.
          this.#anonymous.set(holder.prefix!, holder);
          // To its user the holder is gone: a restarted worker's READY must not meet its
          // predecessor's registration (the notice comes before the newcomer's messages).
          if (this.#onPeerGone && !this.#closed) this.#inbox.deliver([holder.prefix!]);
        } else if (holder) {
          // The routing id still heads its messages: it is how they are told apart.
          connection.setPrefix(id);
          this.#anonymous.set(id, connection);
          return undefined;
        }
      }
      this.#byId.set(idKey(id), connection);
      // The routing id heads every message of the peer, and is how close() finds its entry.
      connection.setPrefix(id);
      return undefined;
    },
    // Nothing is handed over once close() began (connections may still read while lingering).
    message: (frames: Frames) => {
      if (this.#closed) return;
      if (this.#anonymous.size > 0 && !this.#adopted(frames[0]!)) {
        this.duplicateDropped++;
        return;
      }
      this.#inbox.deliver(frames);
    },
    oversized: () => report(() => this.#options.onOversized?.()),
    overBudget: () => report(() => this.#options.onLimit?.("output")),
    drained: () => this.#room.wakeAll(),
    closed: (connection: ZmtpConnection, reason: string | undefined, refused: boolean) => {
      this.#connections.delete(connection);
      const id = connection.prefix;
      if (id) this.#anonymous.delete(id);
      const held = id !== undefined && this.#byId.get(idKey(id)) === connection;
      if (held) {
        this.#byId.delete(idKey(id));
        // Its messages that arrived are still delivered (a reply sent before the
        // peer went away is a reply, as libzmq reads a pipe to its end); the
        // notice goes through the inbox, so it comes after them.
        if (this.#onPeerGone && !this.#closed) this.#inbox.deliver([id]);
      }
      // A sender waiting for this peer's queue to drain must not wait forever.
      this.#room.wakeAll();
      if (reason !== undefined) {
        report(() =>
          this.#options.onConnectionEnd?.({
            refused,
            reason,
            address: connection.remote,
            ...(held ? { routingId: id } : {}),
          })
        );
      }
    },
  };

  /**
   * Whether a message headed by `prefix` may be delivered: yes unless its
   * connection waits for its Identity, which it takes if now free (libzmq
   * tries the name again when such a peer has a message).
   */
  #adopted(prefix: Uint8Array): boolean {
    const waiting = this.#anonymous.get(prefix);
    if (!waiting) return true;
    const key = idKey(prefix);
    if (this.#byId.has(key)) return false;
    this.#anonymous.delete(prefix);
    this.#byId.set(key, waiting);
    return true;
  }

  /**
   * The address (`tcp://host:port`) of the peer `routingId` names while its
   * connection is open, for a log line about what it sent; else undefined.
   */
  peerAddress(routingId: Uint8Array): string | undefined {
    return (this.#byId.get(idKey(routingId)) ?? this.#anonymous.get(routingId))?.remote;
  }

  /**
   * Closes the connection of the peer `routingId` names (its queued output
   * and undelivered messages are dropped); false when there is none.
   */
  closePeer(routingId: Uint8Array): boolean {
    const connection = this.#byId.get(idKey(routingId));
    if (!connection) return false;
    this.#byId.delete(idKey(routingId));
    void connection.close();
    return true;
  }

  /**
   * Sends `frames` to the peer `head` names without waiting. False when that
   * peer has more than `sendBufferBytes` queued, or the message would take
   * the output of all peers over `maxBufferedOutputBytes`; a message to an unknown peer
   * is dropped and counted in {@link unroutable} (true, as libzmq does).
   */
  trySendAfter(head: Uint8Array, frames: Frames): boolean {
    if (this.#closed) return false;
    const connection = this.#byId.get(idKey(head));
    if (!connection) {
      this.unroutable++;
      return true;
    }
    return connection.send(frames);
  }

  /** {@link trySendAfter} with the routing id as the first frame. */
  trySend(frames: Frames): boolean {
    const [head, ...rest] = frames;
    if (!head) return true;
    return this.trySendAfter(head, rest);
  }

  /** Sends, waiting while the peer's queue is over `sendBufferBytes`. */
  send(frames: Frames): Promise<void> {
    return this.#room.retry(() => this.trySend(frames), () => this.#closed);
  }

  /**
   * Calls `listener` with the routing id of every peer whose connection ends
   * (closed by it, lost, or dropped here), in order with that peer's messages
   * and from within {@link drain}. Set it before peers connect.
   */
  onPeerGone(listener: (routingId: Uint8Array) => void): void {
    this.#onPeerGone = listener;
  }

  /** See {@link Inbox.drain}. */
  drain(onMessage: (frames: Frames) => void): Promise<void> {
    // A peer's message has its routing id and at least one frame: one frame alone is a notice.
    return this.#inbox.drain((frames) => {
      if (frames.length === 1) this.#onPeerGone?.(frames[0]!);
      else onMessage(frames);
    });
  }

  /**
   * Stops listening and closes every connection; queued output gets the
   * socket's linger (or `linger`) to go out first. {@link drain} resolves once
   * everything is closed.
   */
  close(linger?: number): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Closed already.
    }
    const lingerMs = linger ?? this.#options.linger ?? 0;
    const closing = [...this.#connections].map((connection) => connection.close(lingerMs));
    this.#room.wakeAll();
    void Promise.all([this.#accepting, ...closing]).then(() => this.#inbox.close());
  }
}
