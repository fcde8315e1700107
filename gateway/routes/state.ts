/**
 * `/api/state`: the state store over REST. Scopes and keys are path segments
 * (URL-encoded as needed); values are strings, sent as JSON `{"value": "…"}`
 * or as a `text/plain` body. `If-Match: <revision>` makes a PUT a
 * compare-and-set; revisions also come back as ETags. Writes take an
 * `Idempotency-Key` (gateway/idempotency.ts): a retry with it is answered
 * with the first reply, marked `Idempotent-Replayed: true`.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { HonoRequest } from "hono";
import type { Context } from "hono";
import { statePermissions } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import type { Principal } from "../../auth/tokens.ts";
import { authorize } from "../auth/http.ts";
import { ApiError } from "../errors.ts";
import { ReplyTemplates } from "../reply_templates.ts";
import { IDEMPOTENCY_HEADER, idempotencyKeyHeader, REPLAYED_HEADER } from "../idempotency.ts";
import type { SecureHeaders } from "../secure_headers.ts";
import type { StateClient, StateEntry } from "../../state/client.ts";
import { DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE, STATE_SERVICE } from "../../state/operations.ts";
import { errorResponses, jsonResponse as json } from "./schemas.ts";

// deno-lint-ignore no-control-regex
const NO_CONTROL = /^[^\u0000-\u001f]+$/;
const name = (what: string) =>
  z.string().min(1).max(1024).regex(NO_CONTROL, `${what} must not contain control characters`);

/** Whether `value` passes {@link name}'s checks (without building zod's result). */
function plainName(value: string | undefined): value is string {
  return value !== undefined && value.length <= 1024 && NO_CONTROL.test(value);
}
const Scope = name("scope").openapi({ param: { name: "scope", in: "path" }, example: "plant" });
const Key = name("key").openapi({ param: { name: "key", in: "path" }, example: "setpoint" });

const EntrySchema = z.object({
  scope: z.string(),
  key: z.string(),
  value: z.string(),
  revision: z.number().int(),
  updated_at: z.number().int().openapi({ description: "ms since the epoch" }),
}).openapi("Entry");

const ValueBody = z.object({ value: z.string() }).openapi("ValueBody");
/**
 * Documented here, parsed by idempotencyKeyHeader: zod would check the raw
 * text, not the structured-field string it carries.
 */
const IdempotencyKeyHeader = z.object({
  "idempotency-key": z.string().optional().openapi({
    description:
      'Apply this write at most once per key (a quoted structured-field string, "…", or a bare value; 1..255 printable ASCII). A retry with the key gets the first reply with Idempotent-Replayed: true; the key with another request: 422',
  }),
});
const IfMatch = IdempotencyKeyHeader.extend({
  "if-match": z.string().regex(/^"?\d+"?$/, "If-Match must be a revision number").optional()
    .openapi({ description: "Revision the key must have now (0: must not exist)" }),
});

const listScopes = createRoute({
  method: "get",
  path: "/api/state",
  summary: "List scopes",
  responses: {
    200: json(z.object({ count: z.number().int(), scopes: z.array(z.string()) }), "Scopes"),
    ...errorResponses(502, 503, 504),
  },
});

const listKeys = createRoute({
  method: "get",
  path: "/api/state/{scope}",
  summary: "List the keys of a scope, or read several keys with ?keys=a,b",
  request: {
    params: z.object({ scope: Scope }),
    query: z.object({
      keys: z.string().optional().openapi({ description: "Comma-separated keys to read" }),
    }),
  },
  responses: {
    200: json(
      z.object({
        scope: z.string(),
        count: z.number().int().optional(),
        keys: z.array(z.string()).optional(),
        entries: z.record(z.string(), EntrySchema.nullable()).optional(),
      }),
      "Keys, or entries when ?keys= is given",
    ),
    ...errorResponses(400, 404, 502, 503, 504),
  },
});

