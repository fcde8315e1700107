/**
 * The Majordomo broker's state machine: services, idle workers (oldest idle
 * first), request queues, heartbeats, expiry and the broker's own services
 * (`mmi.*`, `org.plantd.Broker`). It performs no I/O: messages come in through
 * {@link Broker.handle}, go out through the injected `send`, and time comes
 * from the injected clock, so every rule is testable without sockets or timers.
 *
 * @module
 */
import {
  decodePeerMessage,
  type Dialect,
  EMPTY,
  encodeClientReply,
  encodeWorkerControl,
  encodeWorkerRequest,
  equalBytes,
  frame,
  type Malformed,
  type PeerMessage,
  text,
} from "../mdp/protocol.ts";
import type { Frames } from "../transport/frames.ts";
import { brokerErrorBody, type BrokerErrorCode } from "./errors.ts";
import { Fifo } from "./fifo.ts";
import { CopyArena } from "../transport/copy_arena.ts";
import { patternCovers } from "../mdp/service_pattern.ts";
import { BROKER_EXTENSIONS } from "../mdp/negotiation.ts";
import type { RefusalReason, ServicePolicy } from "./service_policy.ts";
import type { DurableHost, DurableRequests, DurableState } from "./durable.ts";
import { durableOperation } from "./durable_ops.ts";
import { DURABLE_WRITE_OPERATIONS, isDurableOperation } from "../mdp/broker_operations.ts";

/** Options of the broker. */
export interface BrokerOptions {
  /** Interval between heartbeats to idle workers. @default 2500 */
  heartbeatIntervalMs?: number;
  /** Heartbeats a worker may miss before it is purged. @default 3 */
  heartbeatLiveness?: number;
  /** How long a request may wait in a queue for a worker. @default 30000 */
  requestTimeoutMs?: number;
  /** Requests queued per service before new ones are refused. @default 100000 */
  maxQueuePerService?: number;
  /** Largest message, all frames together, in bytes; larger ones are dropped. @default 16 MiB */
  maxMessageBytes?: number;
  /** Re-queue (once) a request whose worker died, instead of failing it. @default false */
  requeueLost?: boolean;
  /**
   * Services (names or `a.b.*` patterns, as in service_policy.ts) whose
   * requests are re-queued once when their worker is lost, as `requeueLost`
   * does for all. Only for idempotent services: the lost worker may have
   * acted before it died. @default none
   */
  requeueLostServices?: readonly string[];
  /** Version reported by `mmi.broker`. @default "0.1.0" */
  version?: string;
  /**
   * Who may serve what, by the peer key of each READY (see service_policy.ts).
   * Absent: any peer may serve any name but the reserved ones (plaintext).
   */
  servicePolicy?: ServicePolicy;
  /**
   * Asked for each client request before anything else is done with it (the
   * Binary Star vote of a broker pair, broker/pair.ts): false refuses it
   * with BROKER_PASSIVE, neither queued nor given to a worker, so the client
   * may take it to the other broker. @default every request is served
   */
  admitClient?: () => boolean;
  /**
   * With CURVE: the client keys that may change the dead-letter queue
   * (dlq-replay, dlq-delete, dlq-purge); others get FORBIDDEN. Absent:
   * every peer may (plaintext, loopback only).
   */
  adminKeys?: ReadonlySet<string>;
  /**
   * Durable services and their journal (durable.ts): their requests are
   * journaled before they are routed. Absent: none is durable.
   */
  durable?: DurableRequests;
  /**
   * Durable services while no journal is attached (a broker of a pair opens
   * its journal once active: {@link Broker.attachDurable}): their requests
   * are refused with JOURNAL_UNAVAILABLE until it is. @default none
   */
  durableServices?: readonly string[];
}

