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
import { fastPoint } from "./fast_point.ts";

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

const decoder = new TextDecoder();

function reject(reason: RejectReason, detail: string): ParseResult {
  return { ok: false, reason, detail };
}

/** The number in `text[from, from + length)`, or -1 when those are not all digits. */
function digits(text: string, from: number, length: number): number {
  let value = 0;
  for (let i = from; i < from + length; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    value = value * 10 + c;
  }
  return value;
}

/** The number in `bytes[from, from + length)`, or -1 when those are not all digits. */
function byteDigits(bytes: Uint8Array, from: number, length: number): number {
  let value = 0;
  for (let i = from; i < from + length; i++) {
    const c = bytes[i]! - 48;
    if (c < 0 || c > 9) return -1;
    value = value * 10 + c;
  }
  return value;
}

/** `YYYY-MM-DDTHH:MM:SS` read as UTC, in ms, or NaN. */
function dateTimePrefix(text: string): number {
  const separator = text.charCodeAt(10);
  if (
    text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 ||
    (separator !== 84 && separator !== 116 && separator !== 32) ||
    text.charCodeAt(13) !== 58 || text.charCodeAt(16) !== 58
  ) return NaN;
  return utcOf(
    digits(text, 0, 4),
    digits(text, 5, 2),
    digits(text, 8, 2),
    digits(text, 11, 2),
    digits(text, 14, 2),
    digits(text, 17, 2),
  );
}

/** Milliseconds of a UTC date and time given as fields (-1: not digits), or NaN. */
function utcOf(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  second: number,
): number {
  if (
    year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
    minute > 59 || second < 0 || second > 60
  ) return NaN;
  // Day 31 of a 30-day month (or Feb 30) is no date, not the next month's first.
  if (day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return NaN;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  return date.getTime();
}

let lastBytesPrefix = new Uint8Array(19);
let lastBytesPrefixMs = NaN;

/** {@link parseRfc3339} of the UTF-8 text `bytes[start, end)`, without decoding it. */
export function parseRfc3339Bytes(bytes: Uint8Array, start: number, end: number): number {
  const length = end - start;
  if (length < 20) return NaN;
  let base = lastBytesPrefixMs;
  for (let k = 0; k < 19; k++) {
    if (bytes[start + k] !== lastBytesPrefix[k]) {
      base = NaN;
      break;
    }
  }
  if (Number.isNaN(base)) {
    const separator = bytes[start + 10];
    if (
      bytes[start + 4] !== 45 || bytes[start + 7] !== 45 ||
      (separator !== 84 && separator !== 116 && separator !== 32) ||
      bytes[start + 13] !== 58 || bytes[start + 16] !== 58
    ) return NaN;
    base = utcOf(
      byteDigits(bytes, start, 4),
      byteDigits(bytes, start + 5, 2),
      byteDigits(bytes, start + 8, 2),
      byteDigits(bytes, start + 11, 2),
      byteDigits(bytes, start + 14, 2),
      byteDigits(bytes, start + 17, 2),
    );
    if (Number.isNaN(base)) return NaN;
    lastBytesPrefix = bytes.slice(start, start + 19);
    lastBytesPrefixMs = base;
  }
  let i = start + 19;
  let ms = 0;
  if (bytes[i] === 46) {
    const fraction = ++i;
    while (i < end && bytes[i]! >= 48 && bytes[i]! <= 57) i++;
    if (i === fraction) return NaN;
    for (let k = 0; k < 3; k++) ms = ms * 10 + (fraction + k < i ? bytes[fraction + k]! - 48 : 0);
  }
  const zone = bytes[i];
  if (zone === 90 || zone === 122) return i + 1 === end ? base + ms : NaN;
  if ((zone !== 43 && zone !== 45) || i + 6 !== end || bytes[i + 3] !== 58) return NaN;
  const hours = byteDigits(bytes, i + 1, 2);
  const minutes = byteDigits(bytes, i + 4, 2);
  if (hours < 0 || hours > 23 || minutes < 0 || minutes > 59) return NaN;
  const offset = (hours * 60 + minutes) * 60_000;
  return zone === 43 ? base + ms - offset : base + ms + offset;
}

// Points usually come in runs within the same second: remember the last prefix.
let lastPrefix = "";
let lastPrefixMs = NaN;

/**
 * Milliseconds since the epoch of an RFC 3339 time (`2024-01-01T00:00:00.5Z`,
 * `…+02:00`; `t`/`z` and a space separator too), fractions cut to the
 * millisecond; NaN for anything else.
 */
export function parseRfc3339(text: string): number {
  const length = text.length;
  if (length < 20) return NaN;
  let base: number;
  if (lastPrefix !== "" && text.startsWith(lastPrefix)) {
    base = lastPrefixMs;
  } else {
    base = dateTimePrefix(text);
    if (Number.isNaN(base)) return NaN;
    lastPrefix = text.slice(0, 19);
    lastPrefixMs = base;
  }
  let i = 19;
  let ms = 0;
  if (text.charCodeAt(i) === 46) {
    const start = ++i;
    while (i < length && text.charCodeAt(i) >= 48 && text.charCodeAt(i) <= 57) i++;
    if (i === start) return NaN;
    for (let k = 0; k < 3; k++) {
      ms = ms * 10 + (start + k < i ? text.charCodeAt(start + k) - 48 : 0);
    }
  }
  const zone = text.charCodeAt(i);
  if (zone === 90 || zone === 122) return i + 1 === length ? base + ms : NaN;
  if ((zone !== 43 && zone !== 45) || i + 6 !== length || text.charCodeAt(i + 3) !== 58) return NaN;
  const hours = digits(text, i + 1, 2);
  const minutes = digits(text, i + 4, 2);
  if (hours < 0 || hours > 23 || minutes < 0 || minutes > 59) return NaN;
  const offset = (hours * 60 + minutes) * 60_000;
  return zone === 43 ? base + ms - offset : base + ms + offset;
}

function name(value: unknown): string | undefined {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_NAME_LENGTH) {
    return undefined;
  }
  // PostgreSQL text cannot hold NUL.
  return value.includes("\u0000") ? undefined : value;
}

/**
 * Reads one payload (bytes or text). `now` is used when the point carries no
 * time.
 */
export function parsePoint(payload: Uint8Array | string, now: number = Date.now()): ParseResult {
  const size = typeof payload === "string" ? payload.length : payload.byteLength;
  if (size > MAX_PAYLOAD_BYTES) return reject("too_large", `${size} bytes`);
  if (typeof payload !== "string") {
    const point = fastPoint(payload, now, parseRfc3339Bytes);
    if (point) return { ok: true, point };
  }
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
