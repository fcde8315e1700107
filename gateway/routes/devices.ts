/**
 * `GET /api/devices`: the devices and channels the metrics store holds, each
 * channel with its newest value and time, for the dashboard's series picker.
 * The store finds them with a loose scan of its series index
 * (metrics/store.ts `series`); a short-lived copy of the answer serves the
 * dashboards that ask at the same moment.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { PERMISSIONS } from "../../auth/permissions.ts";
import {
  type MetricsReader,
  MetricsUnavailableError,
  type SeriesRow,
} from "../../metrics/store.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { ApiError } from "../errors.ts";
import { errorResponses } from "./schemas.ts";

/** Most series one answer lists. */
export const MAX_SERIES = 10_000;
const DEFAULT_SERIES = 1000;
/** How long an answer is reused: new series show within this. */
const REUSE_MS = 2000;

const DevicesQuery = z.object({
  limit: z.coerce.number().int().min(1).max(MAX_SERIES).optional().openapi({
    param: { name: "limit", in: "query" },
    example: 1000,
    description: `Most series (device and channel pairs) to list. Default ${DEFAULT_SERIES}`,
  }),
});

const ChannelSchema = z.object({
  channel: z.string(),
  last_value: z.number().nullable().openapi({ description: "Value of the newest point" }),
  last_time: z.string().openapi({ description: "Time of the newest point (RFC 3339, UTC)" }),
}).openapi("DeviceChannel");

const DevicesSchema = z.object({
  devices: z.array(
    z.object({
      device: z.string(),
      channels: z.array(ChannelSchema),
    }).openapi("Device"),
  ),
  truncated: z.boolean().openapi({ description: "More series exist than limit" }),
}).openapi("Devices");

const getDevices = createRoute({
  method: "get",
  path: "/api/devices",
  summary: "Devices and channels in the metrics store, each with its newest value and time",
  description: "Sorted by device, then channel (byte order on libSQL, the database's collation " +
    "on PostgreSQL). Needs metrics:read.",
  request: { query: DevicesQuery },
  responses: {
    200: {
      description: "Devices with their channels",
      content: { "application/json": { schema: DevicesSchema } },
    },
    ...errorResponses(400, 503),
  },
});

/** Series grouped by device, in the order the store gave them. */
export function groupSeries(rows: readonly SeriesRow[]) {
  const devices: { device: string; channels: z.infer<typeof ChannelSchema>[] }[] = [];
  for (const row of rows) {
    let last = devices.at(-1);
    if (last?.device !== row.device) devices.push(last = { device: row.device, channels: [] });
    last.channels.push({
      channel: row.channel,
      last_value: row.value,
      last_time: new Date(row.time).toISOString(),
    });
  }
  return devices;
}

/** Adds `/api/devices` to `app`; without a reader it answers 503. */
export function devicesRoutes(
  app: OpenAPIHono,
  reader: MetricsReader | undefined,
  guard: Guard,
): void {
  let reused: { limit: number; at: number; answer: Promise<SeriesRow[]> } | undefined;
  app.openapi(getDevices, async (c) => {
    authorize(c, guard, PERMISSIONS.metricsRead);
    const limit = c.req.valid("query").limit ?? DEFAULT_SERIES;
    if (!reader) {
      throw new ApiError("SERVICE_UNAVAILABLE", "No metrics store configured on this gateway");
    }
    const now = Date.now();
    if (!reused || reused.limit !== limit || now - reused.at >= REUSE_MS) {
      // One more than asked for tells whether there are more.
      const answer = reader.series(limit + 1);
      reused = { limit, at: now, answer };
      // A failure is not kept: the next request asks the store again.
      answer.catch(() => {
        if (reused?.answer === answer) reused = undefined;
      });
    }
    let rows;
    try {
      rows = await reused.answer;
    } catch (error) {
      if (error instanceof MetricsUnavailableError) {
        throw new ApiError("SERVICE_UNAVAILABLE", error.message);
      }
      throw error;
    }
    return c.json({
      devices: groupSeries(rows.slice(0, limit)),
      truncated: rows.length > limit,
    }, 200);
  });
}
