/**
 * `GET` and `PUT /api/console/layout`: the dashboard's metric panels (which
 * series each chart plots, over which window), one layout per principal,
 * kept in the state service (scope `plantd.console`, key: the principal's id;
 * with authentication off everyone is `anonymous` and shares one layout).
 *
 * The gateway writes there as itself, with a grant for that scope only: a
 * user who may read metrics may keep a layout without any state permission,
 * and never reaches another user's key (the key is the caller's id).
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { PERMISSIONS } from "../../auth/permissions.ts";
import { ServiceCallError } from "../../mdp/errors.ts";
import type { StateClient } from "../../state/client.ts";
import { STATE_SERVICE } from "../../state/operations.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { errorResponses } from "./schemas.ts";

/** The state scope holding every layout. */
export const LAYOUT_SCOPE = "plantd.console";
/** Most panels in a layout, and series in a panel: a page of charts, not a store of data. */
export const MAX_PANELS = 12;
export const MAX_SERIES_PER_PANEL = 8;

const Name = z.string().min(1).max(256);

const PanelSchema = z.object({
  window: z.enum(["15m", "1h", "24h", "7d"]),
  series: z.array(z.object({ device: Name, channel: Name }).strict())
    .max(MAX_SERIES_PER_PANEL),
}).strict().openapi("ConsolePanel");

const LayoutSchema = z.object({
  panels: z.array(PanelSchema).max(MAX_PANELS),
}).strict().openapi("ConsoleLayout");

const LayoutReply = z.object({
  layout: LayoutSchema.nullable().openapi({ description: "null: none saved yet" }),
}).openapi("ConsoleLayoutReply");

const getLayout = createRoute({
  method: "get",
  path: "/api/console/layout",
  summary: "The caller's dashboard layout (metric panels and their series)",
  description: "One layout per principal (one shared layout with authentication off). " +
    "Needs metrics:read.",
  responses: {
    200: { description: "The layout", content: { "application/json": { schema: LayoutReply } } },
    ...errorResponses(401, 403, 503),
  },
});

const putLayout = createRoute({
  method: "put",
  path: "/api/console/layout",
  summary: "Saves the caller's dashboard layout",
  description: `At most ${MAX_PANELS} panels of at most ${MAX_SERIES_PER_PANEL} series each. ` +
    "Needs metrics:read.",
  request: {
    body: { content: { "application/json": { schema: LayoutSchema } }, required: true },
  },
  responses: {
    200: { description: "Saved", content: { "application/json": { schema: LayoutReply } } },
    ...errorResponses(400, 401, 403, 415, 503),
  },
});

/** The gateway itself, as the caller of its layout writes. */
const CONSOLE = { id: "gateway:console", name: "console" };

/** Adds the layout routes to `app`, storing through `client`. */
export function layoutRoutes(app: OpenAPIHono, client: StateClient, guard: Guard): void {
  const store = client.as((operation, request) =>
    guard.stateRequest(
      { ...CONSOLE, kind: "token", roles: [], permissions: [] },
      STATE_SERVICE,
      operation,
      request,
    )
  );
  app.openapi(getLayout, async (c) => {
    authorize(c, guard, PERMISSIONS.metricsRead);
    const key = c.get("principal").id;
    let saved: string | undefined;
    try {
      saved = (await store.getMany(LAYOUT_SCOPE, [key]))[key]?.value;
    } catch (error) {
      if (!(error instanceof ServiceCallError && error.code === "SCOPE_NOT_FOUND")) throw error;
    }
    // A stored layout that no longer parses (an older shape) counts as none.
    const parsed = saved === undefined ? undefined : LayoutSchema.safeParse(safeJson(saved));
    return c.json({ layout: parsed?.success ? parsed.data : null }, 200);
  });
  app.openapi(putLayout, async (c) => {
    authorize(c, guard, PERMISSIONS.metricsRead);
    const layout = c.req.valid("json");
    await store.set(LAYOUT_SCOPE, c.get("principal").id, JSON.stringify(layout));
    return c.json({ layout }, 200);
  });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
