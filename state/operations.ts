/**
 * The `org.plantd.State` wire protocol: request body `[operation, json]`, one
 * JSON reply frame, byte-compatible with Go plantd (its key order, its error
 * texts, including the hand-written `{"error": "…"}` replies with a space),
 * plus batch and compare-and-set operations, and idempotency keys on writes
 * (state/idempotency.ts). Reference: docs/state.md.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { CallReplayed } from "../auth/call_credentials.ts";
import { allows, PERMISSIONS, statePermissions } from "../auth/permissions.ts";
import { AuthError, type Principal } from "../auth/tokens.ts";
import { text } from "../mdp/protocol.ts";
import { type StorageFailure, storageFailure } from "../storage/failure.ts";
import type { Frames } from "../transport/frames.ts";
import type { StateBackend } from "./backend.ts";
import { CommitOutcomeUnknown } from "./commit_outcome.ts";
import {
  ANONYMOUS_OWNER,
  fingerprint,
  IDEMPOTENCY_FIELD,
  IdempotencyKey,
  replayReply,
  reusedReply,
} from "./idempotency.ts";
import { ANONYMOUS_ACTOR, type HistoryEntry, type Write, type WriteResult } from "./store.ts";

export const STATE_SERVICE = "org.plantd.State";

/** Options of {@link StateOperations}. */
export interface OperationsOptions {
  /** Largest value in bytes (UTF-8). @default 1 MiB */
  maxValueBytes?: number;
  /** Largest scope or key name in bytes. @default 1024 */
  maxNameBytes?: number;
  /** Keys per batch operation at most. @default 10000 */
  maxBatch?: number;
  /**
   * Verifies the `token` field when auth is on: a gateway's call credential
   * for this very request, or the access token a Go plantd client sends
   * (auth/call_credentials.ts serviceTokenCheck). With it, every operation
   * but `health` needs a valid token holding the operation's permission
   * (auth/permissions.ts).
   */
  /**
   * The class of the storage failure while writes fail (storage/write_health.ts),
   * reported by `health`: reads still work then, writes do not.
   */
  writeFailure?: () => string | undefined;
  verify?: (
    token: string,
    operation: string,
    request: Record<string, unknown>,
    delivery?: string,
  ) => Promise<Principal>;
}

/** What the operations report, for metrics. */
export interface OperationsObserver {
  operation?(operation: string, ok: boolean): void;
  badRequest?(reason: string): void;
  /** A request refused by authentication or authorization, per code. */
  refused?(code: string, operation: string, scope: string | undefined, reason: string): void;
  /** A change made with a verified token, for the audit trail. */
  changed?(principal: Principal, operation: string, scope: string | undefined): void;
  /**
   * A write with an idempotency key: `applied` (first use), `replayed` (the
   * stored reply answered it), `reused` (refused: the key was used for
   * another request).
   */
  idempotent?(outcome: "applied" | "replayed" | "reused"): void;
  /**
   * A call credential seen again: `redelivery` (the same delivery of its
   * request, served: a write answered with its stored reply) or `replay`
   * (another delivery: refused).
   */
  callReused?(use: "redelivery" | "replay"): void;
}

/**
 * The key under which a write made with a call credential keeps its reply,
 * for a redelivery of it: its `jti` behind a control character, which no
 * client's key can hold (idempotency.ts allows printable ASCII only).
 */
export const CALL_KEY_PREFIX = "\u001fcall:";

/**
 * How long that reply is kept past now: longer than the credential lives
 * (the worker refuses it after its `exp`, redelivered or not).
 */
const CALL_KEY_WINDOW_MS = 120_000;

/** Operations that change nothing (not audited). */
const READS = new Set([
  "state-get",
  "state-get-many",
  "list-keys",
  "list-scopes",
  "health",
  "state-history",
]);

/** Rows of a key's history one `state-history` answers at most, and by default. */
export const MAX_HISTORY_PAGE = 1000;
export const DEFAULT_HISTORY_PAGE = 100;

