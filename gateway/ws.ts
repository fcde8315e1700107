/**
 * `/ws`: one WebSocket, many subscriptions. The JSON protocol is documented in
 * docs/websocket.md; messages are validated with zod, every error is an
 * `error` message with a stable code, and a connection that cannot keep up
 * is closed with code 4008 rather than buffering without bound.
 *
 * @module
 */
import { z } from "zod";
import type { Body, MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import type { BusHub, Listener, ListenOptions } from "./bus_hub.ts";
import { toApiError } from "./errors.ts";
import { frameToJson } from "./routes/services.ts";

/** Close codes of the protocol. */
export const CLOSE = {
  /** The client did not read fast enough: its send buffer passed the limit. */
  SLOW_CONSUMER: 4008,
  /** A message over the inbound size limit. */
  TOO_BIG: 1009,
  /** Too many protocol errors in a row. */
  POLICY: 1008,
  /** The gateway is shutting down. */
  GOING_AWAY: 1001,
} as const;

/** Limits of one connection. */
export interface WsLimits {
  /** Bytes the gateway may have queued for one socket before closing it. @default 4 MiB */
  maxBufferedBytes: number;
  /** Largest inbound message in bytes. @default 64 KiB */
  maxMessageBytes: number;
  /** Subscriptions and watches per socket. @default 256 */
  maxSubscriptions: number;
}

/** What a session reports, for metrics. */
export interface WsObserver {
  opened?(): void;
  closed?(): void;
  sent?(count: number): void;
  slowConsumer?(): void;
  protocolError?(code: string): void;
}

const id = z.string().min(1).max(128);
const Inbound = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("subscribe"),
    id,
    bus: z.string().min(1),
    prefix: z.string().max(1024),
    /** Last offset the client has: replay what it missed first (docs/websocket.md). */
    from: z.string().min(1).max(64).optional(),
  }),
  z.object({ type: z.literal("unsubscribe"), id }),
  z.object({ type: z.literal("watch"), id, scope: z.string().min(1).max(1024) }),
  z.object({
    type: z.literal("request"),
    id,
    service: z.string().min(1).max(255),
    body: z.array(z.string()).min(1).max(64),
    timeout_ms: z.number().int().min(1).max(300_000).optional(),
  }),
  z.object({ type: z.literal("ping"), id: id.optional() }),
]);
type Inbound = z.infer<typeof Inbound>;

const STATE_BUS = "state";

/** One WebSocket connection's state. */
export class WsSession {
  #socket: WebSocket;
  #hub: BusHub;
  #client: MdpClient;
  #limits: WsLimits;
  #observer: WsObserver;
  #subscriptions = new Map<string, () => void>();
  #requests = new Map<string, AbortController>();
  #closed = false;
  #early: string[] = [];

  constructor(
    socket: WebSocket,
    hub: BusHub,
    client: MdpClient,
    limits: WsLimits,
    observer: WsObserver = {},
  ) {
    this.#socket = socket;
    this.#hub = hub;
    this.#client = client;
    this.#limits = limits;
    this.#observer = observer;
    socket.onopen = () => {
      observer.opened?.();
      this.#send({ type: "welcome", protocol: 1, buses: hub.buses });
      for (const text of this.#early.splice(0)) this.#sendText(text);
    };
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = () => this.#teardown();
    socket.onerror = () => {};
  }

  #send(message: Record<string, unknown>): void {
    this.#sendText(JSON.stringify(message));
  }

  #sendText(text: string): void {
    if (this.#closed) return;
    if (this.#socket.readyState === WebSocket.CONNECTING) {
      // A client may speak before the server side has seen `open`: keep the reply.
      this.#early.push(text);
      return;
    }
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    if (this.#socket.bufferedAmount > this.#limits.maxBufferedBytes) {
      this.#observer.slowConsumer?.();
      this.close(CLOSE.SLOW_CONSUMER, "slow consumer: send buffer over the limit");
      return;
    }
    this.#socket.send(text);
    this.#observer.sent?.(1);
  }