/** What the broker reports about itself; the telemetry layer turns these into metrics. */
export interface BrokerObserver {
  request?(service: string): void;
  reply?(service: string, seconds: number): void;
  error?(service: string, code: BrokerErrorCode): void;
  /**
   * A message dropped (or a request refused unanswered), by `reason`, a fixed
   * phrase. `from` names the peer whose message it was, when one did wrong.
   */
  drop?(reason: string, from?: DroppedFrom): void;
  workerJoined?(service: string, dialect: Dialect): void;
  workerLeft?(service: string, reason: string): void;
  /** A READY refused (DISCONNECT sent), or a worker removed when the policy no longer allows it. */
  workerRefused?(service: string, reason: RefusalReason, peerKey: string | undefined): void;
  /** A dead-letter change refused: the caller's key is not an admin key. */
  adminRefused?(operation: string, peerKey: string | undefined): void;
}

/** The peer behind a dropped message, and what was wrong, for the log. */
export interface DroppedFrom {
  /** Its routing id. */
  id: Uint8Array;
  /** Where it connected from, when the socket knows (added by the server). */
  address?: string;
  /** What exactly was wrong, beyond the reason. */
  detail?: string;
  /** What the peer was sent instead of silence, if anything. */
  answered?: "DISCONNECT" | "error reply";
}

const PASSIVE_MESSAGE =
  "This broker is the passive one of a pair and routes no requests: send it to the active broker";

/** Service name the broker answers itself with real data. */
export const BROKER_SERVICE = "org.plantd.Broker";

/** A request in the broker (exported for durable.ts). */
export interface Request {
  /** Its caller; empty while a durable request has none (restored, or its caller gone). */
  client: Uint8Array;
  dialect: Dialect;
  stack: Frames;
  service: string;
  body: Frames;
  /** The single frame workers see as the client address. */
  address: Uint8Array;
  received: number;
  deadline: number;
  /**
   * When the caller stops waiting (its deadline frame), else Infinity. Past
   * it the request is dropped unanswered, never sent to a worker: the caller
   * was already told it failed, and a late execution would be a phantom.
   */
  callerDeadline: number;
  attempts: number;
  /** Set on requests of durable services. */
  durable?: DurableState;
  /** The caller's authenticated CURVE key, if it has one (who may change the dead letters). */
  peerKey?: string;
}

interface Worker {
  key: string;
  identity: Uint8Array;
  /** The CURVE key it registered with: later messages from its identity must carry the same. */
  peerKey: string | undefined;
  dialect: Dialect;
  service: Service;
  expiry: number;
  /** Requests the worker may hold at once: 1 in MDP, more when READY announced a capacity. */
  capacity: number;
  /** Requests sent and not yet answered with FINAL, by address. */
  inFlight: Map<string, Request>;
  /** An RFC 18 worker that framed its READY with a leading empty frame gets one too. */
  emptyFirst: boolean;
}

interface Service {
  name: string;
  requests: Fifo<Request>;
  /** Workers with spare capacity, the one that waited longest first. */
  idle: Set<Worker>;
  workers: Set<Worker>;
  /** Requests a lost worker held are re-queued once rather than failed. */
  requeueLost: boolean;
  /** Requests are journaled (durable.ts) rather than queued at once. */
  durable: boolean;
}

/** A snapshot of one service, as `org.plantd.Broker` and the gateway report it. */
export interface ServiceInfo {
  name: string;
  workers: number;
  idle: number;
  busy: number;
  queued: number;
}

/** Longest frame {@link addressKey} turns into a string in one call. */
const KEY_CHUNK = 4096;

