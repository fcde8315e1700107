/**
 * org.plantd.State over Majordomo, for the gateway and the CLI: each method
 * sends one state operation and turns the service's reply (Go plantd's
 * texts) into data or a {@link ServiceCallError} with a {@link StateErrorCode}.
 *
 * @module
 */
import type { Call, ServiceDirectory } from "../mdp/directory.ts";
import { ServiceCallError } from "../mdp/errors.ts";
import { text } from "../mdp/protocol.ts";
import { IDEMPOTENCY_FIELD, KEY_REUSED, unmarkReplay } from "./idempotency.ts";
import { STATE_SERVICE } from "./operations.ts";

/** A key's value with its revision and update time (ms since the epoch). */
export interface StateEntry {
  value: string;
  revision: number;
  updated_at: number;
}

/** One change of a key as its history keeps it (docs/state.md#key-history). */
export interface HistoryRecord {
  /** Orders a key's changes (newer is larger); `before` of the next page. */
  id: number;
  revision: number;
  op: "set" | "delete";
  /** Null: the key did not exist before. */
  old_value: string | null;
  /** Null: the change deleted the key. */
  new_value: string | null;
  /** Who made it: the caller's principal id, or "anonymous" without authentication. */
  actor: string;
  /** When it committed, ms since the epoch. */
  at: number;
}

/** The stable codes of a failed state call (the REST and WebSocket API's). */
export type StateErrorCode =
  | "SCOPE_NOT_FOUND"
  | "SCOPE_EXISTS"
  | "REVISION_CONFLICT"
  | "PAYLOAD_TOO_LARGE"
  | "BAD_REQUEST"
  | "UPSTREAM_ERROR"
  | "IDEMPOTENCY_KEY_REUSED"
  | "UNAUTHENTICATED"
  | "STORAGE_FULL"
  | "SERVICE_UNAVAILABLE"
  | "FORBIDDEN";

/**
 * Storage failures of the state service that pass (the database is back,
 * writable again, less busy): 503 with Retry-After, the class in the body.
 */
const PASSING_STORAGE_FAILURES = new Set([
  "STORAGE_UNAVAILABLE",
  "STORAGE_READONLY",
  "STORAGE_BUSY",
  "STORAGE_IO",
]);

/**
 * A read cache in front of the service (the gateway's: gateway/state_read_cache.ts):
 * the client reads through it and writes through to it.
 */
export interface ReadCache {
  /**
   * The entries of `keys` (entry, null for a cached absence, undefined for a
   * miss): at once when the answer is in process, else a promise.
   */
  lookupMany(
    scope: string,
    keys: string[],
  ): (StateEntry | null | undefined)[] | Promise<(StateEntry | null | undefined)[]>;
  /** The entry of one key, as {@link lookupMany} gives each. */
  lookup(
    scope: string,
    key: string,
  ): StateEntry | null | undefined | Promise<StateEntry | null | undefined>;
  /**
   * Where the cache is before a read is sent, to pass to `put` with its
   * answer: the cache keeps nothing that changed in between.
   */
  mark(): number;
  /** Stores what a read (or write) returned; a promise when a shared cache takes it too. */
  put(scope: string, key: string, entry: StateEntry | null, since?: number): Promise<void> | void;
  forget(scope: string, key: string): Promise<void> | void;
  forgetScope(scope: string): Promise<void> | void;
}

interface Reply {
  success?: boolean;
  error?: string;
  /** With an authentication error code in `error` (Go plantd's auth replies). */
  message?: string;
  data?: Record<string, unknown>;
}

/** A failed state call. */
function stateError(
  code: StateErrorCode,
  message: string,
  options?: { details?: Record<string, unknown>; replayed?: boolean; retryAfterS?: number },
): ServiceCallError<StateErrorCode> {
  return new ServiceCallError(STATE_SERVICE, code, message, options);
}

/** The error of a failure reply; `replayed` marks the stored reply of an idempotency key. */
function failure(
  error: string,
  data: Record<string, unknown> | undefined,
  replayed: boolean,
): ServiceCallError<StateErrorCode> {
  if (/^Scope '.*' does not exist$/s.test(error)) {
    return stateError("SCOPE_NOT_FOUND", error, { replayed });
  }
  if (/^Scope '.*' already exists$/s.test(error)) {
    return stateError("SCOPE_EXISTS", error, { replayed });
  }
  if (error.startsWith("Revision mismatch")) {
    return stateError("REVISION_CONFLICT", error, {
      details: { current_revision: data?.current_revision },
      replayed,
    });
  }
  if (/^Value for key '.*' is \d+ bytes/s.test(error)) {
    return stateError("PAYLOAD_TOO_LARGE", error);
  }
  if (error.startsWith("Operation failed:")) {
    return stateError("BAD_REQUEST", error.slice("Operation failed: ".length));
  }
  return stateError("UPSTREAM_ERROR", error);
}

/** What a write reports besides its data: whether its reply was its key's stored one. */
export interface Written {
  replayed: boolean;
}

