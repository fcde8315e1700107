/**
 * `/ws`: one WebSocket, many subscriptions. The JSON protocol is documented in
 * docs/websocket.md; messages are validated with zod, every error is an
 * `error` message with a stable code, and a connection that cannot keep up
 * is closed with code 4008 rather than buffering without bound.
 *
 * @module
 */
import { z } from "zod";
import { busPublish, busSubscribe, statePermissions } from "../auth/permissions.ts";
import { AuthError, type Principal } from "../auth/tokens.ts";
import type { Body, BrokerClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import type { BusHub, Listener, ListenOptions } from "./bus_hub.ts";
import type { BusOutlet } from "./bus_outlet.ts";
import type { ServiceDirectory } from "../mdp/directory.ts";
import { toApiError } from "./errors.ts";
import { keyedBody, keyedReply } from "./idempotency.ts";
import { IdempotencyKey } from "../state/idempotency.ts";
import { frameToJson } from "../mdp/frame_json.ts";

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
  /** No valid credential: none sent in time, or the token expired. */
  UNAUTHENTICATED: 4001,
  /**
   * The principal's access was revoked: its user disabled, deleted, given
   * other roles or a new password, its login ended, or its API key's creator
   * disabled or deleted (gateway/auth/revocations.ts).
   */
  REVOKED: 4003,
  /** The principal has too many connections open. */
  TOO_MANY_CONNECTIONS: 4029,
} as const;

/** How long a connection may stay without a principal when one is required. */
const AUTH_TIMEOUT_MS = 10_000;
/** Failed `auth` messages after which the connection is closed. */
const MAX_AUTH_FAILURES = 5;

/** Authentication and authorization of one connection (see gateway/auth/). */
export interface WsAuth {
  /** Whether a principal is needed for anything but `ping` and `auth`. */
  required: boolean;
  /** From the upgrade request (header or cookie); else the first message must be `auth`. */
  principal?: Principal;
  /** The principal of a token sent in an `auth` message; throws AuthError (audited). */
  authenticate(token: string): Promise<Principal>;
  /** Throws AuthError (audited) unless the principal holds one of the alternatives. */
  require(principal: Principal, alternatives: string[], target: string): void;
  /** Checks a Majordomo request and returns the body to send (gateway/auth/http.ts authorizeCall). */
  call(principal: Principal, service: string, body: string[]): string[];
  /** Counts the connection against `principal`; false when its connection limit is reached. */
  admit(principal: Principal): boolean;
  /** The connection closed: release what it held. */
  release(): void;
}

/** Everything allowed: authentication off. */
const OPEN: WsAuth = {
  required: false,
  authenticate: () =>
    Promise.reject(new AuthError("AUTHENTICATION_FAILED", "Authentication is off")),
  require: () => {},
  call: (_principal, _service, body) => body,
  admit: () => true,
  release: () => {},
};

/** Limits of one connection. */
export interface WsLimits {
  /** Bytes the gateway may have queued for one socket before closing it. @default 4 MiB */
  maxBufferedBytes: number;
  /** Largest inbound message in bytes. @default 64 KiB */
  maxMessageBytes: number;
  /** Subscriptions and watches per socket. @default 256 */
  maxSubscriptions: number;
  /** Requests one connection may have waiting for replies. @default 1024 */
  maxPendingRequests?: number;
  /** Messages a client may send per second (a bucket of as many); beyond it RATE_LIMITED errors. @default 1000 */
  maxMessagesPerSecond?: number;
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
    /** Coalesce this subscription's messages for up to batch_ms: frames may be arrays (docs/websocket.md). */
    batch_ms: z.number().int().min(1).max(1000).optional(),
  }),
  z.object({ type: z.literal("unsubscribe"), id }),
  z.object({ type: z.literal("watch"), id, scope: z.string().min(1).max(1024) }),
  z.object({
    type: z.literal("request"),
    id,
    service: z.string().min(1).max(255),
    body: z.array(z.string()).min(1).max(64),
    timeout_ms: z.number().int().min(1).max(300_000).optional(),
    /** org.plantd.State writes: apply at most once per key (docs/websocket.md). */
    idempotency_key: IdempotencyKey.optional(),
  }),
  z.object({ type: z.literal("ping"), id: id.optional() }),
  z.object({ type: z.literal("auth"), id: id.optional(), token: z.string().min(1).max(16_384) }),
  z.object({
    type: z.literal("publish"),
    id,
    bus: z.string().min(1).max(255),
    topic: z.string().min(1).max(1024),
    payload: z.string(),
    encoding: z.enum(["text", "base64"]).optional(),
    form: z.enum(["single", "frames"]).optional(),
  }),
]);
type Inbound = z.infer<typeof Inbound>;