/** Key of an identity or address frame (latin-1: one char per byte, cheap and exact). */
function addressKey(address: Uint8Array): string {
  if (address.length <= KEY_CHUNK) {
    return String.fromCharCode.apply(null, address as unknown as number[]);
  }
  let key = "";
  for (let i = 0; i < address.length; i += KEY_CHUNK) {
    const part = address.subarray(i, i + KEY_CHUNK);
    key += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return key;
}

const keyOf = addressKey;

function addressOf(client: Uint8Array, stack: Frames): Uint8Array {
  if (stack.length === 0) return client;
  // Length-prefixed parts: opaque to workers, unique per client and request id.
  let size = 1 + client.length;
  for (const p of stack) size += 1 + p.length;
  const out = new Uint8Array(size);
  out[0] = Math.min(client.length, 255);
  out.set(client, 1);
  let at = 1 + client.length;
  for (const p of stack) {
    out[at++] = Math.min(p.length, 255);
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The broker. Feed it messages; it answers through `send`. */
export class Broker {
  readonly #send: (identity: Uint8Array, frames: Frames) => void;
  readonly #now: () => number;
  readonly #observer: BrokerObserver;
  readonly #heartbeatMs: number;
  readonly #expiryMs: number;
  readonly #requestTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #maxBytes: number;
  readonly #requeueLost: boolean;
  readonly #requeueLostServices: readonly string[];
  readonly #version: string;
  readonly #started: number;
  readonly #admitClient: (() => boolean) | undefined;
  #policy: ServicePolicy | undefined;
  #durable: DurableRequests | undefined;
  readonly #durableServices: readonly string[];
  readonly #durableHost: DurableHost;
  #journalRefusal = "the broker's journal is not open";
  readonly #arena = new CopyArena();
  readonly #adminKeys: ReadonlySet<string> | undefined;
  #services = new Map<string, Service>();
  #workers = new Map<string, Worker>();
  #nextHeartbeat: number;

  constructor(
    send: (identity: Uint8Array, frames: Frames) => void,
    options: BrokerOptions = {},
    observer: BrokerObserver = {},
    now: () => number = Date.now,
  ) {
    this.#send = send;
    this.#now = now;
    this.#observer = observer;
    this.#heartbeatMs = options.heartbeatIntervalMs ?? 2500;
    this.#expiryMs = this.#heartbeatMs * (options.heartbeatLiveness ?? 3);
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#maxQueue = options.maxQueuePerService ?? 100_000;
    this.#maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    this.#requeueLost = options.requeueLost ?? false;
    this.#requeueLostServices = options.requeueLostServices ?? [];
    this.#version = options.version ?? "0.1.0";
    this.#policy = options.servicePolicy;
    this.#adminKeys = options.adminKeys;
    this.#admitClient = options.admitClient;
    this.#started = now();
    this.#nextHeartbeat = this.#started + this.#heartbeatMs;
    this.#durableServices = options.durableServices ?? [];
    // A durable request whose caller is gone (or not back after a restart) has nobody to tell.
    this.#durableHost = {
      enqueue: (request, front) => this.#enqueue(request, front),
      send: (request, final, body) => {
        if (request.client.length > 0) this.#reply(request, final, body);
      },
      fail: (request, code, message) => {
        if (request.client.length > 0) this.#fail(request, code, message);
      },
    };
    if (options.durable) this.attachDurable(options.durable);
  }

  /** Attaches a journal (a broker of a pair that became active): what it holds is routed. */
  attachDurable(durable: DurableRequests): void {
    this.#durable = durable;
    durable.bind(this.#durableHost);
  }

  /**
   * Detaches the journal (going passive, or not open yet): durable requests
   * are refused with JOURNAL_UNAVAILABLE and `reason` until one is attached.
   * What it queued leaves the queues and stays journaled, for the broker
   * that opens it next.
   */
  detachDurable(reason: string): DurableRequests | undefined {
    const durable = this.#durable;
    this.#durable = undefined;
    this.#journalRefusal = reason;
    durable?.stop();
    // Nobody is told: they stay journaled, and their callers ask the broker that opens it next.
    for (const service of this.#services.values()) {
      if (service.durable) service.requests.removeWhere(() => true);
    }
    return durable;
  }

  #refuseDurable(request: Request): void {
    this.#fail(
      request,
      "JOURNAL_UNAVAILABLE",
      `Durable request to '${request.service}' refused: ${this.#journalRefusal}`,
    );
  }

  /**
   * Handles one message from the ROUTER socket: identity frame first.
   * `peerKey` is the sender's authenticated CURVE key, if it has one.
   */
  handle(message: Frames, peerKey?: string): void {
    const identity = message[0];
    if (!identity) return this.#drop("empty message");
    if (message.length < 2) return this.#drop("empty message", { id: identity });
    let size = 0;
    for (const f of message) size += f.length;
    if (size > this.#maxBytes) {
      return this.#drop("message too large", { id: identity, detail: `${size} bytes` });
    }
    const decoded = decodePeerMessage(message, 1);
    if (decoded.kind === "malformed") return this.#onMalformed(identity, decoded);
    if (decoded.kind === "request") {
      // Kept (queued, held by a worker, journaled): copied, since the frames may be views
      // the socket reuses after this call (router_listener.ts `borrowFrames`).
      return this.#onRequest(identity, {
        ...decoded,
        stack: this.#keep(decoded.stack),
        body: this.#keep(decoded.body),
      }, peerKey);
    }
    this.#onWorker(identity, decoded, peerKey);
  }

  /** Copies of `frames` that outlive the message they came in (cut from shared arenas). */
  #keep(frames: Frames): Frames {
    const kept: Frames = new Array(frames.length);
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      kept[i] = this.#arena.copy(frame, 0, frame.length);
    }
    return kept;
  }

  /**
   * Replaces the service policy (a reload): workers it no longer allows get
   * DISCONNECT and are removed, so nothing more is routed to them.
   */
  setServicePolicy(policy: ServicePolicy | undefined): void {
    this.#policy = policy;
    if (!policy) return;
    for (const worker of [...this.#workers.values()]) {
      if (policy.allows(worker.peerKey, worker.service.name)) continue;
      this.#observer.workerRefused?.(worker.service.name, "revoked", worker.peerKey);
      this.#removeWorker(worker, true, "service policy revoked");
    }
  }

  /**
   * The connection of peer `identity` ended (the ROUTER said so): its worker
   * is removed at once, the requests it held answered `WORKER_LOST` or
   * re-queued per service policy, and the requests it queued as a client are
   * dropped (nobody is left to answer). Expiry catches what this cannot see.
   */
  peerGone(identity: Uint8Array): void {
    const worker = this.#workers.get(keyOf(identity));
    if (worker) this.#removeWorker(worker, false, "connection closed");
    this.#durable?.clientGone(identity);
    for (const service of this.#services.values()) {
      // Durable requests stay: their caller may ask again.
      if (service.requests.length === 0 || service.durable) continue;
      const dropped = service.requests.removeWhere((r) => equalBytes(r.client, identity));
      for (let i = 0; i < dropped.length; i++) this.#drop("client gone");
    }
  }

  /** Runs heartbeats, worker purge and request expiry; call it often (every ~100-500 ms). */
  tick(): void {
    const now = this.#now();
    for (const worker of [...this.#workers.values()]) {
      if (worker.expiry <= now) this.#removeWorker(worker, false, "expired");
    }
    this.#durable?.tick(now);
    for (const service of this.#services.values()) {
      if (service.requests.length === 0) continue;
      if (service.durable) {
        const expired = (r: Request) => r.deadline <= now || r.callerDeadline <= now;
        for (const request of service.requests.removeWhere(expired)) {
          this.#durable?.expired(request, now);
        }
        continue;
      }
      for (const _ of service.requests.removeWhere((r) => r.callerDeadline <= now)) {
        this.#drop("caller deadline passed");
      }
      for (const request of service.requests.removeWhere((r) => r.deadline <= now)) {
        this.#fail(
          request,
          "SERVICE_UNAVAILABLE",
          `No worker for service '${request.service}' answered within ${this.#requestTimeoutMs} ms`,
        );
      }
    }
    // Forget services nobody serves or waits for: client-chosen names must not pile up.
    for (const [name, service] of this.#services) {
      if (service.workers.size === 0 && service.requests.length === 0) this.#services.delete(name);
    }
    if (now >= this.#nextHeartbeat) {
      this.#nextHeartbeat = now + this.#heartbeatMs;
      for (const service of this.#services.values()) {
        for (const worker of service.workers) {
          if (worker.inFlight.size > 0) continue; // busy workers heartbeat us
          this.#toWorker(worker, encodeWorkerControl(worker.dialect, "HEARTBEAT"));
        }
      }
    }
  }

  /** Tells every worker to go away and fails every queued request: for shutdown. */
  shutdown(): void {
    // Journaled requests stay journaled, for the next run: nobody is told they failed.
    this.#durable?.stop();
    for (const worker of [...this.#workers.values()]) {
      this.#removeWorker(worker, true, "broker shutdown");
    }
    for (const service of this.#services.values()) {
      if (service.durable) continue;
      for (const request of service.requests.removeWhere(() => true)) {
        this.#fail(request, "SHUTTING_DOWN", "The broker is shutting down");
      }
    }
  }

  /**
   * Refuses every queued request with BROKER_PASSIVE (a broker of a pair
   * going passive routes nothing more): none was given to a worker, so its
   * client may send it to the other broker. Requests workers hold are kept:
   * their replies still come back through this broker.
   */
  refuseQueued(): void {
    for (const service of this.#services.values()) {
      for (const request of service.requests.removeWhere(() => true)) {
        this.#fail(request, "BROKER_PASSIVE", PASSIVE_MESSAGE);
      }
    }
  }

  /** A snapshot of every service with at least one worker or queued request. */
  services(): ServiceInfo[] {
    return [...this.#services.values()]
      .filter((s) => s.workers.size > 0 || s.requests.length > 0)
      .map((s) => this.#info(s))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get workerCount(): number {
    return this.#workers.size;
  }

  #info(s: Service): ServiceInfo {
    return {
      name: s.name,
      workers: s.workers.size,
      idle: [...s.workers].filter((w) => w.inFlight.size === 0).length,
      busy: [...s.workers].filter((w) => w.inFlight.size > 0).length,
      queued: s.requests.length,
    };
  }

  #drop(reason: string, from?: DroppedFrom): void {
    this.#observer.drop?.(reason, from);
  }

  /**
   * A message the broker cannot act on: a client that can be answered gets an
   * error reply in its dialect, a worker-shaped peer DISCONNECT (and loses
   * its registration), anything else is dropped. Counted and reported either way.
   */
  #onMalformed(identity: Uint8Array, m: Malformed): void {
    const from: DroppedFrom = { id: identity, ...(m.detail ? { detail: m.detail } : {}) };
    if (m.client) {
      const now = this.#now();
      const service = text(m.client.service);
      this.#fail(
        {
          client: identity,
          dialect: m.client.dialect,
          stack: m.client.stack,
          service,
          body: [],
          address: identity,
          received: now,
          deadline: now,
          callerDeadline: Infinity,
          attempts: 0,
        },
        "BAD_REQUEST",
        `The broker cannot read this request: ${m.detail ?? m.reason}`,
      );
      return this.#drop(m.reason, { ...from, answered: "error reply" });
    }
    if (m.worker) {
      const worker = this.#workers.get(keyOf(identity));
      if (worker) this.#removeWorker(worker, false, m.reason);
      this.#send(identity, encodeWorkerControl(m.worker, "DISCONNECT"));
      return this.#drop(m.reason, { ...from, answered: "DISCONNECT" });
    }
    this.#drop(m.reason, from);
  }

  #service(name: string): Service {
    let service = this.#services.get(name);
    if (!service) {
      service = {
        name,
        requests: new Fifo(),
        idle: new Set(),
        workers: new Set(),
        requeueLost: this.#requeueLost ||
          this.#requeueLostServices.some((pattern) => patternCovers(pattern, name)),
        durable: this.#durable?.covers(name) ??
          this.#durableServices.some((pattern) => patternCovers(pattern, name)),
      };
      this.#services.set(name, service);
    }
    return service;
  }

  #onRequest(
    client: Uint8Array,
    m: Extract<PeerMessage, { kind: "request" }>,
    peerKey?: string,
  ): void {
    const now = this.#now();
    const request: Request = {
      client,
      dialect: m.dialect,
      stack: m.stack,
      service: m.service,
      body: m.body,
      address: addressOf(client, m.stack),
      received: now,
      deadline: now + this.#requestTimeoutMs,
      callerDeadline: m.budgetMs === undefined ? Infinity : now + m.budgetMs,
      attempts: 0,
    };
    this.#observer.request?.(m.service);
    // Every request is a vote of the pair (it may make a passive broker take over)...
    const admitted = this.#admitClient ? this.#admitClient() : true;
    // ...but mmi.* is answered by the broker itself and routes nothing: a passive broker
    // answers it too, so a client's first question (mmi.broker, negotiation.ts) gets a
    // real answer there and its requests then move on BROKER_PASSIVE.
    if (m.service.startsWith("mmi.")) return this.#mmi(request);
    if (!admitted) return this.#fail(request, "BROKER_PASSIVE", PASSIVE_MESSAGE);
    if (m.body.length === 0) {
      return this.#fail(request, "EMPTY_REQUEST", "A request needs at least one body frame");
    }
    if (m.service === BROKER_SERVICE) return this.#brokerService(request, peerKey);
    const service = this.#service(m.service);
    if (service.requests.length >= this.#maxQueue) {
      return this.#fail(request, "QUEUE_FULL", `The queue of service '${m.service}' is full`);
    }
    if (service.durable) {
      return this.#durable ? this.#durable.admit(request) : this.#refuseDurable(request);
    }
    service.requests.push(request);
    this.#dispatch(service);
  }

  /** A journaled durable request joins its queue (durable.ts). */
  #enqueue(request: Request, front: boolean): void {
    const service = this.#service(request.service);
    if (front) service.requests.unshift(request);
    else service.requests.push(request);
    this.#dispatch(service);
  }

  #onWorker(
    identity: Uint8Array,
    m: Exclude<PeerMessage, { kind: "request" }>,
    peerKey: string | undefined,
  ): void {
    const key = keyOf(identity);
    const worker = this.#workers.get(key);
    if (worker && worker.peerKey !== peerKey) {
      // Another peer took over a registered worker's routing id (a client may
      // choose its own): it must not receive that worker's requests.
      this.#observer.workerRefused?.(worker.service.name, "key_changed", peerKey);
      this.#removeWorker(worker, false, "peer key changed");
      this.#send(identity, encodeWorkerControl(m.dialect, "DISCONNECT"));
      return this.#drop("worker message from another peer key", {
        id: identity,
        answered: "DISCONNECT",
      });
    }
    if (worker && m.dialect !== worker.dialect && m.kind !== "ready") {
      // It registered in one dialect and speaks another: what the broker sends
      // it (in the READY's dialect) is not what it reads. Refused, not served.
      this.#removeWorker(worker, false, "dialect changed");
      this.#send(identity, encodeWorkerControl(m.dialect, "DISCONNECT"));
      return this.#drop("worker changed dialect", {
        id: identity,
        detail: `READY in ${worker.dialect}, then ${m.kind.toUpperCase()} in ${m.dialect}`,
        answered: "DISCONNECT",
      });
    }
    switch (m.kind) {
      case "ready": {
        if (worker) {
          this.#removeWorker(worker, false, "second READY");
          this.#send(identity, encodeWorkerControl(m.dialect, "DISCONNECT"));
          return this.#drop("invalid READY", {
            id: identity,
            detail: "READY from a registered worker",
            answered: "DISCONNECT",
          });
        }
        const refusal: RefusalReason | undefined =
          m.service.startsWith("mmi.") || m.service === BROKER_SERVICE
            ? "reserved"
            : this.#policy && !this.#policy.allows(peerKey, m.service)
            ? "not_granted"
            : undefined;
        if (refusal) {
          this.#observer.workerRefused?.(m.service, refusal, peerKey);
          this.#send(identity, encodeWorkerControl(m.dialect, "DISCONNECT"));
          // Logged by workerRefused (the audit trail): counted here only.
          return this.#drop("invalid READY");
        }
        const service = this.#service(m.service);
        const created: Worker = {
          key,
          identity,
          peerKey,
          dialect: m.dialect,
          service,
          expiry: this.#now() + this.#expiryMs,
          capacity: m.capacity ?? 1,
          inFlight: new Map(),
          emptyFirst: m.emptyFirst === true,
        };
        this.#workers.set(key, created);
        service.workers.add(created);
        service.idle.add(created);
        this.#observer.workerJoined?.(service.name, m.dialect);
        return this.#dispatch(service);
      }
      case "disconnect":
        if (worker) this.#removeWorker(worker, false, "disconnect");
        return;
      case "heartbeat":
      case "reply": {
        if (!worker) {
          this.#send(identity, encodeWorkerControl(m.dialect, "DISCONNECT"));
          return this.#drop("message from unknown worker", {
            id: identity,
            detail: `${m.kind.toUpperCase()} before READY`,
            answered: "DISCONNECT",
          });
        }
        worker.expiry = this.#now() + this.#expiryMs;
        if (m.kind === "reply") this.#onReply(worker, m);
      }
    }
  }

  #onReply(worker: Worker, m: Extract<PeerMessage, { kind: "reply" }>): void {
    const key = addressKey(m.client);
    const request = worker.inFlight.get(key);
    if (!request) {
      return this.#drop("reply for no pending request", {
        id: worker.identity,
        detail: "a reply for a client address the worker holds no request of",
      });
    }
    // A durable reply is kept (stored for a caller that asks again): copied, like requests.
    // Detached meanwhile: the reply still goes to its caller; the journal keeps the request.
    if (request.durable && this.#durable) {
      this.#durable.reply(request, m.final, this.#keep(m.body));
    } else if (request.client.length > 0) this.#reply(request, m.final, m.body);
    if (!m.final) return;
    worker.inFlight.delete(key);
    this.#observer.reply?.(request.service, (this.#now() - request.received) / 1000);
    worker.service.idle.add(worker);
    this.#dispatch(worker.service);
  }

  #reply(request: Request, final: boolean, body: Frames): void {
    // RFC 7 clients have no partial replies: they get the final one only.
    if (!final && request.dialect === "mdp01") return;
    this.#send(
      request.client,
      encodeClientReply(request.dialect, request.stack, final, request.service, body),
    );
  }

  #fail(request: Request, code: BrokerErrorCode, message: string): void {
    this.#observer.error?.(request.service, code);
    this.#reply(request, true, [brokerErrorBody(code, request.service, message)]);
  }

  /** The idle worker that waited longest and was heard from recently, if any. */
  #freshIdle(service: Service): Worker | undefined {
    // A worker silent for two heartbeats may be dead (killed, cut off): new
    // requests wait for a live one rather than die with it at expiry.
    const heardSince = this.#now() + this.#expiryMs - 2 * this.#heartbeatMs;
    for (const worker of service.idle) if (worker.expiry >= heardSince) return worker;
    return undefined;
  }

  #dispatch(service: Service): void {
    const now = this.#now();
    while (service.idle.size > 0 && service.requests.length > 0) {
      const worker = this.#freshIdle(service);
      if (!worker) return;
      const request = service.requests.shift()!;
      // tick() drops expired ones too, but only every ~100 ms: check here as well.
      if (request.callerDeadline <= now) {
        if (request.durable) this.#durable?.expired(request, now);
        else this.#drop("caller deadline passed");
        continue;
      }
      // Re-queued at the back while it has room: workers with capacity share the load.
      service.idle.delete(worker);
      request.attempts++;
      const key = addressKey(request.address);
      if (worker.inFlight.has(key)) {
        // The same client address twice at one worker cannot be told apart: wait.
        service.requests.unshift(request);
        request.attempts--;
        continue;
      }
      worker.inFlight.set(key, request);
      if (worker.inFlight.size < worker.capacity) service.idle.add(worker);
      this.#toWorker(worker, encodeWorkerRequest(worker.dialect, request.address, request.body));
    }
  }

  #toWorker(worker: Worker, frames: Frames): void {
    this.#send(worker.identity, worker.emptyFirst ? [EMPTY, ...frames] : frames);
  }

  #removeWorker(worker: Worker, disconnect: boolean, reason: string): void {
    if (disconnect) this.#toWorker(worker, encodeWorkerControl(worker.dialect, "DISCONNECT"));
    this.#workers.delete(worker.key);
    const service = worker.service;
    service.workers.delete(worker);
    service.idle.delete(worker);
    this.#observer.workerLeft?.(service.name, reason);
    const lost = [...worker.inFlight.values()];
    worker.inFlight.clear();
    let requeued = false;
    for (const request of lost.reverse()) {
      if (request.durable) {
        if (this.#durable?.lost(request, reason)) {
          service.requests.unshift(request);
          requeued = true;
        }
        continue;
      }
      if (service.requeueLost && request.attempts < 2 && reason !== "broker shutdown") {
        service.requests.unshift(request);
        requeued = true;
      } else {
        this.#fail(
          request,
          "WORKER_LOST",
          `The worker handling the request for '${service.name}' was lost (${reason})`,
        );
      }
    }
    if (requeued) this.#dispatch(service);
  }

  #mmi(request: Request): void {
    const body = request.body;
    const last = body.length > 0 ? text(body[body.length - 1]!) : "";
    const answer = (value: string): void => {
      const reply = body.length > 0 ? [...body.slice(0, -1), frame(value)] : [frame(value)];
      this.#reply(request, true, reply);
    };
    switch (request.service) {
      case "mmi.service": {
        const name = last;
        const known = name === BROKER_SERVICE || (this.#services.get(name)?.workers.size ?? 0) > 0;
        return answer(known ? "200" : "404");
      }
      case "mmi.workers":
        return answer(String(this.#services.get(last)?.workers.size ?? 0));
      case "mmi.heartbeat":
        return this.#reply(request, true, body.length > 0 ? body : [frame("200")]);
      case "mmi.broker":
        return answer(JSON.stringify({
          version: this.#version,
          uptime_s: Math.round((this.#now() - this.#started) / 1000),
          services: this.services().length,
          workers: this.#workers.size,
          // What a client may send beyond plain MDP (mdp/negotiation.ts asks for it).
          extensions: BROKER_EXTENSIONS,
        }));
      default:
        return answer("501");
    }
  }

  #brokerService(request: Request, peerKey: string | undefined): void {
    const operation = text(request.body[0]!);
    if (
      this.#adminKeys && DURABLE_WRITE_OPERATIONS.has(operation) &&
      (peerKey === undefined || !this.#adminKeys.has(peerKey))
    ) {
      // Replaying or deleting dead letters changes what the plant is told: not for any key
      // the endpoint lets in (docs/durability.md, "Who may change the dead letters").
      this.#observer.adminRefused?.(operation, peerKey);
      const reply = {
        success: false,
        error: `Operation '${operation}' needs a key in the broker's admin_keys`,
        code: "FORBIDDEN",
      };
      return this.#reply(request, true, [frame(JSON.stringify(reply))]);
    }
    if (isDurableOperation(operation)) {
      const answer = (reply: unknown) => this.#reply(request, true, [frame(JSON.stringify(reply))]);
      durableOperation(this.#durable, operation, request.body[1]).then(answer);
      return;
    }
    let reply: unknown;
    if (operation === "services") {
      const services = this.services();
      reply = { success: true, data: { count: services.length, services } };
    } else if (operation === "service") {
      let name: unknown;
      try {
        name = JSON.parse(text(request.body[1] ?? frame("{}"))).service;
      } catch {
        name = undefined;
      }
      const service = typeof name === "string" ? this.#services.get(name) : undefined;
      reply = typeof name !== "string"
        ? { success: false, error: "Operation failed: service parameter missing" }
        : service
        ? { success: true, data: this.#info(service) }
        : { success: false, error: `Service '${name}' does not exist` };
    } else {
      reply = { success: false, error: "Invalid operation" };
    }
    this.#reply(request, true, [frame(JSON.stringify(reply))]);
  }
}
