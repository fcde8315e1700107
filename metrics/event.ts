/**
 * Event records: what the recorder (metrics/event_recorder.ts) keeps of each
 * message on the event buses, and the query the history API asks.
 *
 * Any message is an event: a JSON object payload lends its `time` (RFC 3339),
 * `device`, `severity` and `kind` fields to columns of their own, so history
 * can be filtered by them; anything else (text, arrays, invalid UTF-8) is kept
 * as text with the receive time. Only oversized payloads are refused.
 *
 * @module
 */
import type { BusMessage } from "../bus/envelope.ts";
import { parseRfc3339 } from "./point.ts";

/** One event as stored. Times are ms since the epoch. */
export interface EventRecord {
  time: number;
  bus: string;
  topic: string;
  device: string | null;
  severity: string | null;
  kind: string | null;
  /** The payload as text (JSON when it was JSON). */
  payload: string;
}

/** A stored event with its row id (the tie-breaker of the history's order). */
export interface StoredEvent extends EventRecord {
  id: number;
}

/** Why a message was not recorded. */
export type EventRejectReason = "too_large";

export const EVENT_REJECT_REASONS: readonly EventRejectReason[] = ["too_large"];

/** Largest payload recorded by default. */
export const MAX_EVENT_PAYLOAD_BYTES = 64 * 1024;
/** Longest topic, device, severity or kind kept; longer fields are cut. */
export const MAX_EVENT_FIELD_LENGTH = 256;

export type EventParseResult =
  | { ok: true; event: EventRecord }
  | { ok: false; reason: EventRejectReason; detail: string };

const decoder = new TextDecoder(); // not fatal: invalid UTF-8 becomes U+FFFD

/**
 * Text PostgreSQL can store: it refuses U+0000 in text, which would make the
 * whole batch fail as a data error.
 */
function storable(text: string): string {
  return text.includes("\u0000") ? text.replaceAll("\u0000", "\uFFFD") : text;
}

function field(value: unknown): string | null {
  if (typeof value !== "string" || value === "") return null;
  return storable(value.slice(0, MAX_EVENT_FIELD_LENGTH));
}

/** Turns a bus message into an event record; `now` is the receive time. */
export function parseEvent(
  message: BusMessage,
  now: number = Date.now(),
  maxPayloadBytes: number = MAX_EVENT_PAYLOAD_BYTES,
): EventParseResult {
  if (message.payload.length > maxPayloadBytes) {
    return {
      ok: false,
      reason: "too_large",
      detail: `payload of ${message.payload.length} bytes on topic ${
        message.topic.slice(0, 64)
      } (at most ${maxPayloadBytes})`,
    };
  }
  const payload = storable(decoder.decode(message.payload));
  let object: Record<string, unknown> | undefined;
  const first = payload.trimStart()[0];
  if (first === "{") {
    try {
      const parsed: unknown = JSON.parse(payload);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
        object = parsed as Record<string, unknown>;
      }
    } catch {
      // Not JSON after all: kept as text.
    }
  }
  let time = now;
  if (typeof object?.time === "string") {
    const parsed = parseRfc3339(object.time);
    if (Number.isFinite(parsed)) time = parsed;
  }
  return {
    ok: true,
    event: {
      time,
      bus: message.bus,
      topic: storable(message.topic.slice(0, 1024)),
      device: field(object?.device),
      severity: field(object?.severity),
      kind: field(object?.kind),
      payload,
    },
  };
}

/** A history query: newest first. Times are ms since the epoch; `to` is exclusive. */
export interface EventQuery {
  from?: number;
  to?: number;
  device?: string;
  severity?: string;
  /** Topics starting with this. */
  topicPrefix?: string;
  bus?: string;
  /** Continue after this event (the previous page's last). */
  before?: { time: number; id: number };
  limit: number;
}

/** Writes and ages out events; the metrics writers implement it too. */
export interface EventWriter {
  writeEvents(events: readonly EventRecord[]): Promise<void>;
  deleteEventsOlderThan(cutoffMs: number): Promise<number>;
  isDataError(error: unknown): boolean;
}

/** Reads event history; the metrics readers implement it too. */
export interface EventReader {
  queryEvents(query: EventQuery): Promise<StoredEvent[]>;
}

/** `LIKE` pattern of a prefix: `%`, `_` and `\` are literal (escape `\`). */
export function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