/**
 * The JSON sent for one state request: with authentication on, the request
 * with a call credential for it (the gateway's `Guard.stateRequest`).
 */
export type RequestJson = (operation: string, request: Record<string, unknown>) => string;

/** State operations, for the gateway's routes and the CLI. */
export class StateClient {
  #call: Call;
  #directory: Pick<ServiceDirectory, "require">;
  #cache: ReadCache | undefined;
  #json: RequestJson | undefined;

  constructor(
    call: Call,
    directory: Pick<ServiceDirectory, "require">,
    cache?: ReadCache,
    json?: RequestJson,
  ) {
    this.#call = call;
    this.#directory = directory;
    this.#cache = cache;
    this.#json = json;
  }

  /** The same API building each request's JSON with `json` (a caller's call credentials). */
  as(json: RequestJson | undefined): StateClient {
    return json === undefined
      ? this
      : new StateClient(this.#call, this.#directory, this.#cache, json);
  }

  async #op(operation: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
    return (await this.#send(operation, request)).data;
  }

  /**
   * Sends one operation; with `idempotencyKey`, a keyed write
   * (state/idempotency.ts): `replayed` when the reply is the key's stored
   * one, whose errors then say so (`replayed`).
   */
  async #send(
    operation: string,
    request: Record<string, unknown>,
    idempotencyKey?: string,
  ): Promise<{ data: Record<string, unknown> } & Written> {
    await this.#directory.require(STATE_SERVICE);
    if (idempotencyKey !== undefined) {
      request = { ...request, [IDEMPOTENCY_FIELD]: idempotencyKey };
    }
    const json = this.#json ? this.#json(operation, request) : JSON.stringify(request);
    const [frame] = await this.#call(STATE_SERVICE, [operation, json]);
    let body = text(frame ?? new Uint8Array());
    let replayed = false;
    if (idempotencyKey !== undefined) ({ reply: body, replayed } = unmarkReplay(body));
    let reply: Reply;
    try {
      reply = JSON.parse(body);
    } catch {
      throw stateError("UPSTREAM_ERROR", "The state service sent a reply that is not JSON");
    }
    if (reply.success === true) return { data: reply.data ?? {}, replayed };
    if (reply.error === KEY_REUSED) {
      throw stateError("IDEMPOTENCY_KEY_REUSED", reply.message ?? reply.error);
    }
    if (reply.error === "AUTHENTICATION_FAILED" || reply.error === "AUTHENTICATION_REQUIRED") {
      throw stateError("UNAUTHENTICATED", `State service: ${reply.message ?? reply.error}`);
    }
    if (reply.error === "STORAGE_FULL") {
      throw stateError("STORAGE_FULL", `State service: ${reply.message ?? reply.error}`);
    }
    if (typeof reply.error === "string" && PASSING_STORAGE_FAILURES.has(reply.error)) {
      throw stateError(
        "SERVICE_UNAVAILABLE",
        `State service: ${reply.error}: ${reply.message ?? "storage failure"}`,
        { details: { storage: reply.error }, retryAfterS: 1 },
      );
    }
    if (reply.error === "PERMISSION_DENIED") {
      throw stateError("FORBIDDEN", `State service: ${reply.message ?? reply.error}`);
    }
    throw failure(String(reply.error ?? "unknown state error"), reply.data, replayed);
  }

