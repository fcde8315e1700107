/**
 * `GET /api/metrics`: time-bucketed aggregates of one series (device and
 * channel) from the metrics store: `time_bucket` on TimescaleDB, `date_bin`
 * on plain PostgreSQL, integer bucketing on libSQL; buckets are aligned to
 * the Unix epoch on all three. Live points need no route: subscribe to bus
 * `metric` on `/ws` (docs/metrics.md).
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { DURATION_PATTERN, parseDuration } from "../../metrics/duration.ts";
import { parseRfc3339 } from "../../metrics/point.ts";
import { type MetricsReader, MetricsUnavailableError } from "../../metrics/store.ts";
import { PERMISSIONS } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { ApiError } from "../errors.ts";
import { errorResponses } from "./schemas.ts";

/** Most buckets one query may return. */
export const MAX_BUCKETS = 10_000;
/** Window when `from` is not given: this long before `to`. */
const DEFAULT_WINDOW_MS = 3_600_000;

const name = (what: string) =>
  z.string().min(1, `${what} is required`).max(1024)
    .openapi({ param: { name: what, in: "query" }, example: what === "device" ? "d" : "c" });

const time = (what: string) =>
  z.string().refine((text) => !Number.isNaN(parseRfc3339(text)), {
    message: `${what} must be an RFC 3339 time such as 2024-01-01T00:00:00Z`,
  }).optional().openapi({ param: { name: what, in: "query" }, example: "2024-01-01T00:00:00Z" });

const MetricsQuery = z.object({
  device: name("device"),
  channel: name("channel"),
  from: time("from"),
  to: time("to"),
  bucket: z.string().regex(
    DURATION_PATTERN,
    "bucket must be a duration such as 500ms, 10s, 1m, 1h, 1d",
  ).refine((text) => parseDuration(text) !== undefined, { message: "bucket is too large" })
    .optional().openapi({
      param: { name: "bucket", in: "query" },
      example: "1m",
      description: "Bucket width: an integer and ms, s, m, h, d or w. Default 1m",
    }),
});

const BucketSchema = z.object({
  time: z.string().openapi({ description: "Start of the bucket (RFC 3339, UTC)" }),
  min: z.number().nullable(),
  max: z.number().nullable(),
  avg: z.number().nullable(),
  count: z.number().int(),
  last: z.number().nullable().openapi({ description: "Value with the latest time in the bucket" }),
}).openapi("MetricBucket");

const SeriesSchema = z.object({
  device: z.string(),
  channel: z.string(),
  from: z.string(),
  to: z.string(),
  bucket: z.string(),
  bucket_ms: z.number().int(),
  engine: z.enum(["time_bucket", "date_bin", "libsql"]),
  buckets: z.array(BucketSchema),
}).openapi("MetricSeries");

const getMetrics = createRoute({
  method: "get",
  path: "/api/metrics",
  summary: "Time-bucketed min, max, avg, count and last of one device/channel series",
  description: "from defaults to one hour before to, to to now, bucket to 1m; from is inclusive, " +
    `to exclusive; at most ${MAX_BUCKETS} buckets. Buckets without points are left out.`,
  request: { query: MetricsQuery },
  responses: {
    200: {
      description: "Buckets in time order",
      content: { "application/json": { schema: SeriesSchema } },
    },
    ...errorResponses(400, 503),
  },
});

/** Adds `/api/metrics` to `app`; without a reader it answers 503. */
export function metricsRoutes(
  app: OpenAPIHono,
  reader: MetricsReader | undefined,
  guard: Guard,
): void {
  app.openapi(getMetrics, async (c) => {
    authorize(c, guard, PERMISSIONS.metricsRead);
    const query = c.req.valid("query");
    if (!reader) {
      throw new ApiError("SERVICE_UNAVAILABLE", "No metrics store configured on this gateway");
    }
    const to = query.to === undefined ? Date.now() : parseRfc3339(query.to);
    const from = query.from === undefined ? to - DEFAULT_WINDOW_MS : parseRfc3339(query.from);
    const bucket = query.bucket ?? "1m";
    const bucketMs = parseDuration(bucket)!;
    if (from >= to) throw new ApiError("BAD_REQUEST", "from must be before to");
    const count = Math.ceil((to - from) / bucketMs);
    if (count > MAX_BUCKETS) {
      throw new ApiError(
        "BAD_REQUEST",
        `${count} buckets of ${bucket} between from and to; at most ${MAX_BUCKETS}: use a larger bucket`,
      );
    }
    let rows;
    let engine;
    try {
      engine = await reader.engine();
      rows = await reader.query({
        device: query.device,
        channel: query.channel,
        from,
        to,
        bucketMs,
      });
    } catch (error) {
      if (error instanceof MetricsUnavailableError) {
        throw new ApiError("SERVICE_UNAVAILABLE", error.message);
      }
      throw error;
    }
    return c.json({
      device: query.device,
      channel: query.channel,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      bucket,
      bucket_ms: bucketMs,
      engine,
      buckets: rows.map((row) => ({ ...row, time: new Date(row.time).toISOString() })),
    }, 200);
  });
}
