/**
 * A fast path for the common payload: a flat JSON object (`time`/`timestamp`,
 * `device`/`channel` or `service_name`/`metric_name`, a plain number
 * `value`, optionally a `tags` object) read straight from the bytes, without
 * decoding the whole payload and building a JSON object per point.
 *
 * It accepts only what it can read exactly as `JSON.parse` would and returns
 * undefined for anything else (escapes in strings, exponents or long
 * numbers, nested values other than tags, null, unknown shapes, errors);
 * point.ts then takes the general path, which also names the reason of a
 * rejection. point_test.ts checks both paths agree on many payloads.
 *
 * @module
 */
import type { Point } from "./point.ts";

const decoder = new TextDecoder();

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

const enum Key {
  Other,
  Time,
  Timestamp,
  Device,
  Channel,
  ServiceName,
  MetricName,
  Value,
  Tags,
}

const KEYS: Array<[Uint8Array, Key]> = [
  ["time", Key.Time],
  ["timestamp", Key.Timestamp],
  ["device", Key.Device],
  ["channel", Key.Channel],
  ["service_name", Key.ServiceName],
  ["metric_name", Key.MetricName],
  ["value", Key.Value],
  ["tags", Key.Tags],
].map(([text, key]) => [new TextEncoder().encode(text as string), key as Key]);

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function keyOf(bytes: Uint8Array, start: number, end: number): Key {
  const length = end - start;
  outer: for (const [name, key] of KEYS) {
    if (name.length !== length) continue;
    for (let i = 0; i < length; i++) if (bytes[start + i] !== name[i]) continue outer;
    return key;
  }
  return Key.Other;
}

/**
 * Interned texts by their bytes: device and channel names, and often whole
 * tags objects, repeat, so each is decoded (and made) once.
 */
class Interner<T> {
  #map = new Map<number, { bytes: Uint8Array; text: T }>();
  readonly #make: (text: string) => T;

  constructor(make: (text: string) => T) {
    this.#make = make;
  }

