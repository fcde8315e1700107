/**
 * Password hashing off the event loop: argon2id takes about 300 ms of CPU,
 * which on the main thread stalls every request of the process. A
 * {@link HashPool} runs it in Web Workers (auth/hash_worker.ts) and holds at
 * most `maxPending` hashes waiting or running: past that it refuses at once
 * ({@link HashPoolBusy}), so a login flood costs logins, not the process.
 *
 * @module
 */
import { hashPassword, verifyPassword } from "./secrets.ts";

/** A request to a worker (auth/hash_worker.ts). */
export type HashRequest =
  | { id: number; op: "hash"; password: string }
  | { id: number; op: "verify"; password: string; hash: string };

/** A worker's answer to one request. */
export type HashReply = { id: number; value: string | boolean } | { id: number; error: string };

/** Hashes and checks passwords (auth/store.ts uses one). */
export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(password: string, hash: string): Promise<boolean>;
}

/** On the calling thread: for commands (`task user:add`) and tests, never for a server. */
export const inProcessHasher: PasswordHasher = { hash: hashPassword, verify: verifyPassword };

/** The pool has `maxPending` hashes waiting or running already. */
export class HashPoolBusy extends Error {
  constructor(readonly maxPending: number) {
    super(`${maxPending} password hashes already waiting`);
    this.name = "HashPoolBusy";
  }
}

interface Pending {
  resolve(value: string | boolean): void;
  reject(error: Error): void;
}

interface Slot {
  worker: Worker;
  /** Requests sent to this worker and not answered yet. */
  busy: number;
}

/** Options of {@link HashPool}. */
export interface HashPoolOptions {
  /** Web Workers. @default 1 */
  workers?: number;
  /** Hashes waiting or running beyond which calls fail with {@link HashPoolBusy}. @default 32 */
  maxPending?: number;
}

/** argon2id in Web Workers, with a cap on the hashes waiting. */
export class HashPool implements PasswordHasher {
  readonly maxPending: number;
  readonly #slots: Slot[];
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  constructor(options: HashPoolOptions = {}) {
    this.maxPending = options.maxPending ?? 32;
    const count = Math.max(1, options.workers ?? 1);
    this.#slots = Array.from({ length: count }, () => {
      const slot: Slot = {
        worker: new Worker(new URL("./hash_worker.ts", import.meta.url).href, { type: "module" }),
        busy: 0,
      };
      slot.worker.onmessage = (event: MessageEvent<HashReply>) => {
        slot.busy--;
        const reply = event.data;
        const pending = this.#pending.get(reply.id);
        if (!pending) return;
        this.#pending.delete(reply.id);
        if ("error" in reply) pending.reject(new Error(reply.error));
        else pending.resolve(reply.value);
      };
      slot.worker.onerror = (event) => {
        // A worker that dies takes its requests with it: fail them rather than hang.
        event.preventDefault();
        this.#failAll(new Error(`hash worker failed: ${event.message}`));
      };
      return slot;
    });
  }

  /** Hashes waiting or running. */
  get pending(): number {
    return this.#pending.size;
  }

  hash(password: string): Promise<string> {
    return this.#run({ op: "hash", password }) as Promise<string>;
  }

  verify(password: string, hash: string): Promise<boolean> {
    return this.#run({ op: "verify", password, hash }) as Promise<boolean>;
  }

  #run(request: Omit<HashRequest, "id"> & { hash?: string }): Promise<string | boolean> {
    if (this.#closed) return Promise.reject(new Error("hash pool closed"));
    if (this.#pending.size >= this.maxPending) {
      return Promise.reject(new HashPoolBusy(this.maxPending));
    }
    const id = this.#nextId++;
    let slot = this.#slots[0]!;
    for (const s of this.#slots) if (s.busy < slot.busy) slot = s;
    slot.busy++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      slot.worker.postMessage({ ...request, id } as HashRequest);
    });
  }

  #failAll(error: Error): void {
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    for (const slot of this.#slots) slot.busy = 0;
  }

  /** Terminates the workers; calls waiting fail. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const slot of this.#slots) slot.worker.terminate();
    this.#failAll(new Error("hash pool closed"));
  }
}