const createScope = createRoute({
  method: "put",
  path: "/api/state/{scope}",
  summary: "Create a scope",
  request: { params: z.object({ scope: Scope }), headers: IdempotencyKeyHeader },
  responses: {
    201: json(z.object({ scope: z.string(), status: z.literal("created") }), "Created"),
    ...errorResponses(400, 409, 422, 502, 503, 504, 507),
  },
});

const setMany = createRoute({
  method: "post",
  path: "/api/state/{scope}",
  summary: "Set several keys at once (atomic)",
  request: {
    params: z.object({ scope: Scope }),
    headers: IdempotencyKeyHeader,
    body: {
      content: {
        "application/json": {
          schema: z.object({ entries: z.record(name("key"), z.string()) }).openapi("SetMany"),
        },
      },
      required: true,
    },
  },
  responses: {
    200: json(
      z.object({ scope: z.string(), revisions: z.record(z.string(), z.number().int()) }),
      "New revisions",
    ),
    ...errorResponses(400, 413, 415, 422, 502, 503, 504, 507),
  },
});

const deleteScope = createRoute({
  method: "delete",
  path: "/api/state/{scope}",
  summary: "Delete a scope and its keys",
  request: { params: z.object({ scope: Scope }), headers: IdempotencyKeyHeader },
  responses: {
    200: json(z.object({ scope: z.string(), status: z.literal("deleted") }), "Deleted"),
    ...errorResponses(400, 404, 422, 502, 503, 504, 507),
  },
});

const getKey = createRoute({
  method: "get",
  path: "/api/state/{scope}/{key}",
  summary: "Read a key",
  request: { params: z.object({ scope: Scope, key: Key }) },
  responses: {
    200: json(EntrySchema, "The value with its revision (also in ETag)"),
    ...errorResponses(400, 404, 502, 503, 504),
  },
});

const putKey = createRoute({
  method: "put",
  path: "/api/state/{scope}/{key}",
  summary: "Write a key (creates the scope if needed); If-Match makes it compare-and-set",
  request: {
    params: z.object({ scope: Scope, key: Key }),
    headers: IfMatch,
    body: {
      description: 'The value: JSON `{"value": "…"}` or the text itself',
      content: {
        "application/json": { schema: ValueBody },
        "text/plain": { schema: z.string() },
      },
      // Not marked required: the validator would then demand JSON of text bodies.
      required: false,
    },
  },
  responses: {
    200: json(EntrySchema.omit({ updated_at: true }), "Written"),
    ...errorResponses(400, 409, 413, 415, 422, 502, 503, 504, 507),
  },
});

const deleteKey = createRoute({
  method: "delete",
  path: "/api/state/{scope}/{key}",
  summary: "Delete a key",
  request: { params: z.object({ scope: Scope, key: Key }), headers: IdempotencyKeyHeader },
  responses: {
    200: json(
      z.object({ scope: z.string(), key: z.string(), status: z.literal("deleted") }),
      "Deleted",
    ),
    ...errorResponses(400, 404, 422, 502, 503, 504, 507),
  },
});

const HistorySchema = z.object({
  id: z.number().int().openapi({ description: "Orders the changes; `before` of the next page" }),
  revision: z.number().int().openapi({
    description: "The key's revision after a set; the revision a delete removed",
  }),
  op: z.enum(["set", "delete"]),
  old_value: z.string().nullable().openapi({ description: "null: the key did not exist" }),
  new_value: z.string().nullable().openapi({ description: "null: the key was deleted" }),
  actor: z.string().openapi({
    description: 'Who made the change: the caller\'s principal id, or "anonymous"',
    example: "user:alice",
  }),
  at: z.number().int().openapi({ description: "ms since the epoch" }),
}).openapi("HistoryEntry");

const PageNumber = (max: number) => z.coerce.number().int().min(1).max(max).optional();