/** A history row on the wire (sorted keys, as every reply's objects). */
function historyJson(entry: HistoryEntry): Record<string, unknown> {
  return {
    actor: entry.actor,
    at: entry.at,
    id: entry.id,
    new_value: entry.newValue,
    old_value: entry.oldValue,
    op: entry.op,
    revision: entry.revision,
  };
}

/** The start of a storage failure's message, per class. */
const STORAGE_MESSAGES: Record<Exclude<StorageFailure, "STORAGE_ERROR">, string> = {
  STORAGE_FULL: "State storage is full",
  STORAGE_READONLY: "State storage is read-only",
  STORAGE_IO: "State storage failed to read or write",
  STORAGE_BUSY: "State storage is busy",
  STORAGE_UNAVAILABLE: "State storage is unavailable",
};

/**
 * What became of the request: a read changed nothing; a write whose commit
 * went unanswered may have been applied; any other failed write was rolled
 * back (retry it once the cause is gone).
 */
function outcome(error: unknown, operation: string): string {
  if (READS.has(operation)) return "";
  return error instanceof CommitOutcomeUnknown
    ? ", the write may or may not have been applied"
    : ", nothing was written";
}

/** Go plantd's auth error replies: `{"error": CODE, "message": TEXT}`. */
const AUTH_MESSAGES: Record<AuthError["code"], string> = {
  AUTHENTICATION_REQUIRED: "Authentication token required",
  AUTHENTICATION_FAILED: "Invalid or expired token",
  PERMISSION_DENIED: "Insufficient permissions",
};

/** A reply that is an error of the Go service wrapper: `{"error": "…"}`. */
class WrapperError extends Error {}
/** A reply in the callbacks' shape: `{"success":false,"error":"…"}`. */
class CallbackError extends Error {
  constructor(message: string, readonly data?: Record<string, unknown>) {
    super(message);
  }
}

const encoder = new TextEncoder();

/** Go's hand-formatted wrapper error (note the spaces Go plantd puts there). */
function wrapperError(message: string): string {
  return `{"error": ${JSON.stringify(message)}}`;
}

/** Go encodes map[string]… with sorted keys; build objects the same way. */
function sorted(object: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(object).sort()) out[key] = object[key];
  return out;
}

function success(data: Record<string, unknown>): string {
  return JSON.stringify({ success: true, data: sorted(data) });
}

/** A reply text and whether it reports success (for metrics). */
interface Reply {
  ok: boolean;
  text: string;
}

const succeeded = (data: Record<string, unknown>): Reply => ({ ok: true, text: success(data) });

/** The callbacks' failure reply (as {@link CallbackError} renders). */
function failed(message: string, data?: Record<string, unknown>): Reply {
  const reply: Record<string, unknown> = { success: false, error: message };
  if (data) reply.data = sorted(data);
  return { ok: false, text: JSON.stringify(reply) };
}

/**
 * A checked write request: what to write, its arguments in the form that
 * fingerprints it, and the reply of its result (built inside the commit
 * for a keyed write, whose reply is stored with its key).
 */
interface WritePlan {
  write: Write;
  args: Record<string, unknown>;
  reply(result: WriteResult): Reply;
}

type Request = Record<string, unknown>;

function scopeOf(request: Request): string | undefined {
  return typeof request.service === "string" ? request.service : undefined;
}

/** Serves state operations against a store ({@link StateBackend}). */
export class StateOperations {
  #store: StateBackend;
  #maxValueBytes: number;
  #maxNameBytes: number;
  #maxBatch: number;
  #observer: OperationsObserver;
  #verify: OperationsOptions["verify"];
  #writeFailure: OperationsOptions["writeFailure"];

