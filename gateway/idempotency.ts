/**
 * The `Idempotency-Key` request header (IETF httpapi draft "The
 * Idempotency-Key HTTP Header Field") and the `idempotency_key` of WebSocket
 * requests, for state writes: the key goes to the state service in the
 * request's `idempotency_key` field, which applies a request at most once per
 * key of its caller (state/idempotency.ts); a replayed reply is marked to the
 * client with `Idempotent-Replayed: true` (REST) or `"replayed": true`
 * (WebSocket). docs/state.md, Idempotency keys.
 *
 * @module
 */
import { text } from "../mdp/protocol.ts";
import {
  IDEMPOTENCY_FIELD,
  IdempotencyKey,
  KEY_REUSED,
  unmarkReplay,
  WRITE_OPERATIONS,
} from "../state/idempotency.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import type { Frames } from "../transport/frames.ts";
import { ApiError, REPLAYED_HEADER } from "./errors.ts";

/** The request header. */
export const IDEMPOTENCY_HEADER = "Idempotency-Key";
export { REPLAYED_HEADER };

/** The key's own checks (length, characters), as a 400. */
function checked(key: string, where: string): string {
  const parsed = IdempotencyKey.safeParse(key);
  if (!parsed.success) {
    throw new ApiError("BAD_REQUEST", `${where} ${parsed.error.issues[0]?.message ?? "invalid"}`);
  }
  return parsed.data;
}

/**
 * The key of an `Idempotency-Key` header value: a structured-field string
 * (RFC 8941: `"…"` with `\"` and `\\` escapes, parameters after it ignored),
 * as the draft defines it, or a bare value without quotes, spaces or commas,
 * taken as it is. Undefined without the header; a 400 when it is malformed
 * (two headers, joined with a comma, are).
 */
export function idempotencyKeyHeader(value: string | null | undefined): string | undefined {
  if (value === null || value === undefined) return undefined;
  const field = value.trim();
  if (!field.startsWith('"')) {
    if (!/^[\x21-\x7e]+$/.test(field) || field.includes(",")) {
      throw new ApiError(
        "BAD_REQUEST",
        `${IDEMPOTENCY_HEADER} must be a quoted string ("…") or a bare value of 1..255 printable ASCII characters without spaces or commas`,
      );
    }
    return checked(field, IDEMPOTENCY_HEADER);
  }
  let key = "";
  for (let i = 1; i < field.length; i++) {
    const char = field[i]!;
    if (char === "\\") {
      const next = field[++i];
      if (next !== '"' && next !== "\\") break;
      key += next;
    } else if (char === '"') {
      const rest = field.slice(i + 1);
      if (rest === "" || rest.startsWith(";")) return checked(key, IDEMPOTENCY_HEADER);
      break;
    } else key += char;
  }
  throw new ApiError(
    "BAD_REQUEST",
    `${IDEMPOTENCY_HEADER} is not a valid structured-field string (a quoted "…" with only \\" and \\\\ escapes)`,
  );
}

/**
 * A Majordomo request body with its idempotency key in the state request's
 * JSON: `key` (from the header or the WebSocket message) is put in; one the
 * JSON already has is kept when equal, refused when not. Returns the key in
 * effect (undefined: none), so the reply is read as a keyed one. A key on
 * anything but a state write is a 400: it would promise what nothing keeps.
 */
export function keyedBody(
  service: string,
  body: string[],
  key: string | undefined,
): { body: string[]; key: string | undefined } {
  const write = service === STATE_SERVICE && WRITE_OPERATIONS.has(body[0] ?? "");
  if (!write) {
    if (key === undefined) return { body, key };
    throw new ApiError(
      "BAD_REQUEST",
      `An idempotency key applies to ${STATE_SERVICE} write operations only (${
        [...WRITE_OPERATIONS].join(", ")
      })`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body[1] ?? "{}");
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    // The state service answers malformed requests itself; a key needs an object to go in.
    if (key === undefined) return { body, key };
    throw new ApiError("BAD_REQUEST", "A request with an idempotency key needs a JSON object body");
  }
  const request = parsed as Record<string, unknown>;
  const inBody = request[IDEMPOTENCY_FIELD];
  if (key === undefined) {
    return { body, key: typeof inBody === "string" ? inBody : undefined };
  }
  if (inBody !== undefined && inBody !== key) {
    throw new ApiError(
      "BAD_REQUEST",
      `The body's ${IDEMPOTENCY_FIELD} differs from the idempotency key given with the request`,
    );
  }
  request[IDEMPOTENCY_FIELD] = key;
  return { body: [body[0]!, JSON.stringify(request), ...body.slice(2)], key };
}

/**
 * The reply frames of a keyed state write as the client gets them: a replay
 * without its mark (the first reply, byte for byte) and `replayed` true; a
 * key used for another request as a 422.
 */
export function keyedReply(frames: Frames): { frames: Frames; replayed: boolean } {
  const first = frames[0];
  if (first === undefined) return { frames, replayed: false };
  const reply = text(first);
  if (reply.startsWith(`{"error": "${KEY_REUSED}"`)) {
    let message = "Idempotency key used for a different request";
    try {
      message = String(JSON.parse(reply).message ?? message);
    } catch {
      // the state service's own text; keep the default
    }
    throw new ApiError("IDEMPOTENCY_KEY_REUSED", message);
  }
  const unmarked = unmarkReplay(reply);
  if (!unmarked.replayed) return { frames, replayed: false };
  return {
    frames: [new TextEncoder().encode(unmarked.reply), ...frames.slice(1)],
    replayed: true,
  };
}