const keyHistory = createRoute({
  method: "get",
  path: "/api/state/{scope}/{key}/history",
  summary: "A key's history: who changed it, when, old and new value (newest first)",
  request: {
    params: z.object({ scope: Scope, key: Key }),
    query: z.object({
      limit: PageNumber(MAX_HISTORY_PAGE).openapi({
        description: `Changes at most (1-${MAX_HISTORY_PAGE}, default ${DEFAULT_HISTORY_PAGE})`,
      }),
      before: PageNumber(Number.MAX_SAFE_INTEGER).openapi({
        description: "Only changes older than this id (the previous page's next_before)",
      }),
    }),
  },
  responses: {
    200: json(
      z.object({
        scope: z.string(),
        key: z.string(),
        entries: z.array(HistorySchema),
        next_before: z.number().int().nullable().openapi({
          description: "`before` of the next page; null when this page is the last",
        }),
      }),
      "The key's changes, newest first (empty when it has none)",
    ),
    ...errorResponses(400, 502, 503, 504),
  },
});

const deleteKeyHistory = createRoute({
  method: "delete",
  path: "/api/state/{scope}/{key}/history",
  summary: "Delete a key's history (state admin)",
  request: { params: z.object({ scope: Scope, key: Key }) },
  responses: {
    200: json(
      z.object({
        scope: z.string(),
        key: z.string(),
        status: z.literal("deleted"),
        deleted: z.number().int().openapi({ description: "Changes deleted" }),
      }),
      "Deleted",
    ),
    ...errorResponses(400, 502, 503, 504),
  },
});

/**
 * The value of a PUT: `{"value": "…"}` for JSON (already validated by the
 * route), else the body as text. Hono caches the body, so reading it again
 * after validation is fine.
 */
async function readValue(request: HonoRequest): Promise<string> {
  const type = request.header("content-type") ?? "";
  if (type.startsWith("application/json")) {
    const parsed = ValueBody.safeParse(await request.json().catch(() => undefined));
    if (!parsed.success) throw new ApiError("BAD_REQUEST", 'Body must be {"value": "<string>"}');
    return parsed.data.value;
  }
  if (type === "" || type.startsWith("text/plain")) return await request.text();
  // The pipeline refuses other types first (routes/body.ts); kept for any other caller.
  throw new ApiError(
    "UNSUPPORTED_MEDIA_TYPE",
    `Content type '${type}' is not accepted: send application/json, text/plain`,
  );
}

/**
 * zod's record drops a key named "__proto__" without a word (prototype
 * safety), which would acknowledge a batch and not store one of its entries:
 * put it back from the parsed body (JSON.parse makes it an own property), with
 * the same checks as every other entry.
 */
function withProtoKey(
  checked: Record<string, string>,
  body: { entries?: Record<string, unknown> },
): Record<string, string> {
  const given = body.entries;
  if (!given || !Object.hasOwn(given, "__proto__")) return checked;
  const value = given["__proto__"];
  if (typeof value !== "string") {
    throw new ApiError("BAD_REQUEST", "entries.__proto__: Invalid input: expected string");
  }
  return Object.fromEntries([...Object.entries(checked), ["__proto__", value]]);
}

