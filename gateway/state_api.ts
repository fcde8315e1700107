/**
 * org.plantd.State over Majordomo, for the gateway: each method sends one
 * state operation and turns the service's reply (Go plantd's texts) into data
 * or an {@link ApiError}.
 *
 * @module
 */
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import type { Call, ServiceDirectory } from "./directory.ts";
import { ApiError } from "./errors.ts";
import type { StateCache } from "./state_cache.ts";

/** A key's value with its revision and update time (ms since the epoch). */
export interface StateEntry {
  value: string;
  revision: number;
  updated_at: number;
}

interface Reply {
  success?: boolean;
  error?: string;
  /** With an authentication error code in `error` (Go plantd's auth replies). */
  message?: string;
  data?: Record<string, unknown>;
}

function failure(error: string, data?: Record<string, unknown>): ApiError {
  if (/^Scope '.*' does not exist$/s.test(error)) return new ApiError("SCOPE_NOT_FOUND", error);
  if (/^Scope '.*' already exists$/s.test(error)) return new ApiError("SCOPE_EXISTS", error);
  if (error.startsWith("Revision mismatch")) {
    return new ApiError("REVISION_CONFLICT", error, {
      current_revision: data?.current_revision,
    });
  }
  if (/^Value for key '.*' is \d+ bytes/s.test(error)) {
    return new ApiError("PAYLOAD_TOO_LARGE", error);
  }
  if (error.startsWith("Operation failed:")) {
    return new ApiError("BAD_REQUEST", error.slice("Operation failed: ".length));
  }
  return new ApiError("UPSTREAM_ERROR", error);
}

/**
 * The JSON sent for one state request: with authentication on, the request
 * with a call credential for it (gateway/auth/guard.ts `stateRequest`).
 */
export type RequestJson = (operation: string, request: Record<string, unknown>) => string;

/** State operations for the REST routes. */
export class StateApi {
  #call: Call;
  #directory: ServiceDirectory;
  #cache: StateCache | undefined;
  #json: RequestJson | undefined;

  constructor(call: Call, directory: ServiceDirectory, cache?: StateCache, json?: RequestJson) {
    this.#call = call;
    this.#directory = directory;
    this.#cache = cache;
    this.#json = json;
  }

  /** The same API building each request's JSON with `json` (a caller's call credentials). */
  as(json: RequestJson | undefined): StateApi {
    return json === undefined ? this : new StateApi(this.#call, this.#directory, this.#cache, json);
  }

  async #op(operation: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
    await this.#directory.require(STATE_SERVICE);
    const json = this.#json ? this.#json(operation, request) : JSON.stringify(request);
    const [frame] = await this.#call(STATE_SERVICE, [operation, json]);
    let reply: Reply;
    try {
      reply = JSON.parse(text(frame ?? new Uint8Array()));
    } catch {
      throw new ApiError("UPSTREAM_ERROR", "The state service sent a reply that is not JSON");
    }
    if (reply.success === true) return reply.data ?? {};
    if (reply.error === "AUTHENTICATION_FAILED" || reply.error === "AUTHENTICATION_REQUIRED") {
      throw new ApiError("UNAUTHENTICATED", `State service: ${reply.message ?? reply.error}`);
    }
    if (reply.error === "STORAGE_FULL") {
      throw new ApiError("STORAGE_FULL", `State service: ${reply.message ?? reply.error}`);
    }
    if (reply.error === "PERMISSION_DENIED") {
      throw new ApiError("FORBIDDEN", `State service: ${reply.message ?? reply.error}`);
    }
    throw failure(String(reply.error ?? "unknown state error"), reply.data);
  }

  async listScopes(): Promise<string[]> {
    return (await this.#op("list-scopes", {})).scopes as string[];
  }

  async listKeys(scope: string): Promise<string[]> {
    return (await this.#op("list-keys", { service: scope })).keys as string[];
  }

  async createScope(scope: string): Promise<void> {
    await this.#op("create-scope", { service: scope });
  }

  async deleteScope(scope: string): Promise<void> {
    try {
      await this.#op("delete-scope", { service: scope });
    } finally {
      await this.#cache?.forgetScope(scope);
    }
  }

  /**
   * The entries of `keys` (null: no such key). Answered at once, without a
   * promise, when the in-process cache has them all: the hot path of a
   * cached read stays synchronous.
   */
  getMany(
    scope: string,
    keys: string[],
  ): Record<string, StateEntry | null> | Promise<Record<string, StateEntry | null>> {
    // In process: at once; from a shared (Redis) cache: a promise.
    const cached = this.#cache?.lookupMany(scope, keys);
    if (cached instanceof Promise) {
      return cached.then((found) => this.#complete(scope, keys, found));
    }
    return this.#complete(scope, keys, cached);
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
    const fetched = (await this.#op("state-get-many", { service: scope, keys: missing }))
      .entries as Record<string, StateEntry | null>;
    for (const key of missing) {
      const entry = fetched[key] ?? null;
      this.#cache?.put(scope, key, entry);
      found[key] = entry;
    }
    return found;
  }

  /** Sets one key; with `expected`, only if its revision is that now. Returns the new revision. */
  async set(scope: string, key: string, value: string, expected?: number): Promise<number> {
    // A client reads its own writes: the cache takes the written value with its
    // revision, so a late change event of an older write cannot bring that back.
    try {
      const revision = await this.#set(scope, key, value, expected);
      // Awaited: a shared cache has it before the client hears of the write.
      await this.#cache?.put(scope, key, { value, revision, updated_at: Date.now() });
      return revision;
    } catch (error) {
      await this.#cache?.forget(scope, key);
      throw error;
    }
  }

  async #set(scope: string, key: string, value: string, expected?: number): Promise<number> {
    if (expected !== undefined) {
      const data = await this.#op("state-cas", { service: scope, key, value, revision: expected });
      return data.revision as number;
    }
    const data = await this.#op("state-set-many", { service: scope, entries: { [key]: value } });
    return (data.revisions as Record<string, number>)[key]!;
  }

  async setMany(scope: string, entries: Record<string, string>): Promise<Record<string, number>> {
    try {
      const revisions = (await this.#op("state-set-many", { service: scope, entries }))
        .revisions as Record<string, number>;
      const now = Date.now();
      await Promise.all(
        Object.entries(entries).map(([key, value]) =>
          this.#cache?.put(scope, key, { value, revision: revisions[key]!, updated_at: now })
        ),
      );
      return revisions;
    } catch (error) {
      await Promise.all(Object.keys(entries).map((key) => this.#cache?.forget(scope, key)));
      throw error;
    }
  }

  async delete(scope: string, key: string): Promise<void> {
    try {
      await this.#op("delete", { service: scope, key });
    } finally {
      await this.#cache?.forget(scope, key);
    }
  }
}
