/**
 * Durable requests: the broker's side of the journal (journal.ts). The
 * broker hands every request for a durable service here instead of queueing
 * it; it is queued only once its admission committed, so nothing is routed
 * that was not stored, and a journal that cannot be written refuses the
 * request with an error naming the cause.
 *
 * What happens to a journaled request:
 * - answered: the request row becomes a reply row, kept `replyTtlMs` under
 *   the request's key, and the reply is forwarded at once (not after the
 *   commit: a crash in between re-runs the request, which at-least-once allows);
 * - its worker lost: re-queued at the front, until the `maxAttempts`th loss,
 *   which makes it a dead letter (reason `worker_lost`);
 * - not answered in time (the durable timeout, or its caller's deadline
 *   while it waits in the queue): a dead letter (`expired`). One in a
 *   worker's hands is never expired: the worker's reply or loss decides;
 * - the broker restarts: every journaled request is routed again, except one
 *   whose caller cannot receive the reply and said when it would give up
 *   (an anonymous request with a deadline: the caller would be told it
 *   failed while it ran), which becomes a dead letter (`caller_lost`).
 *
 * A client that names its request with a key (mdp/durable_key.ts) and asks
 * again with it after a reconnection is attached to the pending request, or
 * handed the stored reply, or told it is a dead letter; the worker does not
 * run it again for that.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import { keyBytes, keyHex, newDurableKey, readDurableKey } from "../mdp/durable_key.ts";
import { EMPTY, equalBytes, frame, text } from "../mdp/protocol.ts";
import { patternCovers } from "../mdp/service_pattern.ts";
import { type StorageFailure, storageFailure } from "../storage/failure.ts";
import type { Request } from "./broker.ts";
import type { BrokerErrorCode } from "./errors.ts";
import {
  type DeadLetter,
  type DeadReason,
  type Failure,
  GroupCommit,
  type JournalRequest,
  type JournalStore,
  type StoredReply,
} from "./journal.ts";

/** What the broker gives the durable requests to act with. */
export interface DurableHost {
  /** Queues a journaled request (at the front when it goes again) and dispatches. */
  enqueue(request: Request, front: boolean): void;
  /** Sends a reply to the request's caller (attached: its client frame is not empty). */
  send(request: Request, final: boolean, body: Frames): void;
  /** Answers the request's caller with a broker error. */
  fail(request: Request, code: BrokerErrorCode, message: string): void;
}

/** The durable part of a broker request. */
export interface DurableState {
  /** The journal key in hex. */
  key: string;
  /** Asked with a key by a client that asks again (our client library). */
  keyed: boolean;
  failures: Failure[];
  replays: number;
}

/** What durable requests report, for metrics, the log and events. */
export interface DurableObserver {
  admitted?(service: string): void;
  /** A durable request refused because the journal could not store it. */
  refused?(service: string, failure: StorageFailure): void;
  /** A caller asked again with a known key (attached, or handed a stored reply). */
  reasked?(outcome: "attached" | "replied" | "dead" | "new"): void;
  deadLettered?(letter: DeadLetter): void;
  replayed?(letter: DeadLetter): void;
  /** A journal transaction committed / failed (with its error). */
  committed?(changes: number, seconds: number): void;
  commitFailed?(error: unknown, changes: number): void;
}

/** Options of {@link DurableRequests}. */
export interface DurableOptions {
  /** Durable services: names or `a.b.*` patterns (mdp/service_pattern.ts). */
  services: readonly string[];
  /** Workers lost while holding a request before it becomes a dead letter. @default 3 */
  maxAttempts?: number;
  /** How long a reply is kept for a caller that asks again. @default 600000 */
  replyTtlMs?: number;
  /** How long a durable request may wait for its answer. @default 30000 */
  timeoutMs?: number;
  /** Changes per journal transaction at most. @default 4096 */
  maxGroup?: number;
  observer?: DurableObserver;
  now?: () => number;
}

/** How often replies past their time are deleted. */
const PURGE_EVERY_MS = 60_000;
/** Most dead letters one list answers. */
const MAX_LIST = 1000;

