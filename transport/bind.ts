/**
 * The error of a component that cannot bind its endpoint.
 *
 * @module
 */

/** Raised when a component cannot bind its endpoint. */
export class BindError extends Error {
  readonly endpoint: string;
  constructor(component: string, endpoint: string, reason: string, options?: ErrorOptions) {
    super(`${component}: cannot bind ${endpoint}: ${reason}`, options);
    this.name = "BindError";
    this.endpoint = endpoint;
  }
}
