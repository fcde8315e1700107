/**
 * Journal rows read back into requests and dead letters: the same columns in
 * the libSQL and the PostgreSQL journal; only how a blob arrives differs, so
 * each passes its own `bytes`.
 *
 * @module
 */
import {
  type DeadLetter,
  type DeadReason,
  decodeFrames,
  type Failure,
  type JournalRequest,
} from "./journal.ts";

/** A row as either driver gives it: column name to value. */
export type JournalRow = Record<string, unknown>;

/** A blob column as a Uint8Array. */
export type BlobReader = (value: unknown) => Uint8Array;

function failuresOf(value: unknown): Failure[] {
  const parsed = JSON.parse(String(value));
  return Array.isArray(parsed) ? parsed : [];
}

/** A `journal_requests` row. */
export function requestOf(row: JournalRow, bytes: BlobReader): JournalRequest {
  const callerDeadline = row.caller_deadline;
  return {
    key: String(row.key),
    service: String(row.service),
    body: decodeFrames(bytes(row.body)),
    receivedAt: Number(row.received_at),
    expiresAt: Number(row.expires_at),
    ...(callerDeadline === null || callerDeadline === undefined
      ? {}
      : { callerDeadline: Number(callerDeadline) }),
    keyed: Number(row.keyed) === 1,
    failures: failuresOf(row.failures),
  };
}

/** A `journal_dead` row. */
export function deadOf(row: JournalRow, bytes: BlobReader): DeadLetter {
  return {
    key: String(row.key),
    service: String(row.service),
    body: decodeFrames(bytes(row.body)),
    reason: String(row.reason) as DeadReason,
    detail: String(row.detail),
    attempts: Number(row.attempts),
    receivedAt: Number(row.received_at),
    deadAt: Number(row.dead_at),
    failures: failuresOf(row.failures),
    replays: Number(row.replays),
  };
}