  async listScopes(): Promise<string[]> {
    return (await this.#op("list-scopes", {})).scopes as string[];
  }

  async listKeys(scope: string): Promise<string[]> {
    return (await this.#op("list-keys", { service: scope })).keys as string[];
  }

  async createScope(scope: string, idempotencyKey?: string): Promise<Written> {
    const { replayed } = await this.#send("create-scope", { service: scope }, idempotencyKey);
    return { replayed };
  }

  async deleteScope(scope: string, idempotencyKey?: string): Promise<Written> {
    try {
      const { replayed } = await this.#send("delete-scope", { service: scope }, idempotencyKey);
      return { replayed };
    } finally {
      await this.#cache?.forgetScope(scope);
    }
  }

  /** The entries of `keys` (null: no such key). */
  async getMany(scope: string, keys: string[]): Promise<Record<string, StateEntry | null>> {
    // In process: at once; from a shared (Redis) cache: a promise.
    return await this.#complete(scope, keys, await this.#cache?.lookupMany(scope, keys));
  }

  /**
   * `answer` applied to the entry of `key` (null: no such key): at once,
   * without a promise, when the in-process cache has it, so the hot path of
   * a cached read stays synchronous (gateway/fusing_router.ts serves such an
   * answer without a promise too); else once it is read. The one place that
   * tells the two apart: callers never branch on a promise. One key, no
   * record of entries: a record named by its key gives V8 a new object shape
   * per key read, which slows every read once many keys are.
   */
  readOne<T>(scope: string, key: string, answer: (entry: StateEntry | null) => T): T | Promise<T> {
    const cached = this.#cache?.lookup(scope, key);
    if (cached instanceof Promise) {
      return cached.then((entry) => entry === undefined ? this.#fetchOne(scope, key) : entry)
        .then(answer);
    }
    return cached === undefined ? this.#fetchOne(scope, key).then(answer) : answer(cached);
  }

  async #fetchOne(scope: string, key: string): Promise<StateEntry | null> {
    return (await this.#fetch(scope, [key], {}))[key] ?? null;
  }

  /** What the cache had, and the rest from the state service (a promise then). */
  #complete(
    scope: string,
    keys: string[],
    cached: (StateEntry | null | undefined)[] | undefined,
  ): Record<string, StateEntry | null> | Promise<Record<string, StateEntry | null>> {
    const found: Record<string, StateEntry | null> = {};
    const missing: string[] = [];
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const entry = cached?.[i];
      if (entry === undefined) missing.push(key);
      else found[key] = entry;
    }
    if (missing.length === 0) return found;
    return this.#fetch(scope, missing, found);
  }

  async #fetch(
    scope: string,
    missing: string[],
    found: Record<string, StateEntry | null>,
  ): Promise<Record<string, StateEntry | null>> {
    const since = this.#cache?.mark();
    const fetched = (await this.#op("state-get-many", { service: scope, keys: missing }))
      .entries as Record<string, StateEntry | null>;
    for (const key of missing) {
      const entry = fetched[key] ?? null;
      this.#cache?.put(scope, key, entry, since);
      found[key] = entry;
    }
    return found;
  }

  /**
   * Sets one key; with `expected`, only if its revision is that now. Returns
   * the new revision (a replay: the revision the first use got).
   */
  async set(
    scope: string,
    key: string,
    value: string,
    expected?: number,
    idempotencyKey?: string,
  ): Promise<{ revision: number } & Written> {
    // A client reads its own writes: the cache takes the written value with its
    // revision, so a late change event of an older write cannot bring that back.
    try {
      const written = await this.#set(scope, key, value, expected, idempotencyKey);
      // Awaited: a shared cache has it before the client hears of the write.
      if (!written.replayed) {
        await this.#cache?.put(scope, key, {
          value,
          revision: written.revision,
          updated_at: Date.now(),
        });
      } else {
        // A replay's value may be older than what the key holds now: never cache it.
        await this.#cache?.forget(scope, key);
      }
      return written;
    } catch (error) {
      await this.#cache?.forget(scope, key);
      throw error;
    }
  }

  async #set(
    scope: string,
    key: string,
    value: string,
    expected: number | undefined,
    idempotencyKey: string | undefined,
  ): Promise<{ revision: number } & Written> {
    if (expected !== undefined) {
      const { data, replayed } = await this.#send(
        "state-cas",
        { service: scope, key, value, revision: expected },
        idempotencyKey,
      );
      return { revision: data.revision as number, replayed };
    }
    const { data, replayed } = await this.#send(
      "state-set-many",
      { service: scope, entries: { [key]: value } },
      idempotencyKey,
    );
    return { revision: (data.revisions as Record<string, number>)[key]!, replayed };
  }

  async setMany(
    scope: string,
    entries: Record<string, string>,
    idempotencyKey?: string,
  ): Promise<{ revisions: Record<string, number> } & Written> {
    try {
      const { data, replayed } = await this.#send(
        "state-set-many",
        { service: scope, entries },
        idempotencyKey,
      );
      const revisions = data.revisions as Record<string, number>;
      const now = Date.now();
      await Promise.all(
        Object.entries(entries).map(([key, value]) =>
          // A replay's values may be older than what the keys hold now: never cache them.
          replayed
            ? this.#cache?.forget(scope, key)
            : this.#cache?.put(scope, key, { value, revision: revisions[key]!, updated_at: now })
        ),
      );
      return { revisions, replayed };
    } catch (error) {
      await Promise.all(Object.keys(entries).map((key) => this.#cache?.forget(scope, key)));
      throw error;
    }
  }

  /**
   * A key's history, newest first: at most `limit` changes (the service's
   * default without it), older than change `before` when given.
   */
  async history(
    scope: string,
    key: string,
    page: { limit?: number; before?: number } = {},
  ): Promise<HistoryRecord[]> {
    const request: Record<string, unknown> = { service: scope, key };
    if (page.limit !== undefined) request.limit = page.limit;
    if (page.before !== undefined) request.before = page.before;
    return (await this.#op("state-history", request)).entries as HistoryRecord[];
  }

  /** Deletes a key's history; resolves with how many changes went. */
  async deleteHistory(scope: string, key: string): Promise<number> {
    return (await this.#op("state-history-delete", { service: scope, key })).deleted as number;
  }

  /**
   * Deletes a key. With `idempotencyKey`, `existed` says whether the key was
   * there when the delete was first applied (the reply a replay repeats).
   */
  async delete(
    scope: string,
    key: string,
    idempotencyKey?: string,
  ): Promise<{ existed?: boolean } & Written> {
    try {
      const { data, replayed } = await this.#send(
        "delete",
        { service: scope, key },
        idempotencyKey,
      );
      return typeof data.existed === "boolean" ? { existed: data.existed, replayed } : { replayed };
    } finally {
      await this.#cache?.forget(scope, key);
    }
  }
}
