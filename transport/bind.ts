/**
 * Binding with errors a person can act on.
 *
 * @module
 */
import type * as zmq from "zeromq";

/** Raised when a component cannot bind its endpoint. */
export class BindError extends Error {
  readonly endpoint: string;
  constructor(component: string, endpoint: string, reason: string, options?: ErrorOptions) {
    super(`${component}: cannot bind ${endpoint}: ${reason}`, options);
    this.name = "BindError";
    this.endpoint = endpoint;
  }
}

/**
 * Binds `socket` to `endpoint`. czmq's `@` prefix (bind) found in Go plantd
 * configuration files is accepted and stripped.
 */
export async function bindOrExplain(
  socket: zmq.Socket,
  endpoint: string,
  component: string,
): Promise<void> {
  const target = endpoint.startsWith("@") ? endpoint.slice(1) : endpoint;
  try {
    await socket.bind(target);
  } catch (error) {
    const code = (error as { code?: string }).code;
    const reason = code === "EADDRINUSE"
      ? "address already in use"
      : code === "EINVAL" || code === "EPROTONOSUPPORT"
      ? "invalid endpoint"
      : code === "EADDRNOTAVAIL"
      ? "address not available on this host"
      : (error as Error).message;
    throw new BindError(component, target, reason, { cause: error });
  }
}
