/**
 * Errors the broker answers a client with itself. They travel as one FINAL
 * JSON frame in plantd's reply shape, so Go plantd clients show the message,
 * plus an `mdp` object that marks the reply as the broker's own.
 *
 * @module
 */
import { frame } from "../mdp/protocol.ts";

/** Stable codes of broker-made error replies. */
export type BrokerErrorCode =
  | "SERVICE_UNAVAILABLE"
  | "WORKER_LOST"
  | "EMPTY_REQUEST"
  | "QUEUE_FULL"
  | "SHUTTING_DOWN"
  /** A client message the broker cannot read as a request (e.g. command 0x02). */
  | "BAD_REQUEST"
  /**
   * The broker is the passive one of a pair (docs/ha.md): the request was
   * not queued nor given to a worker, so it may be sent to the other broker.
   */
  | "BROKER_PASSIVE";

/** The body frame of a broker-made error reply. */
export function brokerErrorBody(
  code: BrokerErrorCode,
  service: string,
  message: string,
): Uint8Array {
  return frame(JSON.stringify({ success: false, error: message, mdp: { code, service } }));
}