function hexToAddress(key: string): Uint8Array {
  return keyBytes(key) ?? frame(key);
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The journal and the durable requests it holds (see the module). */
export class DurableRequests {
  readonly #store: JournalStore;
  readonly #writer: GroupCommit;
  readonly #patterns: readonly string[];
  readonly #maxAttempts: number;
  readonly #replyTtlMs: number;
  readonly #timeoutMs: number;
  readonly #observer: DurableObserver;
  readonly #now: () => number;
  /** Journaled (or being journaled) and not answered: queued or in a worker's hands. */
  readonly #pending = new Map<string, Request>();
  /** Asked again with a key the broker does not hold: waiting for the journal's answer. */
  readonly #lookups = new Map<string, Request>();
  /** Replies forwarded whose commit has not finished: a caller asking again meanwhile gets them. */
  readonly #recent = new Map<string, StoredReply>();
  /** Keys of dead letters being replayed (the replay is committing). */
  readonly #replaying = new Set<string>();
  #loaded: JournalRequest[];
  #host: DurableHost | undefined;
  #stopped = false;
  #deadCount: number;
  #nextPurge = 0;
  #failure: { failure: StorageFailure; cause: string } | undefined;

  private constructor(
    store: JournalStore,
    loaded: JournalRequest[],
    dead: number,
    options: DurableOptions,
  ) {
    this.#store = store;
    this.#loaded = loaded;
    this.#deadCount = dead;
    this.#patterns = options.services;
    this.#maxAttempts = options.maxAttempts ?? 3;
    this.#replyTtlMs = options.replyTtlMs ?? 600_000;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#observer = options.observer ?? {};
    this.#now = options.now ?? Date.now;
    this.#writer = new GroupCommit(store, {
      ...(options.maxGroup ? { maxGroup: options.maxGroup } : {}),
      onCommit: (changes, seconds) => {
        this.#failure = undefined;
        this.#observer.committed?.(changes, seconds);
      },
      onError: (error, changes) => {
        this.#failure = { failure: storageFailure(error), cause: describeError(error) };
        this.#observer.commitFailed?.(error, changes);
      },
    });
  }

  /** Reads what the journal holds; the requests are routed once a broker binds it. */
  static async open(store: JournalStore, options: DurableOptions): Promise<DurableRequests> {
    const [loaded, counts] = await Promise.all([store.pending(), store.counts()]);
    return new DurableRequests(store, loaded, counts.dead, options);
  }

  /** The storage, in words. */
  get description(): string {
    return this.#store.description;
  }

  /** Requests journaled and not answered (the journal's depth). */
  get depth(): number {
    return this.#pending.size + this.#loaded.length;
  }

  /** Dead letters in the journal. */
  get deadLetters(): number {
    return this.#deadCount;
  }

  /** The class and cause of the last failed commit, until one succeeds. */
  get failing(): { failure: StorageFailure; cause: string } | undefined {
    return this.#failure;
  }

  /** Whether `service` is durable. */
  covers(service: string): boolean {
    for (const pattern of this.#patterns) if (patternCovers(pattern, service)) return true;
    return false;
  }

  /**
   * Binds the broker and routes what the journal held: the requests of the
   * last run, as it left them (dead letters as the module says).
   */
  bind(host: DurableHost): void {
    this.#host = host;
    const now = this.#now();
    const loaded = this.#loaded;
    this.#loaded = [];
    for (const stored of loaded) {
      const request = this.#restored(stored);
      this.#pending.set(stored.key, request);
      if (stored.expiresAt <= now) {
        this.#dead(
          request,
          "expired",
          "not answered in time; it expired while the broker was down",
        );
      } else if (
        stored.keyed && stored.callerDeadline !== undefined && stored.callerDeadline <= now
      ) {
        this.#dead(request, "expired", "its caller's deadline passed while the broker was down");
      } else if (!stored.keyed && stored.callerDeadline !== undefined) {
        this.#dead(
          request,
          "caller_lost",
          "the broker restarted: its caller cannot receive the reply and would be told it failed",
        );
      } else {
        host.enqueue(request, false);
      }
    }
  }

  #restored(stored: JournalRequest): Request {
    return {
      client: EMPTY,
      dialect: "plantd",
      stack: [],
      service: stored.service,
      body: stored.body,
      address: hexToAddress(stored.key),
      received: stored.receivedAt,
      deadline: stored.expiresAt,
      callerDeadline: stored.callerDeadline ?? Infinity,
      attempts: stored.failures.length,
      durable: {
        key: stored.key,
        keyed: stored.keyed,
        failures: stored.failures,
        replays: 0,
      },
    };
  }

  /** A request for a durable service (its queue has room). */
  admit(request: Request): void {
    const keyFrame = readDurableKey(request.stack[request.stack.length - 1]);
    let key: string;
    if (keyFrame) {
      request.stack = request.stack.slice(0, -1);
      key = keyHex(keyFrame.key);
      request.address = keyFrame.key;
    } else {
      const bytes = newDurableKey();
      key = keyHex(bytes);
      request.address = bytes;
    }
    request.deadline = request.received + this.#timeoutMs;
    request.durable = { key, keyed: keyFrame !== undefined, failures: [], replays: 0 };
    if (keyFrame) {
      const held = this.#pending.get(key) ?? this.#lookups.get(key);
      if (held) return this.#attach(held, request, "attached");
      const recent = this.#recent.get(key);
      if (recent) {
        this.#observer.reasked?.("replied");
        return this.#host!.send(request, true, recent.body);
      }
      if (keyFrame.reask) return this.#lookup(request, key);
    }
    this.#journal(request);
  }

  /** A caller asking again takes over the held request's replies. */
  #attach(held: Request, asking: Request, outcome: "attached"): void {
    if (held.service !== asking.service) {
      return this.#host!.fail(
        asking,
        "BAD_REQUEST",
        `Durable key ${
          held.durable!.key
        } names a request for '${held.service}', not '${asking.service}'`,
      );
    }
    held.client = asking.client;
    held.stack = asking.stack;
    held.dialect = asking.dialect;
    held.callerDeadline = asking.callerDeadline;
    this.#observer.reasked?.(outcome);
  }

  /** Asked again with a key not held here: the journal says whether it was answered. */
  #lookup(request: Request, key: string): void {
    this.#lookups.set(key, request);
    this.#store.lookup(key).then((found) => {
      const asking = this.#lookups.get(key) ?? request;
      this.#lookups.delete(key);
      if (this.#stopped) return;
      switch (found.state) {
        case "replied":
          this.#observer.reasked?.("replied");
          return this.#host!.send(asking, true, found.reply.body);
        case "dead":
          this.#observer.reasked?.("dead");
          return this.#host!.fail(asking, "DEAD_LETTERED", this.#deadMessage(found.letter));
        default:
          // Never stored (the broker fell before the commit), or its reply expired.
          this.#observer.reasked?.("new");
          return this.#journal(asking);
      }
    }, (error) => {
      const asking = this.#lookups.get(key) ?? request;
      this.#lookups.delete(key);
      this.#refuse(asking, error);
    });
  }

  #journal(request: Request): void {
    const durable = request.durable!;
    this.#pending.set(durable.key, request);
    this.#writer.write({ op: "admit", request: this.#journalRequest(request) }).then(() => {
      if (this.#pending.get(durable.key) !== request || this.#stopped) return;
      this.#observer.admitted?.(request.service);
      this.#host!.enqueue(request, false);
    }, (error) => {
      if (this.#pending.get(durable.key) === request) this.#pending.delete(durable.key);
      this.#refuse(request, error);
    });
  }

  #refuse(request: Request, error: unknown): void {
    const failure = storageFailure(error);
    this.#observer.refused?.(request.service, failure);
    this.#host!.fail(
      request,
      "JOURNAL_UNAVAILABLE",
      `Durable request to '${request.service}' refused: the broker's journal cannot store it (${failure}: ${
        describeError(error)
      })`,
    );
  }

  #journalRequest(request: Request): JournalRequest {
    const durable = request.durable!;
    return {
      key: durable.key,
      service: request.service,
      body: request.body,
      receivedAt: request.received,
      expiresAt: request.deadline,
      ...(Number.isFinite(request.callerDeadline)
        ? { callerDeadline: request.callerDeadline }
        : {}),
      keyed: durable.keyed,
      failures: durable.failures,
    };
  }

  /** A worker's reply to a durable request. */
  reply(request: Request, final: boolean, body: Frames): void {
    if (!final) {
      if (request.client.length > 0) this.#host!.send(request, false, body);
      return;
    }
    const key = request.durable!.key;
    if (this.#pending.get(key) === request) this.#pending.delete(key);
    const now = this.#now();
    const reply: StoredReply = {
      key,
      service: request.service,
      body,
      storedAt: now,
      expiresAt: now + this.#replyTtlMs,
    };
    this.#recent.set(key, reply);
    if (request.client.length > 0) this.#host!.send(request, true, body);
    const forget = () => {
      if (this.#recent.get(key) === reply) this.#recent.delete(key);
    };
    // A failed commit is on /healthz; the request stays journaled and goes again after a restart.
    this.#writer.write({ op: "reply", reply }).then(forget, forget);
  }

  /**
   * The worker holding `request` was lost: true when it goes to the front of
   * its queue again, false when it became a dead letter (or the broker is
   * stopping: it stays journaled for the next run).
   */
  lost(request: Request, reason: string): boolean {
    if (this.#stopped) return false;
    const durable = request.durable!;
    durable.failures = [...durable.failures, { at: this.#now(), reason }];
    if (durable.failures.length >= this.#maxAttempts) {
      this.#dead(
        request,
        "worker_lost",
        `its worker was lost ${durable.failures.length} times (last: ${reason})`,
      );
      return false;
    }
    this.#writer.write({ op: "failed", key: durable.key, failures: durable.failures })
      .catch(() => {});
    return true;
  }

  /** A queued request not answered in time. */
  expired(request: Request, now: number): void {
    if (this.#stopped) return;
    this.#dead(
      request,
      "expired",
      request.callerDeadline <= now
        ? "its caller's deadline passed before a worker took it"
        : `no worker took it within ${this.#timeoutMs} ms`,
    );
  }

  #dead(request: Request, reason: DeadReason, detail: string): void {
    const durable = request.durable!;
    if (this.#pending.get(durable.key) === request) this.#pending.delete(durable.key);
    const letter: DeadLetter = {
      key: durable.key,
      service: request.service,
      body: request.body,
      reason,
      detail,
      attempts: durable.failures.length,
      receivedAt: request.received,
      deadAt: this.#now(),
      failures: durable.failures,
      replays: durable.replays,
    };
    this.#writer.write({ op: "dead", letter }).then(() => {
      this.#deadCount++;
      this.#observer.deadLettered?.(letter);
      if (request.client.length > 0) {
        this.#host!.fail(request, "DEAD_LETTERED", this.#deadMessage(letter));
      }
    }, (error) => {
      // It stays journaled as a request: routed again after the next restart.
      if (request.client.length > 0) this.#refuse(request, error);
    });
  }

  #deadMessage(letter: DeadLetter): string {
    return `Durable request ${letter.key} to '${letter.service}' is in the dead-letter queue (${letter.reason}: ${letter.detail})`;
  }

  /** A client's connection ended: its durable requests stay, with nobody to answer yet. */
  clientGone(identity: Uint8Array): void {
    for (const request of this.#pending.values()) {
      if (request.client.length > 0 && equalBytes(request.client, identity)) {
        request.client = EMPTY;
        request.stack = [];
      }
    }
  }

  /** Called from the broker's tick: replies past their time are deleted now and then. */
  tick(now: number): void {
    if (now < this.#nextPurge || this.#stopped) return;
    this.#nextPurge = now + PURGE_EVERY_MS;
    this.#writer.write({ op: "expire-replies", before: now }).catch(() => {});
  }

  /** The broker is shutting down: journaled requests stay journaled, for the next run. */
  stop(): void {
    this.#stopped = true;
  }

  /** Waits for the journal's writes, then closes it. */
  async close(): Promise<void> {
    this.#stopped = true;
    await this.#writer.drain();
    await this.#store.close();
  }

  // ---------------------------------------------------------------- operations

  /** Dead letters, oldest first; `after` is the `next` cursor of the previous page. */
  async list(
    options: { service?: string; limit?: number; after?: string },
  ): Promise<{ letters: DeadLetter[]; next?: string }> {
    const limit = Math.min(MAX_LIST, Math.max(1, options.limit ?? 100));
    let after: { deadAt: number; key: string } | undefined;
    if (options.after) {
      const [at, key] = options.after.split(":");
      if (!at || !key || !/^\d+$/.test(at)) throw new RangeError("after: expected a cursor");
      after = { deadAt: Number(at), key };
    }
    const letters = await this.#store.deadLetters({
      limit,
      ...(options.service ? { service: options.service } : {}),
      ...(after ? { after } : {}),
    });
    const last = letters[letters.length - 1];
    return letters.length === limit && last
      ? { letters, next: `${last.deadAt}:${last.key}` }
      : { letters };
  }

  /** One dead letter. */
  async show(key: string): Promise<DeadLetter | undefined> {
    const found = await this.#store.lookup(key);
    return found.state === "dead" ? found.letter : undefined;
  }

  /** Where a key stands: pending (queued or with a worker), replied (with the reply), dead, unknown. */
  async status(
    key: string,
  ): Promise<
    | { state: "pending"; failures: Failure[] }
    | { state: "replied"; reply: StoredReply }
    | { state: "dead"; letter: DeadLetter }
    | { state: "unknown" }
  > {
    const held = this.#pending.get(key);
    if (held) return { state: "pending", failures: held.durable!.failures };
    const recent = this.#recent.get(key);
    if (recent) return { state: "replied", reply: recent };
    const found = await this.#store.lookup(key);
    if (found.state === "pending") return { state: "pending", failures: found.request.failures };
    return found;
  }

  /**
   * Routes a dead letter again, as a new attempt with its failures cleared:
   * undefined when there is no such dead letter. Its reply is kept under the
   * same key, as any durable request's.
   */
  async replay(key: string): Promise<DeadLetter | undefined> {
    if (this.#replaying.has(key) || this.#pending.has(key)) return undefined;
    this.#replaying.add(key);
    try {
      const found = await this.#store.lookup(key);
      if (found.state !== "dead" || this.#stopped) return undefined;
      const letter = found.letter;
      const now = this.#now();
      const stored: JournalRequest = {
        key,
        service: letter.service,
        body: letter.body,
        receivedAt: now,
        expiresAt: now + this.#timeoutMs,
        // Its caller may ask again with the key: routed again after a restart.
        keyed: true,
        failures: [],
      };
      await this.#writer.write({ op: "replay", request: stored });
      this.#deadCount = Math.max(0, this.#deadCount - 1);
      const request = this.#restored(stored);
      request.durable!.replays = letter.replays + 1;
      this.#pending.set(key, request);
      this.#observer.replayed?.(letter);
      this.#host?.enqueue(request, false);
      return letter;
    } finally {
      this.#replaying.delete(key);
    }
  }

  /** Deletes dead letters (one key, or every one, of a service or all): how many there were. */
  async forget(options: { key: string } | { service?: string }): Promise<number> {
    const keys: string[] = [];
    if ("key" in options) {
      if ((await this.#store.lookup(options.key)).state === "dead") keys.push(options.key);
    } else {
      let after: string | undefined;
      do {
        const page = await this.list({
          limit: MAX_LIST,
          ...(options.service ? { service: options.service } : {}),
          ...(after ? { after } : {}),
        });
        for (const letter of page.letters) keys.push(letter.key);
        after = page.next;
      } while (after);
    }
    if (keys.length === 0) return 0;
    await Promise.all(keys.map((key) => this.#writer.write({ op: "forget", key })));
    this.#deadCount = Math.max(0, this.#deadCount - keys.length);
    return keys.length;
  }

  /** The journal's rows, by kind, and its storage. */
  async stats(): Promise<Record<string, unknown>> {
    const counts = await this.#store.counts();
    this.#deadCount = counts.dead;
    return {
      storage: this.#store.description,
      pending: this.#pending.size,
      journaled: counts.pending,
      replies: counts.replies,
      dead_letters: counts.dead,
      max_attempts: this.#maxAttempts,
      reply_ttl_ms: this.#replyTtlMs,
      timeout_ms: this.#timeoutMs,
      ...(this.#failure ? { failing: `${this.#failure.failure}: ${this.#failure.cause}` } : {}),
    };
  }
}

/** A frame as JSON: text when UTF-8 (plus the parsed value when JSON), else base64. */
export function frameJson(f: Uint8Array): { text?: string; json?: unknown; base64?: string } {
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(f);
  } catch {
    let binary = "";
    for (const byte of f) binary += String.fromCharCode(byte);
    return { base64: btoa(binary) };
  }
  try {
    return { text: decoded, json: JSON.parse(decoded) };
  } catch {
    return { text: decoded };
  }
}

/** Used by the operations: the body of a dead letter as shown. */
export function letterJson(letter: DeadLetter, withBody: boolean): Record<string, unknown> {
  return {
    id: letter.key,
    service: letter.service,
    reason: letter.reason,
    detail: letter.detail,
    attempts: letter.attempts,
    received_at: new Date(letter.receivedAt).toISOString(),
    dead_at: new Date(letter.deadAt).toISOString(),
    failures: letter.failures.map((f) => ({ at: new Date(f.at).toISOString(), reason: f.reason })),
    replays: letter.replays,
    ...(withBody ? { body: letter.body.map(frameJson) } : { operation: opName(letter.body) }),
  };
}

function opName(body: Frames): string | undefined {
  const first = body[0];
  return first && first.length <= 64 ? text(first) : undefined;
}
