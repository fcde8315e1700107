/**
 * The broker's journal of durable requests: what a store must do (libSQL in
 * journal_libsql.ts; a PostgreSQL store fits the same {@link JournalStore},
 * so a broker pair can share one), and the group commit in front of it.
 *
 * Every change is one row operation of a small vocabulary
 * ({@link JournalChange}); a store applies a list of them in one transaction,
 * all or nothing. {@link GroupCommit} collects the changes made while a
 * commit runs and applies them together in the next, so a burst of durable
 * requests costs one transaction (one fsync on libSQL with synchronous=full)
 * rather than one each, and each change's promise settles only after the
 * transaction that holds it committed: the broker routes a request only once
 * its admission resolved, so nothing is routed that was not stored.
 *
 * @module
 */
import { type Frames, readUint32, writeUint32 } from "../transport/frames.ts";
import { nextTurn } from "../support/next_turn.ts";

/** One worker lost while holding a request. */
export interface Failure {
  /** ms since the epoch. */
  at: number;
  reason: string;
}

/** A durable request as journaled. */
export interface JournalRequest {
  /** Its journal key, 16 bytes in hex: the client's (see durable_key.ts) or the broker's. */
  key: string;
  service: string;
  body: Frames;
  /** ms since the epoch. */
  receivedAt: number;
  /** Dead-lettered as expired when not answered by then (ms since the epoch). */
  expiresAt: number;
  /** When its caller stops waiting (ms since the epoch); undefined: it sent no deadline. */
  callerDeadline?: number;
  /** Asked with a key by a client that asks again after a crash (our client library). */
  keyed: boolean;
  /** Each worker lost while holding it, oldest first. */
  failures: Failure[];
}

/** A reply kept for a caller that asks again. */
export interface StoredReply {
  key: string;
  service: string;
  body: Frames;
  storedAt: number;
  expiresAt: number;
}

/**
 * Why a request became a dead letter: its workers were lost `max_attempts`
 * times, it was not answered in time (or its caller's deadline passed), or
 * its caller could no longer be reached after a restart and had a deadline.
 */
export type DeadReason = "worker_lost" | "expired" | "caller_lost";

/** A dead letter. */
export interface DeadLetter {
  key: string;
  service: string;
  body: Frames;
  reason: DeadReason;
  /** What happened last, in words. */
  detail: string;
  /** Times a worker was lost while holding it. */
  attempts: number;
  receivedAt: number;
  deadAt: number;
  failures: Failure[];
  /** Times it was replayed before. */
  replays: number;
}

/** One change to the journal. */
export type JournalChange =
  /** A new durable request. */
  | { op: "admit"; request: JournalRequest }
  /** A worker was lost while holding it: its failure list as it is now. */
  | { op: "failed"; key: string; failures: Failure[] }
  /** Answered: the request is gone, its reply kept. */
  | { op: "reply"; reply: StoredReply }
  /** The request (or nothing, for one not journaled yet) becomes a dead letter. */
  | { op: "dead"; letter: DeadLetter }
  /** A dead letter becomes a request again. */
  | { op: "replay"; request: JournalRequest }
  /** A dead letter is deleted. */
  | { op: "forget"; key: string }
  /** Replies kept past their time are deleted. */
  | { op: "expire-replies"; before: number };

/**
 * Whether a change must reach the disk before its commit returns (with
 * synchronous storage): an admission (the request is then routed), a dead
 * letter (its caller is then told), and an operator's replay or delete. A
 * reply or a failure count lost to a power cut only makes the request run
 * again after the restart, which at-least-once allows.
 */
export function mustSync(change: JournalChange): boolean {
  return change.op !== "reply" && change.op !== "failed" && change.op !== "expire-replies";
}

/** What is known about a key. */
export type KeyLookup =
  | { state: "replied"; reply: StoredReply }
  | { state: "dead"; letter: DeadLetter }
  | { state: "pending"; request: JournalRequest }
  | { state: "unknown" };