/** The bus of state change events (envelope = scope). */
export const STATE_BUS = "state";

/** A pending batch is sent at once when it holds more messages than this... */
const BATCH_MAX_ITEMS = 1000;
/** ...or more UTF-16 code units (about as many bytes for JSON) than this. */
const BATCH_MAX_CHARS = 256 * 1024;
const utf8 = new TextEncoder();

/** One WebSocket connection's state. */
export class WsSession {
  #socket: WebSocket;
  #hub: BusHub;
  #client: BrokerClient;
  #limits: WsLimits;
  #observer: WsObserver;
  #subscriptions = new Map<string, () => void>();
  #requests = new Map<string, AbortController>();
  #closed = false;
  /** Frames sent before the server side saw `open`, with the messages each holds. */
  #early: Array<[text: string, messages: number]> = [];
  /** Framed messages of batched subscriptions waiting for the batch timer. */
  #batch: string[] = [];
  #batchChars = 0;
  #batchTimer: ReturnType<typeof setTimeout> | undefined;
  /** `batch_ms` of each batched subscription, by id. */
  #batchMs = new Map<string, number>();
  #auth: WsAuth;
  #outlet: BusOutlet | undefined;
  #services: Pick<ServiceDirectory, "require"> | undefined;
  #principal: Principal | undefined;
  #authTimer: ReturnType<typeof setTimeout> | undefined;
  #authFailures = 0;
  #tokens = Infinity;
  #refilled = performance.now();
  #lastLimitError = -Infinity;
  /** At least the socket's `bufferedAmount` (see #sendText). */
  #bufferedBound = 0;

