/**
 * `/api/services`: the broker's services, and a generic bridge that sends any
 * Majordomo request: the JSON body becomes the request frame after the
 * operation; reply frames come back as text, parsed JSON when they are JSON,
 * and base64 when they are not UTF-8.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Frames } from "../../transport/frames.ts";
import { PERMISSIONS, serviceCall } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize, authorizeCall } from "../auth/http.ts";
import type { Call, ServiceDirectory } from "../../mdp/directory.ts";
import { frameToJson } from "../../mdp/frame_json.ts";
import { ApiError } from "../errors.ts";
import {
  IDEMPOTENCY_HEADER,
  idempotencyKeyHeader,
  keyedBody,
  keyedReply,
  REPLAYED_HEADER,
} from "../idempotency.ts";
import { errorResponses } from "./schemas.ts";

const ServiceInfoSchema = z.object({
  name: z.string(),
  workers: z.number().int(),
  idle: z.number().int(),
  busy: z.number().int(),
  queued: z.number().int(),
}).openapi("ServiceInfo");

const FrameSchema = z.object({
  text: z.string().optional(),
  json: z.unknown().optional(),
  base64: z.string().optional(),
}).openapi("Frame");

const listServices = createRoute({
  method: "get",
  path: "/api/services",
  summary: "Services known to the broker, with worker counts and queue depths",
  responses: {
    200: {
      description: "Services",
      content: {
        "application/json": {
          schema: z.object({ count: z.number().int(), services: z.array(ServiceInfoSchema) }),
        },
      },
    },
    ...errorResponses(503, 504),
  },
});

const callService = createRoute({
  method: "post",
  path: "/api/services/{service}/{operation}",
  summary: "Send a Majordomo request: body frames [operation, JSON body]",
  description: "The body, if any, is JSON (`content-type: application/json`); " +
    "its text becomes the request frame after the operation (`{}` when empty). " +
    "An `Idempotency-Key` (org.plantd.State write operations only) is put in the request's " +
    "`idempotency_key`: a retry with it gets the first reply with `Idempotent-Replayed: true`; " +
    "the key with another request: 422.",
  request: {
    params: z.object({
      service: z.string().min(1).max(255).openapi({ param: { name: "service", in: "path" } }),
      operation: z.string().min(1).max(255).openapi({ param: { name: "operation", in: "path" } }),
    }),
    query: z.object({
      timeout_ms: z.coerce.number().int().min(1).max(300_000).optional(),
    }),
    headers: z.object({
      "idempotency-key": z.string().optional().openapi({
        description: "org.plantd.State writes: apply at most once per key (docs/state.md)",
      }),
    }),
  },
  responses: {
    200: {
      description: "The final reply's frames",
      content: {
        "application/json": {
          schema: z.object({ service: z.string(), frames: z.array(FrameSchema) }),
        },
      },
    },
    ...errorResponses(400, 415, 422, 502, 503, 504),
  },
});

/** Adds the services routes to `app`. */
export function servicesRoutes(
  app: OpenAPIHono,
  call: Call,
  directory: ServiceDirectory,
  guard: Guard,
): void {
  app.openapi(listServices, async (c) => {
    authorize(c, guard, PERMISSIONS.servicesList);
    await directory.refresh();
    if (!directory.brokerReachable) {
      throw new ApiError("SERVICE_UNAVAILABLE", `Broker not reachable: ${directory.lastError}`);
    }
    const services = directory.services().sort((a, b) => a.name.localeCompare(b.name));
    return c.json({ count: services.length, services }, 200);
  });

  app.openapi(callService, async (c) => {
    const { service, operation } = c.req.valid("param");
    const { timeout_ms } = c.req.valid("query");
    // Checked before the body is read: a caller without the grant learns nothing from parsing.
    authorize(c, guard, serviceCall(service));
    const raw = await c.req.text();
    if (raw !== "") {
      try {
        JSON.parse(raw);
      } catch {
        throw new ApiError("BAD_REQUEST", "Body is not valid JSON");
      }
    }
    const keyed = keyedBody(
      service,
      [operation, raw === "" ? "{}" : raw],
      idempotencyKeyHeader(c.req.header(IDEMPOTENCY_HEADER)),
    );
    if (!service.startsWith("mmi.") && service !== "org.plantd.Broker") {
      await directory.require(service);
    }
    const body = authorizeCall(guard, c.get("principal"), c.get("clientIp"), service, keyed.body);
    let frames: Frames = await call(service, body, timeout_ms);
    if (keyed.key !== undefined) {
      const reply = keyedReply(frames);
      frames = reply.frames;
      if (reply.replayed) c.header(REPLAYED_HEADER, "true");
    }
    return c.json({ service, frames: frames.map(frameToJson) }, 200);
  });
}
