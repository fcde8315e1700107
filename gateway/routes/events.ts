/**
 * `GET /api/events`: the event history the metrics ingester records from the
 * event buses (docs/events.md), newest first, filtered by time, device,
 * severity, bus and topic prefix, read from the metrics store as
 * `GET /api/metrics` is. Pages continue with `before`, the `next` cursor of
 * the previous page. Live events need no route: subscribe to bus `event` on
 * `/ws`.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { parseRfc3339 } from "../../metrics/point.ts";
import type { StoredEvent } from "../../metrics/event.ts";
import { type MetricsReader, MetricsUnavailableError } from "../../metrics/store.ts";
import { PERMISSIONS } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { ApiError } from "../errors.ts";
import { errorResponses, jsonResponse } from "./schemas.ts";

/** Most events one page may hold. */
export const MAX_EVENTS = 1000;

const CURSOR = /^(-?\d{1,16})_(\d{1,19})$/;

const time = (what: string) =>
  z.string().refine((text) => !Number.isNaN(parseRfc3339(text)), {
    message: `${what} must be an RFC 3339 time such as 2024-01-01T00:00:00Z`,
  }).optional().openapi({ param: { name: what, in: "query" }, example: "2024-01-01T00:00:00Z" });

const text = (what: string, example: string) =>
  z.string().min(1).max(256).optional().openapi({ param: { name: what, in: "query" }, example });

const EventsQuery = z.object({
  from: time("from"),
  to: time("to"),
  device: text("device", "pump1"),
  severity: text("severity", "critical"),
  bus: text("bus", "event"),
  topic_prefix: z.string().max(1024).optional().openapi({
    param: { name: "topic_prefix", in: "query" },
    example: "alarm.",
    description: "Only topics that start with this (compared as text, case-sensitive)",
  }),
  before: z.string().regex(CURSOR, "before must be the next cursor of a previous page")
    .optional().openapi({
      param: { name: "before", in: "query" },
      description: "The `next` cursor of the previous page",
    }),
  limit: z.coerce.number().int().min(1).max(MAX_EVENTS).default(100).openapi({
    param: { name: "limit", in: "query" },
    example: 100,
  }),
});

const EventSchema = z.object({
  id: z.number().int(),
  time: z.string().openapi({
    description: "The payload's `time` when it had an RFC 3339 one, else when it was received",
  }),
  bus: z.string(),
  topic: z.string(),
  device: z.string().nullable(),
  severity: z.string().nullable(),
  kind: z.string().nullable(),
  payload: z.unknown().openapi({ description: "The payload: its JSON value, or the text" }),
}).openapi("Event");

const PageSchema = z.object({
  events: z.array(EventSchema),
  next: z.string().optional().openapi({
    description: "Cursor of the next (older) page, when this one is full",
  }),
}).openapi("EventPage");

const getEvents = createRoute({
  method: "get",
  path: "/api/events",
  summary: "Event history, newest first (events:read)",
  description: "Events recorded from the event buses by the metrics ingester. from is " +
    "inclusive, to exclusive; without them every stored event qualifies. At most " +
    `${MAX_EVENTS} per page; pass next as before for the next page.`,
  request: { query: EventsQuery },
  responses: {
    200: jsonResponse(PageSchema, "Events, newest first"),
    ...errorResponses(400, 401, 403, 503),
  },
});

function payloadOf(event: StoredEvent): unknown {
  const first = event.payload.trimStart()[0];
  if (first === "{" || first === "[") {
    try {
      return JSON.parse(event.payload);
    } catch {
      // Text that looks like JSON and is not.
    }
  }
  return event.payload;
}

/** Adds `/api/events` to `app`; without a reader it answers 503. */
export function eventsRoutes(
  app: OpenAPIHono,
  reader: MetricsReader | undefined,
  guard: Guard,
): void {
  app.openapi(getEvents, async (c) => {
    authorize(c, guard, PERMISSIONS.eventsRead);
    const q = c.req.valid("query");
    if (!reader) {
      throw new ApiError("SERVICE_UNAVAILABLE", "No metrics store configured on this gateway");
    }
    const from = q.from === undefined ? undefined : parseRfc3339(q.from);
    const to = q.to === undefined ? undefined : parseRfc3339(q.to);
    if (from !== undefined && to !== undefined && from >= to) {
      throw new ApiError("BAD_REQUEST", "from must be before to");
    }
    const cursor = q.before === undefined ? undefined : CURSOR.exec(q.before)!;
    let rows: StoredEvent[];
    try {
      rows = await reader.queryEvents({
        from,
        to,
        device: q.device,
        severity: q.severity,
        bus: q.bus,
        topicPrefix: q.topic_prefix,
        before: cursor ? { time: Number(cursor[1]), id: Number(cursor[2]) } : undefined,
        limit: q.limit,
      });
    } catch (error) {
      if (error instanceof MetricsUnavailableError) {
        throw new ApiError("SERVICE_UNAVAILABLE", error.message);
      }
      throw error;
    }
    const last = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return c.json({
      events: rows.map((row) => ({
        id: row.id,
        time: new Date(row.time).toISOString(),
        bus: row.bus,
        topic: row.topic,
        device: row.device,
        severity: row.severity,
        kind: row.kind,
        payload: payloadOf(row),
      })),
      ...(last ? { next: `${last.time}_${last.id}` } : {}),
    }, 200);
  });
}
