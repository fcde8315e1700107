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
