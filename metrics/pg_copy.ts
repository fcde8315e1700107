/**
 * Points as PostgreSQL's binary COPY format (`COPY … FROM STDIN WITH (FORMAT
 * binary)`), for the five columns of the metrics table.
 *
 * Why binary COPY: measured on this project's 2-core machine, PostgreSQL
 * spends about half the CPU per point it spends on the `INSERT … SELECT FROM
 * unnest(…)` form (no text parsing of timestamps, numbers and array
 * literals), and building the rows here costs less than joining the array
 * literals did.
 *
 * Binary values are read by the column type's receive function, so the table
 * must have exactly the types {@link binaryCopyColumns} accepts; pg.ts checks
 * that before choosing this path.
 *
 * @module
 */
import type { Point } from "./point.ts";

/** The 11-byte signature, then flags (0) and header extension length (0). */
const SIGNATURE = "PGCOPY\n\xff\r\n\0";
const HEADER = new Uint8Array(SIGNATURE.length + 8);
HEADER.set(Array.from(SIGNATURE, (c) => c.charCodeAt(0)));
const TRAILER_BYTES = 2;
const FIELDS = 5;
/** PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix milliseconds. */
const PG_EPOCH_MS = 946_684_800_000;
const TWO_32 = 4_294_967_296;
/** jsonb's binary form: a version byte, then the JSON text. */
const JSONB_VERSION = 1;

/**
 * Column types (`format_type` spelling) the encoder's bytes are valid for, per
 * column. `timestamp` and `timestamptz` share their binary form (microseconds
 * since 2000-01-01); written in a UTC session both hold the UTC time, as the
 * INSERT path stores them.
 */
export const binaryCopyColumns: Readonly<Record<string, readonly string[]>> = {
  time: ["timestamp with time zone", "timestamp without time zone"],
  device: ["text", "character varying"],
  channel: ["text", "character varying"],
  value: ["double precision"],
  tags: ["jsonb"],
};

/** True when a table with these column types (name → format_type) can take the binary rows. */
export function binaryCopyFits(columns: ReadonlyMap<string, string>): boolean {
  return Object.entries(binaryCopyColumns).every(([name, types]) => {
    const type = columns.get(name);
    return type !== undefined && types.includes(type);
  });
}

const encoder = new TextEncoder();

/** Encodes points into one COPY stream; texts that repeat are encoded once. */
export class BinaryCopyEncoder {
  readonly #texts = new Map<string, Uint8Array>();
  readonly #maxTexts: number;

  constructor(maxCachedTexts = 100_000) {
    this.#maxTexts = maxCachedTexts;
  }

  #bytes(text: string): Uint8Array {
    let bytes = this.#texts.get(text);
    if (bytes === undefined) {
      bytes = encoder.encode(text);
      if (this.#texts.size >= this.#maxTexts) this.#texts.clear();
      this.#texts.set(text, bytes);
    }
    return bytes;
  }

  /** The whole COPY stream (header, one tuple per point, trailer). */
  encode(points: readonly Point[]): Uint8Array<ArrayBuffer> {
    const n = points.length;
    const devices = new Array<Uint8Array>(n);
    const channels = new Array<Uint8Array>(n);
    const tags = new Array<Uint8Array | null>(n);
    // Per tuple: field count, then a 4-byte length before each field.
    let size = HEADER.length + TRAILER_BYTES + n * (2 + 4 * FIELDS + 8 + 8);
    for (let i = 0; i < n; i++) {
      const p = points[i]!;
      const device = devices[i] = this.#bytes(p.device);
      const channel = channels[i] = this.#bytes(p.channel);
      const tag = tags[i] = p.tags === null ? null : this.#bytes(p.tags);
      size += device.length + channel.length + (tag === null ? 0 : 1 + tag.length);
    }
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    out.set(HEADER, 0);
    let o = HEADER.length;
    for (let i = 0; i < n; i++) {
      const p = points[i]!;
      view.setInt16(o, FIELDS);
      o += 2;
      // time: int64 microseconds since 2000-01-01 as two 32-bit halves, from
      // milliseconds split first, so the product by 1000 stays exact past 2^53.
      const ms = p.time - PG_EPOCH_MS;
      const wholeMs = Math.floor(ms);
      const highMs = Math.floor(wholeMs / TWO_32);
      const lowMicros = (wholeMs - highMs * TWO_32) * 1000 + Math.round((ms - wholeMs) * 1000);
      const carry = Math.floor(lowMicros / TWO_32);
      view.setInt32(o, 8);
      view.setInt32(o + 4, highMs * 1000 + carry);
      view.setUint32(o + 8, lowMicros - carry * TWO_32);
      o += 12;
      const device = devices[i]!;
      view.setInt32(o, device.length);
      out.set(device, o + 4);
      o += 4 + device.length;
      const channel = channels[i]!;
      view.setInt32(o, channel.length);
      out.set(channel, o + 4);
      o += 4 + channel.length;
      view.setInt32(o, 8);
      view.setFloat64(o + 4, p.value);
      o += 12;
      const tag = tags[i]!;
      if (tag === null) {
        view.setInt32(o, -1);
        o += 4;
      } else {
        view.setInt32(o, tag.length + 1);
        out[o + 4] = JSONB_VERSION;
        out.set(tag, o + 5);
        o += 5 + tag.length;
      }
    }
    view.setInt16(o, -1);
    return out;
  }
}