  constructor(
    socket: WebSocket,
    hub: BusHub,
    client: BrokerClient,
    limits: WsLimits,
    observer: WsObserver = {},
    auth: WsAuth = OPEN,
    outlet?: BusOutlet,
    services?: Pick<ServiceDirectory, "require">,
  ) {
    this.#outlet = outlet;
    this.#services = services;
    this.#socket = socket;
    this.#hub = hub;
    this.#client = client;
    this.#limits = limits;
    this.#observer = observer;
    this.#auth = auth;
    if (auth.principal) this.#becomes(auth.principal);
    else if (auth.required) {
      this.#authTimer = setTimeout(
        () => this.close(CLOSE.UNAUTHENTICATED, "authentication required"),
        AUTH_TIMEOUT_MS,
      );
    }
    socket.onopen = () => {
      observer.opened?.();
      this.#send({
        type: "welcome",
        protocol: 1,
        buses: hub.buses,
        authenticated: this.#principal !== undefined && auth.required,
        auth_required: auth.required && this.#principal === undefined,
      });
      // Straight to the socket: a pending batch came after all of #early
      // (whatever went to #early flushed the batch first) and waits for its timer.
      for (const [text, messages] of this.#early.splice(0)) this.#write(text, messages);
    };
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = () => this.#teardown();
    socket.onerror = () => {};
  }

  /** Who the connection acts as; undefined before it authenticated. */
  get principal(): Principal | undefined {
    return this.#principal;
  }

  #send(message: Record<string, unknown>): void {
    this.#sendText(JSON.stringify(message));
  }

  /** Sends one message, after the pending batch so the connection's order holds. */
  #sendText(text: string): void {
    if (this.#batch.length > 0) this.#flush();
    this.#write(text, 1);
  }

  /** Queues one framed message of a batched subscription (see #flush). */
  #enqueue(text: string): void {
    if (this.#closed) return;
    this.#batch.push(text);
    this.#batchChars += text.length;
    if (this.#batch.length > BATCH_MAX_ITEMS || this.#batchChars > BATCH_MAX_CHARS) {
      return this.#flush();
    }
    if (this.#batchTimer === undefined) {
      let wait = 1000;
      for (const ms of this.#batchMs.values()) if (ms < wait) wait = ms;
      this.#batchTimer = setTimeout(() => {
        this.#batchTimer = undefined;
        this.#flush();
      }, wait);
    }
  }

  /** Sends the pending batch as one frame: a JSON array of its messages, or the one message. */
  #flush(): void {
    if (this.#batchTimer !== undefined) {
      clearTimeout(this.#batchTimer);
      this.#batchTimer = undefined;
    }
    const batch = this.#batch;
    if (batch.length === 0) return;
    this.#batch = [];
    this.#batchChars = 0;
    this.#write(batch.length === 1 ? batch[0]! : "[" + batch.join(",") + "]", batch.length);
  }

  /** Writes one frame holding `messages` messages to the socket. */
  #write(text: string, messages: number): void {
    if (this.#closed) return;
    if (this.#socket.readyState === WebSocket.CONNECTING) {
      // A client may speak before the server side has seen `open`: keep the reply.
      this.#early.push([text, messages]);
      return;
    }
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    // `bufferedAmount` is a call into Deno per read. It grows only by what is
    // sent here, so `#bufferedBound` (last reading plus an upper bound of the
    // UTF-8 bytes sent since) is never below it: while the bound is within the
    // limit so is the buffer, and it is read only when the bound passes it.
    if (this.#bufferedBound > this.#limits.maxBufferedBytes) {
      const buffered = this.#socket.bufferedAmount;
      if (buffered > this.#limits.maxBufferedBytes) {
        this.#observer.slowConsumer?.();
        this.close(CLOSE.SLOW_CONSUMER, "slow consumer: send buffer over the limit");
        return;
      }
      this.#bufferedBound = buffered;
    }
    this.#socket.send(text);
    // A UTF-16 code unit takes at most 3 bytes in UTF-8.
    this.#bufferedBound += text.length * 3;
    this.#observer.sent?.(messages);
  }

  #error(id: string | undefined, code: string, message: string): void {
    this.#observer.protocolError?.(code);
    this.#send({ type: "error", ...(id ? { id } : {}), code, message });
  }

  /** Takes a token from the connection's bucket; false when it is empty. */
  #admitMessage(): boolean {
    const rate = this.#limits.maxMessagesPerSecond ?? 1000;
    const now = performance.now();
    this.#tokens = Math.min(rate, this.#tokens + (now - this.#refilled) * rate / 1000);
    this.#refilled = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  #onMessage(data: unknown): void {
    if (!this.#admitMessage()) {
      // Errors are rate limited too: one per second of flood at most.
      if (performance.now() - this.#lastLimitError >= 1000) {
        this.#lastLimitError = performance.now();
        this.#error(undefined, "RATE_LIMITED", "Too many messages; slow down");
      } else this.#observer.protocolError?.("RATE_LIMITED");
      return;
    }
    const max = this.#limits.maxMessageBytes;
    // The limit is in bytes, binary messages included: a UTF-16 length undercounts
    // multi-byte text up to three times, and binary messages were not measured.
    const size = typeof data === "string"
      ? (data.length * 3 <= max ? data.length : utf8.encode(data).length)
      : data instanceof Blob
      ? data.size
      : data instanceof ArrayBuffer
      ? data.byteLength
      : 0;
    if (size > max) {
      this.#observer.protocolError?.("TOO_BIG");
      return this.close(CLOSE.TOO_BIG, `message over ${max} bytes`);
    }
    if (typeof data !== "string") {
      return this.#error(undefined, "BAD_REQUEST", "Messages are JSON text");
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

  /** The connection acts as `principal` from now on, until its credential expires. */
  #becomes(principal: Principal): void {
    this.#principal = principal;
    clearTimeout(this.#authTimer);
    this.#authTimer = undefined;
    if (principal.expiresAt !== undefined) {
      // A timer cannot wait longer than 2^31-1 ms; a later expiry re-arms it.
      const wait = Math.min(Math.max(0, principal.expiresAt - Date.now()), 2 ** 31 - 1);
      this.#authTimer = setTimeout(() => {
        if (this.#principal !== principal) return;
        if ((principal.expiresAt ?? 0) > Date.now()) return this.#becomes(principal);
        this.close(CLOSE.UNAUTHENTICATED, "token expired");
      }, wait);
    }
  }

  async #authenticate(id: string | undefined, token: string): Promise<void> {
    try {
      const principal = await this.#auth.authenticate(token);
      if (!this.#auth.admit(principal)) {
        return this.close(CLOSE.TOO_MANY_CONNECTIONS, "too many connections for this user");
      }
      this.#becomes(principal);
      this.#send({
        type: "authenticated",
        ...(id ? { id } : {}),
        name: principal.name,
        permissions: principal.permissions,
        ...(principal.expiresAt ? { expires_at: principal.expiresAt } : {}),
      });
    } catch (error) {
      const api = toApiError(error);
      this.#error(id, api.code, api.message);
      // The auth database being away is not the client's failure: it may retry.
      if (api.code === "AUTH_STORE_UNAVAILABLE") return;
      if (++this.#authFailures >= MAX_AUTH_FAILURES) {
        this.close(CLOSE.POLICY, "too many failed authentications");
      }
    }
  }

  /** The principal; undefined (after an error reply) when none has authenticated yet. */
  #authenticated(id: string): Principal | undefined {
    if (!this.#principal) {
      this.#error(id, "UNAUTHENTICATED", "Send an auth message with a token first");
    }
    return this.#principal;
  }

  /** Whether the principal may act (an error reply when not). */
  #may(id: string, alternatives: string[], target: string): boolean {
    if (!this.#auth.required) return true;
    const principal = this.#authenticated(id);
    if (!principal) return false;
    try {
      this.#auth.require(principal, alternatives, target);
      return true;
    } catch (error) {
      const api = toApiError(error);
      this.#error(id, api.code, api.message);
      return false;
    }
  }

  #handle(message: Inbound): void {
    switch (message.type) {
      case "ping":
        return this.#send({ type: "pong", ...(message.id ? { id: message.id } : {}) });
      case "auth":
        return void this.#authenticate(message.id, message.token);
      case "publish": {
        const permission = busPublish(message.bus, message.topic);
        if (!this.#may(message.id, [permission], permission)) return;
        if (!this.#outlet) return this.#error(message.id, "NOT_FOUND", "Publishing is off");
        try {
          const bytes = this.#outlet.publish(message);
          return this.#send({ type: "published", id: message.id, bus: message.bus, bytes });
        } catch (error) {
          const api = toApiError(error);
          return this.#error(message.id, api.code, api.message);
        }
      }
      case "subscribe": {
        const permission = busSubscribe(message.bus, message.prefix);
        if (!this.#may(message.id, [permission], permission)) return;
        const head = `{"type":"message","id":${JSON.stringify(message.id)},`;
        const batchMs = message.batch_ms;
        return this.#subscribe(
          message.id,
          message.bus,
          message.prefix,
          batchMs === undefined
            ? (delivery) => this.#sendText(delivery.framed(head))
            : (delivery) => this.#enqueue(delivery.framed(head)),
          {
            from: message.from,
            onGap: (gap) => this.#send({ type: "gap", id: message.id, ...gap }),
          },
          // Known before a replay (options.from) can deliver anything.
          batchMs === undefined ? undefined : () => this.#batchMs.set(message.id, batchMs),
        );
      }
      case "watch":
        if (
          !this.#may(
            message.id,
            statePermissions("state-get", message.scope)!,
            `watch ${message.scope}`,
          )
        ) return;
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
        this.#batchMs.delete(message.id);
        return this.#send({ type: "unsubscribed", id: message.id });
      }
      case "request": {
        let principal: Principal | undefined;
        if (this.#auth.required) {
          principal = this.#authenticated(message.id);
          if (!principal) return;
        }
        let body: string[];
        let keyed: boolean;
        try {
          const request = keyedBody(message.service, message.body, message.idempotency_key);
          keyed = request.key !== undefined;
          body = principal
            ? this.#auth.call(principal, message.service, request.body)
            : request.body;
        } catch (error) {
          const api = toApiError(error);
          return this.#error(message.id, api.code, api.message);
        }
        return void this.#request(message.id, message.service, body, message.timeout_ms, keyed);
      }
    }
  }

  #subscribe(
    id: string,
    bus: string,
    prefix: string,
    listener: Listener,
    options: ListenOptions = {},
    accepted?: () => void,
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
    accepted?.();
    this.#subscriptions.set(id, this.#hub.listen(bus, prefix, listener, options));
  }

  /** Sends a request; `keyed`: a state write with an idempotency key (gateway/idempotency.ts). */
  async #request(
    id: string,
    service: string,
    body: Body,
    timeoutMs: number | undefined,
    keyed: boolean,
  ): Promise<void> {
    if (this.#requests.has(id)) {
      return this.#error(id, "BAD_REQUEST", `Request id '${id}' is in use`);
    }
    const most = this.#limits.maxPendingRequests ?? 1024;
    if (this.#requests.size >= most) {
      return this.#error(
        id,
        "TOO_MANY_REQUESTS",
        `At most ${most} requests pending per connection`,
      );
    }
    if (this.#client.connected === false) {
      // As REST does (directory.ts): nothing would be sent, so say so now.
      return this.#error(id, "SERVICE_UNAVAILABLE", "The connection to the broker is down");
    }
    const abort = new AbortController();
    this.#requests.set(id, abort);
    try {
      // As REST does: a service no worker serves is SERVICE_UNAVAILABLE now, not a TIMEOUT later.
      await this.#services?.require(service);
      for await (
        const reply of this.#client.stream(service, body, { timeoutMs, signal: abort.signal })
      ) {
        // A replay comes as its first reply, flagged; a reused key as an error.
        const { frames, replayed } = keyed && reply.final
          ? keyedReply(reply.body)
          : { frames: reply.body, replayed: false };
        this.#send({
          type: reply.final ? "final" : "partial",
          id,
          service,
          frames: frames.map(frameToJson),
          ...(replayed ? { replayed: true } : {}),
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
    clearTimeout(this.#authTimer);
    this.#auth.release();
    for (const stop of this.#subscriptions.values()) stop();
    this.#subscriptions.clear();
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    this.#batch = [];
    this.#batchMs.clear();
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
