/**
 * Metric points as they arrive on the metric bus, and their validation.
 *
 * Two payload forms are accepted (JSON objects):
 *
 * - Go plantd's logger: `{"time":"2024-01-01T00:00:00Z","device":"d","channel":"c","value":1.5}`
 * - the seed's richer form: `{"timestamp":"…","service_name":"d","metric_name":"c","value":1.5,"tags":{…}}`,
 *   stored with `service_name` as device and `metric_name` as channel.
 *
 * Either form may carry `tags` (an object) and either time key. A missing time
 * is the time of reception. Times are RFC 3339 and kept to the millisecond.
 * Anything else is rejected with one of a fixed set of {@link RejectReason}s,
 * so they can label a counter.
 *
 * @module
 */

/** One point, ready to store. */
export interface Point {
  /** Milliseconds since the Unix epoch. */
  time: number;
  device: string;
  channel: string;
  value: number;
  /** JSON text of the tags object, or null. */
  tags: string | null;
}

/** Why a payload is not a point. */
export type RejectReason =
  | "too_large"
  | "not_json"
  | "not_object"
  | "time"
  | "device"
  | "channel"
  | "value"
  | "tags";

/** Every reason, for pre-creating counter series. */
export const REJECT_REASONS: readonly RejectReason[] = [
  "too_large",
  "not_json",
  "not_object",
  "time",
  "device",
  "channel",
  "value",
  "tags",
];

/** The outcome of {@link parsePoint}. */
export type ParseResult =
  | { ok: true; point: Point }
  | { ok: false; reason: RejectReason; detail: string };

/** Largest accepted payload. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Longest device or channel name. */
export const MAX_NAME_LENGTH = 1024;

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;
const decoder = new TextDecoder();

function reject(reason: RejectReason, detail: string): ParseResult {
  return { ok: false, reason, detail };
}

/** Milliseconds since the epoch of an RFC 3339 time (fractions cut to ms), or NaN. */
export function parseRfc3339(text: string): number {
  const match = RFC3339.exec(text);
  if (!match) return NaN;
  const [, y, mo, d, h, mi, s, , , oh, om] = match;
  const year = Number(y), month = Number(mo), day = Number(d);
  // Date.parse rolls 2024-02-30 over into March: check the fields first.
  if (month < 1 || month > 12 || day < 1) return NaN;
  if (day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return NaN;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 60) return NaN;
  if (oh !== undefined && (Number(oh) > 23 || Number(om) > 59)) return NaN;
  return Date.parse(text.replace(" ", "T"));
}

// deno-lint-ignore no-control-regex
const NUL = /\u0000/;

function name(value: unknown): string | undefined {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_NAME_LENGTH) {
    return undefined;
  }
  // PostgreSQL text cannot hold NUL.
  return NUL.test(value) ? undefined : value;
}

/**
 * Reads one payload (bytes or text). `now` is used when the point carries no
 * time.
 */
export function parsePoint(payload: Uint8Array | string, now: number = Date.now()): ParseResult {
  const size = typeof payload === "string" ? payload.length : payload.byteLength;
  if (size > MAX_PAYLOAD_BYTES) return reject("too_large", `${size} bytes`);
  let data: unknown;
  try {
    data = JSON.parse(typeof payload === "string" ? payload : decoder.decode(payload));
  } catch (error) {
    return reject("not_json", (error as Error).message);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    return reject("not_object", "payload is not a JSON object");
  }
  const object = data as Record<string, unknown>;
  const goForm = "device" in object || "channel" in object;
  const device = name(goForm ? object.device : object.service_name);
  if (device === undefined) {
    return reject("device", `${goForm ? "device" : "service_name"} must be a non-empty string`);
  }
  const channel = name(goForm ? object.channel : object.metric_name);
  if (channel === undefined) {
    return reject("channel", `${goForm ? "channel" : "metric_name"} must be a non-empty string`);
  }
  const value = object.value;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return reject("value", "value must be a number");
  }
  const rawTime = object.time ?? object.timestamp;
  let time = now;
  if (rawTime !== undefined) {
    time = typeof rawTime === "string" ? parseRfc3339(rawTime) : NaN;
    if (Number.isNaN(time)) return reject("time", "time must be an RFC 3339 string");
  }
  let tags: string | null = null;
  if (object.tags !== undefined && object.tags !== null) {
    if (typeof object.tags !== "object" || Array.isArray(object.tags)) {
      return reject("tags", "tags must be an object");
    }
    tags = JSON.stringify(object.tags);
    // jsonb rejects the NUL escape.
    if (tags.includes("\\u0000")) return reject("tags", "tags must not contain NUL");
  }
  return { ok: true, point: { time, device, channel, value, tags } };
}