/** Adds the state routes to `app`. */
export function stateRoutes(
  app: OpenAPIHono,
  client: StateClient,
  guard: Guard,
  headers: SecureHeaders,
  /** Cached entries whose whole reply is kept ready. @default 10000 */
  maxReplies = 10_000,
): void {
  /**
   * Each operation's permissions that hold for every scope: a caller holding
   * one of them (most do) is allowed before the scoped names are built.
   */
  const anyScope = new Map<string, string[]>();
  /** The client of a principal, made once (cached principals come back as the same object). */
  const clients = new WeakMap<Principal, StateClient>();
  /** Checks the operation's permission; the API then sends call credentials for the caller. */
  const allowed = (c: Context, operation: string, scope?: string): StateClient => {
    const principal = c.get("principal");
    let global = anyScope.get(operation);
    if (global === undefined) {
      anyScope.set(operation, global = statePermissions(operation, undefined)!);
    }
    if (!guard.allows(principal, ...global)) {
      authorize(c, guard, ...statePermissions(operation, scope)!);
    }
    if (!guard.enabled) return client;
    let own = clients.get(principal);
    if (own === undefined) {
      own = client.as((op, request) => guard.stateRequest(principal, STATE_SERVICE, op, request));
      clients.set(principal, own);
    }
    return own;
  };
  /** The request's Idempotency-Key, if it has one (a 400 when malformed). */
  const idempotencyKey = (c: Context) => idempotencyKeyHeader(c.req.header(IDEMPOTENCY_HEADER));
  /** Marks a replayed reply; false when the write was applied now (and is audited then). */
  const replay = (c: Context, written: { replayed: boolean }): boolean => {
    if (written.replayed) c.header(REPLAYED_HEADER, "true");
    return written.replayed;
  };
  /** Audits a change made through the gateway (with authentication on: then it has a who). */
  const changed = (c: Context, action: string, target: string, details?: object) => {
    if (!guard.enabled) return;
    guard.audit({
      time: Date.now(),
      actor: c.get("principal").id,
      action,
      target,
      outcome: "success",
      ip: c.get("clientIp"),
      ...(details ? { details: { ...details } } : {}),
    });
  };

  app.openapi(listScopes, async (c) => {
    const scopes = await allowed(c, "list-scopes").listScopes();
    return c.json({ count: scopes.length, scopes }, 200);
  });

  app.openapi(listKeys, async (c) => {
    const { scope } = c.req.valid("param");
    const { keys } = c.req.valid("query");
    if (keys !== undefined) {
      const wanted = keys.split(",").filter((k) => k !== "");
      if (wanted.length === 0) throw new ApiError("BAD_REQUEST", "?keys= names no key");
      const found = await allowed(c, "state-get-many", scope).getMany(scope, wanted);
      const entries: Record<string, z.infer<typeof EntrySchema> | null> = {};
      for (const [key, entry] of Object.entries(found)) {
        entries[key] = entry ? { scope, key, ...entry } : null;
      }
      return c.json({ scope, entries }, 200);
    }
    const list = await allowed(c, "list-keys", scope).listKeys(scope);
    return c.json({ scope, count: list.length, keys: list }, 200);
  });

  app.openapi(createScope, async (c) => {
    const { scope } = c.req.valid("param");
    const state = allowed(c, "create-scope", scope);
    if (!replay(c, await state.createScope(scope, idempotencyKey(c)))) {
      changed(c, "state.scope.create", scope);
    }
    return c.json({ scope, status: "created" as const }, 201);
  });

  app.openapi(setMany, async (c) => {
    const { scope } = c.req.valid("param");
    const entries = withProtoKey(c.req.valid("json").entries, await c.req.json());
    if (Object.keys(entries).length === 0) throw new ApiError("BAD_REQUEST", "entries is empty");
    const state = allowed(c, "state-set-many", scope);
    const written = await state.setMany(scope, entries, idempotencyKey(c));
    const revisions = written.revisions;
    if (!replay(c, written)) {
      changed(c, "state.set", scope, { keys: Object.keys(entries), revisions });
    }
    return c.json({ scope, revisions }, 200);
  });

  app.openapi(deleteScope, async (c) => {
    const { scope } = c.req.valid("param");
    const state = allowed(c, "delete-scope", scope);
    if (!replay(c, await state.deleteScope(scope, idempotencyKey(c)))) {
      changed(c, "state.scope.delete", scope);
    }
    return c.json({ scope, status: "deleted" as const }, 200);
  });

  app.openapi(keyHistory, async (c) => {
    const { scope, key } = c.req.valid("param");
    const { limit, before } = c.req.valid("query");
    const entries = await allowed(c, "state-history", scope).history(scope, key, { limit, before });
    // A full page may have more behind it; a short one is the last.
    const full = entries.length === (limit ?? DEFAULT_HISTORY_PAGE) && entries.length > 0;
    return c.json({ scope, key, entries, next_before: full ? entries.at(-1)!.id : null }, 200);
  });

  app.openapi(deleteKeyHistory, async (c) => {
    const { scope, key } = c.req.valid("param");
    const deleted = await allowed(c, "state-history-delete", scope).deleteHistory(scope, key);
    changed(c, "state.history.delete", scope, { keys: [key], deleted });
    return c.json({ scope, key, status: "deleted" as const, deleted }, 200);
  });

  // The hottest route (a cached read is served from memory). Parameters: names
  // that pass the schema's checks go straight through (only a refusal asks the
  // schema, for its message), skipping the generic validator middleware, which
  // cost more than half of this route's time. The reply is built with its
  // security headers in one go.
  app.openAPIRegistry.registerPath(getKey);
  const keyParams = getKey.request.params;
  app.get("/api/state/:scope/:key", (c): Response | Promise<Response> => {
    const scope = c.req.param("scope");
    const key = c.req.param("key");
    if (!plainName(scope) || !plainName(key)) {
      const parsed = keyParams.safeParse({ scope, key });
      const issue = parsed.error?.issues[0];
      throw new ApiError("BAD_REQUEST", `${issue?.path.join(".")}: ${issue?.message ?? "invalid"}`);
    }
    // A cached read answers without a promise: an async step is a measurable share of its cost.
    return allowed(c, "state-get", scope).readOne(
      scope,
      key,
      (entry) => entryResponse(scope, key, entry),
    );
  });

  const replies = new ReplyTemplates<StateEntry>(maxReplies);
  const entryResponse = (scope: string, key: string, entry: StateEntry | null): Response => {
    if (!entry) {
      throw new ApiError("KEY_NOT_FOUND", `Key '${key}' does not exist in scope '${scope}'`);
    }
    const reply = replies.reply(entry, scope, key, () => {
      // Named fields: the same order whichever way the entry reached the cache.
      const body = JSON.stringify({
        scope,
        key,
        value: entry.value,
        revision: entry.revision,
        updated_at: entry.updated_at,
      });
      const own = { "content-type": "application/json", etag: `"${entry.revision}"` };
      return new Response(body, { status: 200, headers: headers.apiHeaders(own) });
    });
    return headers.mark(reply);
  };

  app.openapi(putKey, async (c) => {
    const { scope, key } = c.req.valid("param");
    const ifMatch = c.req.valid("header")["if-match"];
    const expected = ifMatch === undefined ? undefined : Number(ifMatch.replaceAll('"', ""));
    const state = allowed(c, expected === undefined ? "state-set" : "state-cas", scope);
    const value = await readValue(c.req);
    const written = await state.set(scope, key, value, expected, idempotencyKey(c));
    const revision = written.revision;
    if (!replay(c, written)) {
      changed(c, "state.set", scope, { keys: [key], revisions: { [key]: revision } });
    }
    c.header("etag", `"${revision}"`);
    return c.json({ scope, key, value, revision }, 200);
  });

  app.openapi(deleteKey, async (c) => {
    const { scope, key } = c.req.valid("param");
    const state = allowed(c, "delete", scope);
    // Go plantd's delete answers "deleted" for a missing key; REST says 404 to
    // callers who may read the scope (to others, whether it existed is not theirs to know).
    const mayRead = guard.allows(c.get("principal"), ...statePermissions("state-get", scope)!);
    const notFound = (headers?: Record<string, string>) =>
      new ApiError(
        "KEY_NOT_FOUND",
        `Key '${key}' does not exist in scope '${scope}'`,
        undefined,
        headers,
      );
    const idempotent = idempotencyKey(c);
    if (idempotent === undefined) {
      if (mayRead && !(await state.getMany(scope, [key]))[key]) throw notFound();
      await state.delete(scope, key);
    } else {
      // Whether the key existed comes with the (stored) reply: a retry gets the first answer.
      const written = await state.delete(scope, key, idempotent);
      if (mayRead && written.existed === false) {
        throw notFound(written.replayed ? { [REPLAYED_HEADER]: "true" } : {});
      }
      if (replay(c, written)) return c.json({ scope, key, status: "deleted" as const }, 200);
    }
    changed(c, "state.delete", scope, { keys: [key] });
    return c.json({ scope, key, status: "deleted" as const }, 200);
  });
}