  text(bytes: Uint8Array, start: number, end: number, hash: number): T {
    const entry = this.#map.get(hash);
    const length = end - start;
    if (entry && entry.bytes.length === length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (entry.bytes[i] !== bytes[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return entry.text;
    }
    const copy = bytes.slice(start, end);
    const text = this.#make(decoder.decode(copy));
    if (this.#map.size >= 4096) this.#map.clear();
    this.#map.set(hash, { bytes: copy, text });
    return text;
  }
}

const names = new Interner((text) => text);
/** A tags object's text as the general path stores it, or undefined when it is not one. */
const tagTexts = new Interner((text): string | undefined => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const canonical = JSON.stringify(parsed);
  return canonical.includes("\\u0000") ? undefined : canonical;
});
const POWERS = Array.from({ length: 23 }, (_, i) => 10 ** i);

/**
 * Reads a payload of the usual shape; undefined when the general path must
 * decide. `parseTime` reads RFC 3339 text (point.ts's parser, shared so both
 * paths agree).
 */
export function fastPoint(
  bytes: Uint8Array,
  now: number,
  parseTime: (bytes: Uint8Array, start: number, end: number) => number,
): Point | undefined {
  const n = bytes.length;
  let i = 0;
  while (i < n && isSpace(bytes[i]!)) i++;
  if (bytes[i] !== OPEN) return undefined;
  i++;
  let time: number | undefined;
  let timestamp: number | undefined;
  let device: string | undefined;
  let channel: string | undefined;
  let serviceName: string | undefined;
  let metricName: string | undefined;
  let value: number | undefined;
  let tags: string | undefined;
  let goForm = false;
  let first = true;
  while (true) {
    while (i < n && isSpace(bytes[i]!)) i++;
    if (bytes[i] === CLOSE && first) {
      i++;
      break;
    }
    // "key"
    if (bytes[i] !== QUOTE) return undefined;
    const keyStart = ++i;
    while (i < n && bytes[i] !== QUOTE) {
      const c = bytes[i]!;
      if (c === BACKSLASH || c < 0x20) return undefined;
      i++;
    }
    if (i >= n) return undefined;
    const key = keyOf(bytes, keyStart, i);
    i++;
    while (i < n && isSpace(bytes[i]!)) i++;
    if (bytes[i] !== COLON) return undefined;
    i++;
    while (i < n && isSpace(bytes[i]!)) i++;
    const c = bytes[i];
    if (c === QUOTE) {
      // A string without escapes or control characters; FNV-1a over its bytes.
      const start = ++i;
      let hash = 0x811c9dc5;
      while (i < n) {
        const b = bytes[i]!;
        if (b === QUOTE) break;
        if (b === BACKSLASH || b < 0x20) return undefined;
        hash = Math.imul(hash ^ b, 0x01000193);
        i++;
      }
      if (i >= n) return undefined;
      const end = i++;
      switch (key) {
        case Key.Time:
          time = parseTime(bytes, start, end);
          if (Number.isNaN(time)) return undefined;
          break;
        case Key.Timestamp:
          timestamp = parseTime(bytes, start, end);
          if (Number.isNaN(timestamp)) return undefined;
          break;
        case Key.Device:
          goForm = true;
          device = names.text(bytes, start, end, hash);
          break;
        case Key.Channel:
          goForm = true;
          channel = names.text(bytes, start, end, hash);
          break;
        case Key.ServiceName:
          serviceName = names.text(bytes, start, end, hash);
          break;
        case Key.MetricName:
          metricName = names.text(bytes, start, end, hash);
          break;
        case Key.Other:
          break;
        default:
          return undefined; // a string value or tags: the general path says why
      }
    } else if (c === MINUS || (c !== undefined && c >= ZERO && c <= NINE)) {
      // A number: only forms whose value is exact as mantissa / 10^k.
      const negative = c === MINUS;
      if (negative) i++;
      let mantissa = 0;
      let digits = 0;
      const intStart = i;
      while (i < n && bytes[i]! >= ZERO && bytes[i]! <= NINE) {
        mantissa = mantissa * 10 + (bytes[i]! - ZERO);
        digits++;
        i++;
      }
      if (digits === 0 || (bytes[intStart] === ZERO && digits > 1)) return undefined;
      let fraction = 0;
      if (bytes[i] === DOT) {
        i++;
        while (i < n && bytes[i]! >= ZERO && bytes[i]! <= NINE) {
          mantissa = mantissa * 10 + (bytes[i]! - ZERO);
          digits++;
          fraction++;
          i++;
        }
        if (fraction === 0) return undefined;
      }
      // Exponents, and mantissas beyond 2^53 or 15 digits, go the general way.
      if (digits > 15 || fraction > 22) return undefined;
      const b = bytes[i];
      if (b === 0x65 || b === 0x45) return undefined;
      const number = fraction === 0 ? mantissa : mantissa / POWERS[fraction]!;
      if (key === Key.Value) value = negative ? -number : number;
      else if (key !== Key.Other) return undefined;
    } else if (c === OPEN && key === Key.Tags) {
      // The tags object: find its end, then parse and re-serialize just it.
      const start = i;
      let depth = 0;
      let hash = 0x811c9dc5;
      while (i < n) {
        const b = bytes[i]!;
        hash = Math.imul(hash ^ b, 0x01000193);
        if (b === QUOTE) {
          i++;
          while (i < n && bytes[i] !== QUOTE) {
            if (bytes[i] === BACKSLASH) i++;
            hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
            i++;
          }
        } else if (b === OPEN || b === 0x5b) {
          depth++;
        } else if (b === CLOSE || b === 0x5d) {
          depth--;
          if (depth === 0) break;
        }
        i++;
      }
      if (i >= n) return undefined;
      i++;
      tags = tagTexts.text(bytes, start, i, hash);
      if (tags === undefined) return undefined;
    } else {
      return undefined; // null, true, false, arrays, other objects
    }
    first = false;
    while (i < n && isSpace(bytes[i]!)) i++;
    if (bytes[i] === COMMA) {
      i++;
      // A comma must be followed by another key.
      while (i < n && isSpace(bytes[i]!)) i++;
      if (bytes[i] !== QUOTE) return undefined;
      continue;
    }
    if (bytes[i] === CLOSE) {
      i++;
      break;
    }
    return undefined;
  }
  while (i < n && isSpace(bytes[i]!)) i++;
  if (i !== n || value === undefined) return undefined;
  const pointDevice = goForm ? device : serviceName;
  const pointChannel = goForm ? channel : metricName;
  if (!valid(pointDevice) || !valid(pointChannel)) return undefined;
  return {
    time: time ?? timestamp ?? now,
    device: pointDevice,
    channel: pointChannel,
    value,
    tags: tags ?? null,
  };
}

function valid(name: string | undefined): name is string {
  // Raw control characters (so NUL) were refused while scanning.
  return name !== undefined && name.length > 0 && name.length <= 1024;
}