  constructor(
    store: StateBackend,
    options: OperationsOptions = {},
    observer: OperationsObserver = {},
  ) {
    this.#store = store;
    this.#maxValueBytes = options.maxValueBytes ?? 1024 * 1024;
    this.#maxNameBytes = options.maxNameBytes ?? 1024;
    this.#maxBatch = options.maxBatch ?? 10_000;
    this.#verify = options.verify;
    this.#writeFailure = options.writeFailure;
    this.#observer = observer;
  }

  /**
   * Handles one request body and returns the reply frame's text. `client` is
   * the client address frame the broker sent it with: the same when the
   * broker routes the request again, another for a new request.
   */
  async handle(body: Frames, client?: Uint8Array): Promise<string> {
    if (body.length < 2) {
      this.#observer.badRequest?.("invalid message format");
      return wrapperError("Invalid message format");
    }
    const operation = text(body[0]!);
    // Own properties only: "toString", "constructor"... are operations of no one.
    const run = Object.hasOwn(this.#operations, operation)
      ? this.#operations[operation]
      : undefined;
    const plan = Object.hasOwn(this.#writes, operation) ? this.#writes[operation] : undefined;
    if (!run && !plan) {
      this.#observer.badRequest?.("invalid operation");
      return wrapperError("Invalid operation");
    }
    try {
      const request = this.#parse(text(body[1]!));
      let principal: Principal | undefined;
      if (this.#verify && operation !== "health") {
        const refused = await this.#authorize(operation, request, client);
        if (typeof refused === "string") return refused;
        principal = refused;
      }
      if (plan) return await this.#runWrite(operation, plan(request), request, principal);
      const reply = await run!(request);
      this.#observer.operation?.(operation, true);
      if (principal && !READS.has(operation)) {
        this.#observer.changed?.(principal, operation, scopeOf(request));
      }
      return reply;
    } catch (error) {
      this.#observer.operation?.(operation, false);
      if (error instanceof WrapperError) {
        this.#observer.badRequest?.(error.message);
        return wrapperError(`Operation failed: ${error.message}`);
      }
      if (error instanceof CallbackError) {
        const reply: Record<string, unknown> = { success: false, error: error.message };
        if (error.data) reply.data = sorted(error.data);
        return JSON.stringify(reply);
      }
      const message = error instanceof Error ? error.message : String(error);
      const failure = storageFailure(error);
      if (failure !== "STORAGE_ERROR") {
        // A code clients can act on, in the shape of the auth errors' replies.
        return `{"error": "${failure}", "message": ${
          JSON.stringify(`${STORAGE_MESSAGES[failure]}${outcome(error, operation)}: ${message}`)
        }}`;
      }
      return JSON.stringify({ success: false, error: `Store failure: ${message}` });
    }
  }

  /**
   * Runs a checked write; with an `idempotency_key`, at most once per key of
   * the caller (`principal`, or the anonymous owner without authentication).
   */
  async #runWrite(
    operation: string,
    plan: WritePlan,
    request: Request,
    principal: Principal | undefined,
  ): Promise<string> {
    const given = this.#idempotencyKey(request);
    // A write made with a call credential keeps its reply under the
    // credential's id, in its transaction: a redelivery of it gets that reply
    // rather than being applied twice (a client's own key does this already).
    const call = given === undefined ? principal?.call : undefined;
    const key = given ?? (call ? CALL_KEY_PREFIX + call.id : undefined);
    // Who asked, for the keys' history: the verified caller, never a name the request claims.
    const write: Write = { ...plan.write, actor: principal?.id ?? ANONYMOUS_ACTOR };
    let reply: Reply;
    if (key === undefined) reply = plan.reply(await this.#store.write(write));
    else {
      let applied: Reply | undefined;
      const outcome = await this.#store.writeKeyed(write, {
        owner: principal?.id ?? ANONYMOUS_OWNER,
        key,
        fingerprint: fingerprint(operation, plan.args),
        reply: (result) => (applied = plan.reply(result)).text,
        ...(call ? { windowMs: CALL_KEY_WINDOW_MS } : {}),
      });
      if (!call) this.#observer.idempotent?.(outcome.kind);
      if (outcome.kind === "reused" && call) {
        // The credential binds its request: another one under its id is no redelivery.
        this.#observer.operation?.(operation, false);
        this.#observer.refused?.(
          "AUTHENTICATION_FAILED",
          operation,
          scopeOf(request),
          "Call credential already used",
        );
        return `{"error": "AUTHENTICATION_FAILED", "message": "${AUTH_MESSAGES.AUTHENTICATION_FAILED}"}`;
      }
      if (outcome.kind === "reused") {
        this.#observer.operation?.(operation, false);
        return reusedReply(key);
      }
      if (outcome.kind === "replayed") {
        // Nothing changed: counted as a replay, not audited as a change.
        this.#observer.operation?.(operation, outcome.reply.startsWith('{"success":true'));
        return replayReply(outcome.reply);
      }
      reply = applied!;
    }
    this.#observer.operation?.(operation, reply.ok);
    if (principal && reply.ok) this.#observer.changed?.(principal, operation, scopeOf(request));
    return reply.text;
  }

  /** The request's idempotency key, if it has one (checked). */
  #idempotencyKey(request: Request): string | undefined {
    const given = request[IDEMPOTENCY_FIELD];
    if (given === undefined) return undefined;
    const parsed = IdempotencyKey.safeParse(given);
    if (!parsed.success) {
      throw new WrapperError(
        `${IDEMPOTENCY_FIELD} ${parsed.error.issues[0]?.message ?? "is not valid"}`,
      );
    }
    return parsed.data;
  }

  /** The caller's principal, or the reply refusing the request. */
  async #authorize(
    operation: string,
    request: Request,
    client: Uint8Array | undefined,
  ): Promise<Principal | string> {
    const scope = scopeOf(request);
    try {
      const token = request.token;
      if (typeof token !== "string" || token === "") {
        throw new AuthError("AUTHENTICATION_REQUIRED", "no token");
      }
      // A digest: a client address may be long (a stack of envelope frames).
      const delivery = client === undefined
        ? undefined
        : createHash("sha256").update(client).digest("base64url");
      const principal = await this.#verify!(token, operation, request, delivery);
      if (principal.call?.redelivered) this.#observer.callReused?.("redelivery");
      const needed = statePermissions(operation, scope) ?? [PERMISSIONS.stateAdmin];
      if (!allows(principal.permissions, ...needed)) {
        throw new AuthError("PERMISSION_DENIED", `${principal.id} lacks ${needed[0]}`);
      }
      return principal;
    } catch (error) {
      // The store could not record a call credential: a storage failure
      // (answered as such by handle), not a bad token.
      if (!(error instanceof AuthError) && storageFailure(error) !== "STORAGE_ERROR") throw error;
      const code = error instanceof AuthError ? error.code : "AUTHENTICATION_FAILED";
      if (error instanceof CallReplayed) this.#observer.callReused?.("replay");
      this.#observer.operation?.(operation, false);
      this.#observer.refused?.(code, operation, scope, (error as Error).message);
      return `{"error": "${code}", "message": "${AUTH_MESSAGES[code]}"}`;
    }
  }

  #parse(json: string): Request {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (error) {
      throw new WrapperError(`invalid request JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new WrapperError("request must be a JSON object");
    }
    return parsed as Request;
  }

  #name(request: Request, field: "service" | "key"): string {
    return this.#checkName(request[field], field);
  }

  /** A scope or key name: a non-empty, well-formed string of at most `maxNameBytes`. */
  #checkName(value: unknown, field: "service" | "key"): string {
    if (typeof value !== "string") throw new WrapperError(`${field} parameter missing`);
    if (value === "") {
      throw new WrapperError(field === "service" ? "empty service scope" : "empty key");
    }
    if (encoder.encode(value).length > this.#maxNameBytes) {
      throw new WrapperError(`${field} is longer than ${this.#maxNameBytes} bytes`);
    }
    // The database stores UTF-8: a lone surrogate would be saved as U+FFFD, under
    // another name than the one acknowledged (and merged with that name's row).
    if (!value.isWellFormed()) {
      throw new WrapperError(`${field} is not valid Unicode (lone surrogate)`);
    }
    return value;
  }

  /** An optional positive integer field of at most `max`. */
  #count(request: Request, field: string, max: number): number | undefined {
    const given = request[field];
    if (given === undefined) return undefined;
    if (typeof given !== "number" || !Number.isSafeInteger(given) || given < 1 || given > max) {
      throw new WrapperError(`${field} must be an integer from 1 to ${max}`);
    }
    return given;
  }

  #value(request: Request, key: string, value: unknown = request.value): string {
    if (typeof value !== "string") throw new WrapperError("value parameter missing");
    // Cheap bound first: a UTF-8 byte is at least a third of a UTF-16 unit's worth.
    if (value.length * 3 > this.#maxValueBytes) {
      const bytes = encoder.encode(value).length;
      if (bytes > this.#maxValueBytes) {
        this.#observer.badRequest?.("value too large");
        throw new CallbackError(
          `Value for key '${key}' is ${bytes} bytes, more than the limit of ${this.#maxValueBytes}`,
        );
      }
    }
    // Stored as UTF-8, a lone surrogate would come back as U+FFFD after a restart.
    if (!value.isWellFormed()) {
      throw new WrapperError("value is not valid Unicode (lone surrogate)");
    }
    return value;
  }

  #operations: Record<string, (request: Request) => Promise<string> | string> = {
    "state-get": async (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      return success({ key, scope, value: (await this.#store.get(scope, key))?.value ?? "" });
    },
    "list-scopes": async () => {
      const scopes = await this.#store.scopes();
      return success({ count: scopes.length, scopes });
    },
    "list-keys": async (request) => {
      const scope = this.#name(request, "service");
      const keys = await this.#store.keys(scope);
      if (!keys) throw new CallbackError(`Scope '${scope}' does not exist`);
      return success({ count: keys.length, keys, scope });
    },
    "health": async () => {
      try {
        await this.#store.ping();
      } catch (error) {
        // Reads fail too: a gateway's state_store check goes DOWN, its state_writes names why.
        return success({
          service: STATE_SERVICE,
          status: "unavailable",
          store_available: false,
          write_failure: storageFailure(error),
        });
      }
      const failing = this.#writeFailure?.();
      // Go plantd's reply while writes work; "degraded" and the failure's class while they fail.
      return success({
        service: STATE_SERVICE,
        status: failing ? "degraded" : "healthy",
        store_available: true,
        ...(failing ? { write_failure: failing } : {}),
      });
    },
    "state-get-many": async (request) => {
      const scope = this.#name(request, "service");
      const keys = request.keys;
      if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k !== "")) {
        throw new WrapperError("keys parameter missing (an array of non-empty strings)");
      }
      if (keys.length > this.#maxBatch) throw new WrapperError(`more than ${this.#maxBatch} keys`);
      const entries = await this.#store.getMany(scope, keys as string[]);
      if (!entries) throw new CallbackError(`Scope '${scope}' does not exist`);
      const found: Record<string, unknown> = {};
      (keys as string[]).forEach((key, i) => {
        const entry = entries[i];
        found[key] = entry
          ? { revision: entry.revision, updated_at: entry.updatedAt, value: entry.value }
          : null;
      });
      return success({ entries: sorted(found), scope });
    },
    "state-history": async (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      const limit = this.#count(request, "limit", MAX_HISTORY_PAGE) ?? DEFAULT_HISTORY_PAGE;
      const before = this.#count(request, "before", Number.MAX_SAFE_INTEGER);
      // A key's history outlives it (and its scope): no "does not exist" here.
      const entries = await this.#store.history(scope, key, limit, before);
      return success({ entries: entries.map(historyJson), key, scope });
    },
    "state-history-delete": async (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      const deleted = await this.#store.deleteHistory(scope, key);
      return success({ deleted, key, scope, status: "deleted" });
    },
  };
  /** The write operations: each checks its request and plans its write. */
  #writes: Record<string, (request: Request) => WritePlan> = {
    "create-scope": (request) => {
      const scope = this.#name(request, "service");
      return {
        write: { kind: "create-scope", scope },
        args: { service: scope },
        reply: (result) =>
          result.kind === "scope" && !result.changed
            ? failed(`Scope '${scope}' already exists`)
            : succeeded({ scope, status: "created" }),
      };
    },
    "delete-scope": (request) => {
      const scope = this.#name(request, "service");
      return {
        write: { kind: "delete-scope", scope },
        args: { service: scope },
        reply: (result) =>
          result.kind === "scope" && !result.changed
            ? failed(`Scope '${scope}' does not exist`)
            : succeeded({ scope, status: "deleted" }),
      };
    },
    "state-set": (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      const value = this.#value(request, key);
      return {
        write: { kind: "set", scope, entries: [[key, value]] },
        args: { service: scope, key, value },
        reply: () => succeeded({ key, scope, status: "set", value }),
      };
    },
    "delete": (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      // Keyed, the reply says whether the key existed: a replay then gives
      // the gateway the first answer (404 or 200) rather than today's state.
      const keyed = request[IDEMPOTENCY_FIELD] !== undefined;
      return {
        write: { kind: "delete", scope, key },
        args: { service: scope, key },
        reply: (result) =>
          succeeded({
            key,
            scope,
            status: "deleted",
            ...(keyed ? { existed: result.kind === "delete" && result.existed } : {}),
          }),
      };
    },
    "state-set-many": (request) => {
      const scope = this.#name(request, "service");
      const given = request.entries;
      if (typeof given !== "object" || given === null || Array.isArray(given)) {
        throw new WrapperError("entries parameter missing (an object of key: string value)");
      }
      const pairs = Object.entries(given as Record<string, unknown>);
      if (pairs.length === 0) throw new WrapperError("entries parameter is empty");
      if (pairs.length > this.#maxBatch) {
        throw new WrapperError(`more than ${this.#maxBatch} entries`);
      }
      const checked = pairs.map(([key, value]) => {
        this.#checkName(key, "key");
        return [key, this.#value(request, key, value)] as const;
      });
      return {
        write: { kind: "set", scope, entries: checked },
        // Pairs, sorted: an object would drop or mangle a "__proto__" key.
        args: { service: scope, entries: [...checked].sort(([a], [b]) => a < b ? -1 : 1) },
        reply: (result) => {
          const revisions: Record<string, number> = {};
          if (result.kind === "set") {
            checked.forEach(([key], i) => revisions[key] = result.revisions[i]!);
          }
          return succeeded({ revisions: sorted(revisions), scope, status: "set" });
        },
      };
    },
    "state-cas": (request) => {
      const scope = this.#name(request, "service");
      const key = this.#name(request, "key");
      const value = this.#value(request, key);
      const expected = request.revision;
      if (typeof expected !== "number" || !Number.isInteger(expected) || expected < 0) {
        throw new WrapperError("revision parameter missing (0 for a key that must not exist)");
      }
      return {
        write: { kind: "set", scope, entries: [[key, value]], expected },
        args: { service: scope, key, value, revision: expected },
        reply: (result) => {
          if (result.kind === "conflict") {
            return failed(
              `Revision mismatch for key '${key}': expected ${expected}, current ${result.current}`,
              { current_revision: result.current, key, scope },
            );
          }
          const revision = result.kind === "set" ? result.revisions[0]! : 0;
          return succeeded({ key, revision, scope, status: "set", value });
        },
      };
    },
  };
}
