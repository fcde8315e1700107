/**
 * `/api/buses`: which buses there are, and publishing on them over REST
 * (`bus:publish:<bus>:<topic>`). Subscribing is the WebSocket's job.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { busPublish } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import type { BusHub } from "../bus_hub.ts";
import type { BusOutlet } from "../bus_outlet.ts";
import { errorResponses } from "./schemas.ts";

const listBuses = createRoute({
  method: "get",
  path: "/api/buses",
  summary: "Buses to subscribe to (WebSocket) and to publish on",
  responses: {
    200: {
      description: "Buses",
      content: {
        "application/json": {
          schema: z.object({ subscribe: z.array(z.string()), publish: z.array(z.string()) }),
        },
      },
    },
  },
});

const publish = createRoute({
  method: "post",
  path: "/api/buses/{bus}/messages",
  summary: "Publish one message on a bus",
  request: {
    params: z.object({
      bus: z.string().min(1).max(255).openapi({ param: { name: "bus", in: "path" } }),
    }),
    body: {
      content: {
        "application/json": {
          schema: z.object({
            topic: z.string().min(1).max(1024).openapi({ example: "org.plantd.Event.alarm" }),
            payload: z.string().openapi({ example: '{"level":"high"}' }),
            encoding: z.enum(["text", "base64"]).optional(),
            form: z.enum(["single", "frames"]).optional().openapi({
              description: "frames: [topic, payload] (default, the topic arrives whole); single: " +
                "Go plantd's one frame, for Go subscribers, split by a subscriber at the longest " +
                "envelope or subscription it knows",
            }),
          }).openapi("Publish"),
        },
      },
      required: true,
    },
  },
  responses: {
    202: {
      description: "Handed to the bus (a bus drops what nobody subscribed to)",
      content: {
        "application/json": {
          schema: z.object({ bus: z.string(), topic: z.string(), bytes: z.number().int() }),
        },
      },
    },
    ...errorResponses(400, 401, 403, 404, 413, 415),
  },
});

/** Adds the bus routes to `app`. */
export function busRoutes(app: OpenAPIHono, hub: BusHub, outlet: BusOutlet, guard: Guard): void {
  app.openapi(listBuses, (c) => c.json({ subscribe: hub.buses, publish: outlet.buses }, 200));

  app.openapi(publish, (c) => {
    const { bus } = c.req.valid("param");
    const message = c.req.valid("json");
    authorize(c, guard, busPublish(bus, message.topic));
    const bytes = outlet.publish({ bus, ...message });
    return c.json({ bus, topic: message.topic, bytes }, 202);
  });
}
