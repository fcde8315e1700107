/**
 * The gateway's one error type and its mapping from the errors of the layers
 * below (Majordomo calls, service replies: mdp/errors.ts): every error reaches
 * clients as JSON `{"error":{"code","message"}}` with an HTTP status that
 * means something.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { AuthStoreUnavailableError } from "../auth/store.ts";
import { AuthError } from "../auth/tokens.ts";
import { callFailure, type CallFailureCode, MdpError, ServiceCallError } from "../mdp/errors.ts";
import type { StateErrorCode } from "../state/client.ts";
import { storageFull } from "../storage/failure.ts";

/** The response header of a replayed reply, its value `true` (gateway/idempotency.ts). */
export const REPLAYED_HEADER = "Idempotent-Replayed";

/**
 * Stable error codes of the REST and WebSocket API: those of the calls below
 * the gateway, and its own.
 */
export type ApiErrorCode =
  | CallFailureCode
  | StateErrorCode
  | "BAD_REQUEST"
  | "UNAUTHENTICATED"
  | "FORBIDDEN"
  | "RATE_LIMITED"
  | "CONFLICT"
  | "NOT_FOUND"
  | "KEY_NOT_FOUND"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "STORAGE_FULL"
  | "AUTH_STORE_UNAVAILABLE"
  | "INTERNAL";

const STATUS: Record<ApiErrorCode, ContentfulStatusCode> = {
  BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  CONFLICT: 409,
  NOT_FOUND: 404,
  SCOPE_NOT_FOUND: 404,
  KEY_NOT_FOUND: 404,
  SCOPE_EXISTS: 409,
  REVISION_CONFLICT: 409,
  // The draft's answer to a key reused with another request payload.
  IDEMPOTENCY_KEY_REUSED: 422,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  SERVICE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  UPSTREAM_ERROR: 502,
  WORKER_LOST: 502,
  STORAGE_FULL: 507,
  // The auth database cannot be reached: nothing was decided, a retry may succeed.
  AUTH_STORE_UNAVAILABLE: 503,
  INTERNAL: 500,
};

/** An error with a stable code, rendered as JSON by the app's error handler. */
export class ApiError extends HTTPException {
  readonly code: ApiErrorCode;
  readonly details?: Record<string, unknown>;
  /** Response headers the error needs (`Retry-After`, `WWW-Authenticate`). */
  readonly headers: Record<string, string>;
  constructor(
    code: ApiErrorCode,
    message: string,
    details?: Record<string, unknown>,
    headers: Record<string, string> = {},
  ) {
    super(STATUS[code], { message });
    this.name = "ApiError";
    this.code = code;
    this.details = details;
    this.headers = code === "UNAUTHENTICATED"
      ? { "WWW-Authenticate": 'Bearer realm="plantd"', ...headers }
      : headers;
  }

  body(): { error: { code: ApiErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

/** The headers a failed call's error needs: `Retry-After`, and the mark of a replayed reply. */
function callHeaders(error: MdpError): Record<string, string> {
  if (!(error instanceof ServiceCallError)) return {};
  return {
    ...(error.retryAfterS !== undefined ? { "Retry-After": String(error.retryAfterS) } : {}),
    ...(error.replayed ? { [REPLAYED_HEADER]: "true" } : {}),
  };
}

/** Turns anything thrown while serving a request into an {@link ApiError}. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof AuthError) {
    return error.code === "PERMISSION_DENIED"
      ? new ApiError("FORBIDDEN", error.message)
      : new ApiError("UNAUTHENTICATED", error.message);
  }
  if (error instanceof MdpError) {
    const failure = callFailure(error);
    if (failure) {
      const code: ApiErrorCode = failure.code in STATUS
        ? failure.code as ApiErrorCode
        : "UPSTREAM_ERROR";
      return new ApiError(code, error.message, failure.details, callHeaders(error));
    }
  }
  if (error instanceof AuthStoreUnavailableError) {
    return new ApiError("AUTH_STORE_UNAVAILABLE", error.message, undefined, { "Retry-After": "1" });
  }
  if (error instanceof HTTPException) {
    const status = error.status;
    const code: ApiErrorCode = status === 413
      ? "PAYLOAD_TOO_LARGE"
      : status === 415
      ? "UNSUPPORTED_MEDIA_TYPE"
      : status === 404
      ? "NOT_FOUND"
      : status >= 500
      ? "INTERNAL"
      : "BAD_REQUEST";
    return new ApiError(code, error.message || "Bad request");
  }
  if (
    error instanceof Deno.errors.BadResource || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.UnexpectedEof
  ) {
    // The client broke its request body off or garbled it (closed mid-body, bad
    // chunked encoding): a bad request, not a fault of the gateway.
    return new ApiError("BAD_REQUEST", "The request body could not be read");
  }
  if (storageFull(error)) {
    // Nothing was written: the caller may retry once space is freed.
    return new ApiError("STORAGE_FULL", "The gateway's database is full (disk or size limit)");
  }
  return new ApiError("INTERNAL", "Internal error");
}
