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

/** Why `Deno.listen` (or `Deno.serve`) could not listen, in the words of a {@link BindError}. */
export function listenFailure(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "address already in use";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available on this host";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return (error as Error).message;
}