  #error(id: string | undefined, code: string, message: string): void {
    this.#observer.protocolError?.(code);
    this.#send({ type: "error", ...(id ? { id } : {}), code, message });
  }

  #onMessage(data: unknown): void {
    if (typeof data !== "string") {
      return this.#error(undefined, "BAD_REQUEST", "Messages are JSON text");
    }
    if (data.length > this.#limits.maxMessageBytes) {
      this.#observer.protocolError?.("TOO_BIG");
      return this.close(CLOSE.TOO_BIG, `message over ${this.#limits.maxMessageBytes} bytes`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      return this.#error(undefined, "BAD_REQUEST", "Message is not valid JSON");
    }
    const result = Inbound.safeParse(parsed);
    if (!result.success) {
      const maybeId = (parsed as { id?: unknown })?.id;
      const issue = result.error.issues[0];
      return this.#error(
        typeof maybeId === "string" ? maybeId : undefined,
        "BAD_REQUEST",
        `${issue?.path.join(".") || "message"}: ${issue?.message ?? "invalid"}`,
      );
    }
    this.#handle(result.data);
  }

  #handle(message: Inbound): void {
    switch (message.type) {
      case "ping":
        return this.#send({ type: "pong", ...(message.id ? { id: message.id } : {}) });
      case "subscribe": {
        const head = `{"type":"message","id":${JSON.stringify(message.id)},`;
        return this.#subscribe(message.id, message.bus, message.prefix, (delivery) => {
          this.#sendText(head + delivery.json());
        }, {
          from: message.from,
          onGap: (gap) => this.#send({ type: "gap", id: message.id, ...gap }),
        });
      }
      case "watch":
        return this.#subscribe(message.id, STATE_BUS, message.scope, ({ message: m }) => {
          // The bus matches by prefix: scope "plant" would also see "plant2".
          let change: { scope?: string };
          try {
            change = JSON.parse(text(m.payload));
          } catch {
            return;
          }
          if (change.scope !== message.scope) return;
          this.#send({ type: "change", id: message.id, change });
        });
      case "unsubscribe": {
        const stop = this.#subscriptions.get(message.id);
        if (!stop) return this.#error(message.id, "NOT_FOUND", `No subscription '${message.id}'`);
        stop();
        this.#subscriptions.delete(message.id);
        return this.#send({ type: "unsubscribed", id: message.id });
      }
      case "request":
        return void this.#request(message.id, message.service, message.body, message.timeout_ms);
    }
  }

  #subscribe(
    id: string,
    bus: string,
    prefix: string,
    listener: Listener,
    options: ListenOptions = {},
  ): void {
    if (this.#subscriptions.has(id)) {
      return this.#error(id, "BAD_REQUEST", `Subscription id '${id}' is in use`);
    }
    if (this.#subscriptions.size >= this.#limits.maxSubscriptions) {
      return this.#error(id, "TOO_MANY_SUBSCRIPTIONS", `At most ${this.#limits.maxSubscriptions}`);
    }
    if (!this.#hub.buses.includes(bus)) {
      return this.#error(
        id,
        "NOT_FOUND",
        `Unknown bus '${bus}' (known: ${this.#hub.buses.join(", ")})`,
      );
    }
    // Replayed messages (options.from) follow `subscribed`.
    const history = this.#hub.hasHistory(bus) ? { history: true } : {};
    this.#send({ type: "subscribed", id, bus, prefix, ...history });
    this.#subscriptions.set(id, this.#hub.listen(bus, prefix, listener, options));
  }

  async #request(id: string, service: string, body: Body, timeoutMs?: number): Promise<void> {
    if (this.#requests.has(id)) {
      return this.#error(id, "BAD_REQUEST", `Request id '${id}' is in use`);
    }
    const abort = new AbortController();
    this.#requests.set(id, abort);
    try {
      for await (
        const reply of this.#client.stream(service, body, { timeoutMs, signal: abort.signal })
      ) {
        this.#send({
          type: reply.final ? "final" : "partial",
          id,
          service,
          frames: reply.body.map(frameToJson),
        });
      }
    } catch (error) {
      if (abort.signal.aborted) return;
      const api = toApiError(error);
      this.#error(id, api.code, api.message);
    } finally {
      this.#requests.delete(id);
    }
  }

  #teardown(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const stop of this.#subscriptions.values()) stop();
    this.#subscriptions.clear();
    for (const abort of this.#requests.values()) abort.abort();
    this.#observer.closed?.();
  }

  /** Closes the connection and drops its subscriptions. */
  close(code: number, reason: string): void {
    try {
      this.#socket.close(code, reason);
    } catch {
      // already closing
    }
    this.#teardown();
  }
}
