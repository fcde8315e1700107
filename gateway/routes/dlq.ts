/**
 * `/api/dlq`: the broker's dead-letter queue of durable requests
 * (docs/durability.md): list, show, replay, delete one, purge. Reading asks
 * `dlq:read`, changing `dlq:write`. The broker answers them as operations of
 * `org.plantd.Broker` (broker/durable_ops.ts).
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { PERMISSIONS } from "../../auth/permissions.ts";
import { BROKER_SERVICE_NAME } from "../../mdp/broker_operations.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import type { Call } from "../../mdp/directory.ts";
import { ApiError, type ApiErrorCode } from "../errors.ts";
import { errorResponses, jsonResponse } from "./schemas.ts";

const FrameSchema = z.object({
  text: z.string().optional(),
  json: z.unknown().optional(),
  base64: z.string().optional(),
});

const DeadLetterSchema = z.object({
  id: z.string().openapi({ description: "The request's journal key, 32 hex digits" }),
  service: z.string(),
  reason: z.enum(["worker_lost", "expired", "caller_lost"]),
  detail: z.string(),
  attempts: z.number().int().openapi({ description: "Workers lost while holding it" }),
  received_at: z.string(),
  dead_at: z.string(),
  failures: z.array(z.object({ at: z.string(), reason: z.string() })),
  replays: z.number().int(),
  operation: z.string().optional().openapi({ description: "Its first body frame (list only)" }),
  body: z.array(FrameSchema).optional().openapi({ description: "Its body frames (show only)" }),
}).openapi("DeadLetter");

const id = z.string().regex(/^[0-9a-f]{32}$/, "id must be 32 lowercase hex digits")
  .openapi({ param: { name: "id", in: "path" } });

const PageSchema = z.object({
  count: z.number().int(),
  dead_letters: z.array(DeadLetterSchema),
  next: z.string().optional(),
  durable: z.literal(false).optional().openapi({
    description: "Present when the broker has no durable services (and so no dead letters)",
  }),
});
const ReplayedSchema = z.object({ id: z.string(), service: z.string(), replayed: z.boolean() });
const DeletedSchema = z.object({ id: z.string(), deleted: z.boolean() });
const PurgedSchema = z.object({ deleted: z.number().int() });

const listDlq = createRoute({
  method: "get",
  path: "/api/dlq",
  summary: "Dead letters, oldest first",
  request: {
    query: z.object({
      service: z.string().min(1).max(255).optional(),
      limit: z.coerce.number().int().min(1).max(1000).optional(),
      after: z.string().regex(/^\d+:[0-9a-f]{32}$/, "after must be a `next` cursor").optional()
        .openapi({ description: "The `next` of the previous page" }),
    }),
  },
  responses: {
    200: jsonResponse(PageSchema, "A page of dead letters; `next` while there may be more"),
    ...errorResponses(400, 503, 504),
  },
});

const showDlq = createRoute({
  method: "get",
  path: "/api/dlq/{id}",
  summary: "One dead letter with its body",
  request: { params: z.object({ id }) },
  responses: {
    200: jsonResponse(DeadLetterSchema, "The dead letter"),
    ...errorResponses(400, 404, 503, 504),
  },
});

const replayDlq = createRoute({
  method: "post",
  path: "/api/dlq/{id}/replay",
  summary: "Route a dead letter again; its reply is kept under its id",
  request: { params: z.object({ id }) },
  responses: {
    200: jsonResponse(ReplayedSchema, "Queued again"),
    ...errorResponses(400, 404, 503, 504),
  },
});

const deleteDlq = createRoute({
  method: "delete",
  path: "/api/dlq/{id}",
  summary: "Delete one dead letter",
  request: { params: z.object({ id }) },
  responses: {
    200: jsonResponse(DeletedSchema, "Deleted"),
    ...errorResponses(400, 404, 503, 504),
  },
});

const purgeDlq = createRoute({
  method: "delete",
  path: "/api/dlq",
  summary: "Delete every dead letter, or every one of a service",
  request: { query: z.object({ service: z.string().min(1).max(255).optional() }) },
  responses: {
    200: jsonResponse(PurgedSchema, "How many were deleted"),
    ...errorResponses(400, 503, 504),
  },
});

const CODES: Record<string, ApiErrorCode> = {
  BAD_REQUEST: "BAD_REQUEST",
  NOT_FOUND: "NOT_FOUND",
  NOT_CONFIGURED: "SERVICE_UNAVAILABLE",
  JOURNAL_UNAVAILABLE: "SERVICE_UNAVAILABLE",
};

/** Asks the broker; its `data` as `schema` reads it, or its failure as an ApiError. */
async function operation<T extends z.ZodType>(
  call: Call,
  name: string,
  params: Record<string, unknown>,
  schema: T,
): Promise<z.infer<T>> {
  const [frame] = await call(BROKER_SERVICE_NAME, [name, JSON.stringify(params)]);
  let reply: { success?: unknown; data?: unknown; error?: unknown; code?: unknown };
  try {
    reply = JSON.parse(new TextDecoder().decode(frame));
  } catch {
    throw new ApiError("UPSTREAM_ERROR", `The broker's ${name} reply is not JSON`);
  }
  if (reply.success === true) {
    const data = schema.safeParse(reply.data);
    if (data.success) return data.data;
    throw new ApiError("UPSTREAM_ERROR", `The broker's ${name} reply has an unexpected shape`);
  }
  throw new ApiError(
    CODES[String(reply.code)] ?? "UPSTREAM_ERROR",
    String(reply.error ?? `${name} failed`),
  );
}

/** Adds the dead-letter routes to `app`. */
export function dlqRoutes(app: OpenAPIHono, call: Call, guard: Guard): void {
  app.openapi(listDlq, async (c) => {
    authorize(c, guard, PERMISSIONS.dlqRead);
    return c.json(await operation(call, "dlq-list", c.req.valid("query"), PageSchema), 200);
  });
  app.openapi(showDlq, async (c) => {
    authorize(c, guard, PERMISSIONS.dlqRead);
    return c.json(await operation(call, "dlq-show", c.req.valid("param"), DeadLetterSchema), 200);
  });
  app.openapi(replayDlq, async (c) => {
    authorize(c, guard, PERMISSIONS.dlqWrite);
    return c.json(await operation(call, "dlq-replay", c.req.valid("param"), ReplayedSchema), 200);
  });
  app.openapi(deleteDlq, async (c) => {
    authorize(c, guard, PERMISSIONS.dlqWrite);
    return c.json(await operation(call, "dlq-delete", c.req.valid("param"), DeletedSchema), 200);
  });
  app.openapi(purgeDlq, async (c) => {
    authorize(c, guard, PERMISSIONS.dlqWrite);
    return c.json(await operation(call, "dlq-purge", c.req.valid("query"), PurgedSchema), 200);
  });
}
