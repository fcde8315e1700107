/**
 * Errors of the Majordomo client and worker.
 *
 * @module
 */

/** Base class of every Majordomo error. */
export class MdpError extends Error {
  readonly service: string;
  constructor(message: string, service: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MdpError";
    this.service = service;
  }
}

/** No final reply arrived within the request's timeout (after every retry). */
export class MdpTimeoutError extends MdpError {
  readonly timeoutMs: number;
  constructor(service: string, timeoutMs: number, attempts: number) {
    super(
      `Request to '${service}' got no reply within ${timeoutMs} ms (${attempts} attempt${
        attempts === 1 ? "" : "s"
      })`,
      service,
    );
    this.name = "MdpTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/** The broker answered the request itself with an error (see broker/errors.ts). */
export class MdpBrokerError extends MdpError {
  /** Stable code, e.g. `SERVICE_UNAVAILABLE`, `WORKER_LOST`, `EMPTY_REQUEST`. */
  readonly code: string;
  constructor(service: string, code: string, message: string) {
    super(message, service);
    this.name = "MdpBrokerError";
    this.code = code;
  }
}

/** No worker serves the service (the broker's queue expired, or `mmi.service` said 404). */
export class MdpServiceUnavailableError extends MdpBrokerError {
  constructor(service: string, message: string) {
    super(service, "SERVICE_UNAVAILABLE", message);
    this.name = "MdpServiceUnavailableError";
  }
}

/** The client was closed while the request was pending. */
export class MdpClosedError extends MdpError {
  constructor(service: string) {
    super(`Client closed while the request to '${service}' was pending`, service);
    this.name = "MdpClosedError";
  }
}

/**
 * A service call refused before it was sent (no worker: mdp/directory.ts) or
 * answered with a failure the service names (state/client.ts). `code` is one
 * of the stable codes of the REST and WebSocket API; the gateway maps it to an
 * HTTP status (gateway/errors.ts), the CLI to an exit code.
 */
export class ServiceCallError<Code extends string = string> extends MdpError {
  readonly code: Code;
  /** Fields the API adds to the error body (e.g. `current_revision`). */
  readonly details: Record<string, unknown> | undefined;
  /** The failure is the stored reply of an idempotency key (state/idempotency.ts). */
  readonly replayed: boolean;
  /** Seconds after which a retry may be answered. */
  readonly retryAfterS: number | undefined;
  constructor(
    service: string,
    code: Code,
    message: string,
    options: { details?: Record<string, unknown>; replayed?: boolean; retryAfterS?: number } = {},
  ) {
    super(message, service);
    this.name = "ServiceCallError";
    this.code = code;
    this.details = options.details;
    this.replayed = options.replayed ?? false;
    this.retryAfterS = options.retryAfterS;
  }
}

/** Codes of {@link callFailure}, besides a {@link ServiceCallError}'s own. */
export type CallFailureCode = "TIMEOUT" | "SERVICE_UNAVAILABLE" | "WORKER_LOST" | "UPSTREAM_ERROR";

/** What a failed call means to its caller: a stable code and fields for the error body. */
export interface CallFailure<Code extends string = string> {
  code: Code | CallFailureCode;
  details?: Record<string, unknown>;
}

/**
 * The stable code of a Majordomo error (undefined for an error of no known
 * kind): one mapping for the gateway's statuses and the CLI's exit codes.
 */
export function callFailure<Code extends string>(
  error: MdpError | ServiceCallError<Code>,
): CallFailure<Code> | undefined {
  if (error instanceof ServiceCallError) {
    return { code: error.code, ...(error.details ? { details: error.details } : {}) };
  }
  if (error instanceof MdpTimeoutError) {
    return { code: "TIMEOUT", details: { service: error.service } };
  }
  if (error instanceof MdpServiceUnavailableError) {
    return { code: "SERVICE_UNAVAILABLE", details: { service: error.service } };
  }
  if (error instanceof MdpBrokerError) {
    return {
      code: error.code === "QUEUE_FULL" || error.code === "SHUTTING_DOWN" ||
          error.code === "BROKER_PASSIVE" || error.code === "JOURNAL_UNAVAILABLE"
        ? "SERVICE_UNAVAILABLE"
        // Its own code: the worker may have acted before it died, so the caller decides on a retry.
        : error.code === "WORKER_LOST"
        ? "WORKER_LOST"
        : "UPSTREAM_ERROR",
      details: { service: error.service, upstream_code: error.code },
    };
  }
  if (error instanceof MdpClosedError) return { code: "SERVICE_UNAVAILABLE" };
  return undefined;
}