/** Options of {@link JournalStore.deadLetters}. */
export interface DeadLetterQuery {
  service?: string;
  /** At most this many, oldest first. */
  limit: number;
  /** Only those after this key in (dead_at, key) order: the last key of the previous page. */
  after?: { deadAt: number; key: string };
}

/** Rows in the journal, by kind. */
export interface JournalCounts {
  pending: number;
  replies: number;
  dead: number;
}

/** A journal's storage. Every method may reject with the storage's error (see storage/failure.ts). */
export interface JournalStore {
  /** The storage and its settings in words, for the log and benchmark labels. */
  readonly description: string;
  /** Applies `changes` in order, in one transaction: all of them or none. */
  apply(changes: readonly JournalChange[]): Promise<void>;
  /** Every request journaled and not answered, oldest first. */
  pending(): Promise<JournalRequest[]>;
  lookup(key: string): Promise<KeyLookup>;
  deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]>;
  counts(): Promise<JournalCounts>;
  close(): Promise<void>;
}

/** Options of {@link GroupCommit}. */
export interface GroupCommitOptions {
  /** Changes per transaction at most. @default 4096 */
  maxGroup?: number;
  /** A group committed: its size and duration. */
  onCommit?: (changes: number, seconds: number) => void;
  /** A group failed (each of its changes is rejected with `error`). */
  onError?: (error: unknown, changes: number) => void;
}

interface Queued {
  change: JournalChange;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Changes queue while a commit runs; the next commit takes them all (see the module). */
export class GroupCommit {
  readonly #store: JournalStore;
  readonly #maxGroup: number;
  readonly #onCommit: (changes: number, seconds: number) => void;
  readonly #onError: (error: unknown, changes: number) => void;
  #queue: Queued[] = [];
  #committing = false;
  #idle: Array<() => void> = [];

  constructor(store: JournalStore, options: GroupCommitOptions = {}) {
    this.#store = store;
    this.#maxGroup = options.maxGroup ?? 4096;
    this.#onCommit = options.onCommit ?? (() => {});
    this.#onError = options.onError ?? (() => {});
  }

  /** Queues a change; resolves once the transaction holding it committed. */
  write(change: JournalChange): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ change, resolve, reject });
      if (!this.#committing) {
        this.#committing = true;
        queueMicrotask(() => this.#loop());
      }
    });
  }

  /** Changes waiting for a commit or in one. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Resolves when nothing is queued or committing. */
  drain(): Promise<void> {
    if (!this.#committing) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #loop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        // A local libSQL commit holds the event loop through its fsync: one
        // turn first lets the requests read meanwhile join this group.
        await nextTurn();
        const group = this.#queue.splice(0, this.#maxGroup);
        const started = performance.now();
        try {
          await this.#store.apply(group.map((q) => q.change));
        } catch (error) {
          this.#onError(error, group.length);
          for (const q of group) q.reject(error);
          continue;
        }
        this.#onCommit(group.length, (performance.now() - started) / 1000);
        for (const q of group) q.resolve();
      }
    } finally {
      this.#committing = false;
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }
}

/** Frames as one blob: each a big-endian u32 length, then its bytes. */
export function encodeFrames(frames: Frames): Uint8Array {
  let size = 0;
  for (const f of frames) size += 4 + f.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const f of frames) {
    writeUint32(out, at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

/** The frames of {@link encodeFrames}; throws on a blob it did not make. */
export function decodeFrames(blob: Uint8Array): Frames {
  const frames: Frames = [];
  let at = 0;
  while (at < blob.length) {
    if (at + 4 > blob.length) throw new RangeError("journal body: truncated frame length");
    const length = readUint32(blob, at);
    if (at + 4 + length > blob.length) throw new RangeError("journal body: truncated frame");
    frames.push(blob.slice(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return frames;
}
