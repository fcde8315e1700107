/**
 * The dead-letter queue and journal operations of the broker's own service
 * `org.plantd.Broker` (broker/durable_ops.ts answers them): their names, as
 * the gateway, the CLI and the permission check need them.
 *
 * @module
 */

/** The broker's own service (broker/broker.ts BROKER_SERVICE), for those that do not import the broker. */
export const BROKER_SERVICE_NAME = "org.plantd.Broker";

/** Operations that read: dead letters, a request's state, the journal's counts. */
export const DURABLE_READ_OPERATIONS: ReadonlySet<string> = new Set([
  "dlq-list",
  "dlq-show",
  "durable-status",
  "journal",
]);

/** Operations that change the dead-letter queue. */
export const DURABLE_WRITE_OPERATIONS: ReadonlySet<string> = new Set([
  "dlq-replay",
  "dlq-delete",
  "dlq-purge",
]);

/** Whether `operation` is a durable-request operation of `org.plantd.Broker`. */
export function isDurableOperation(operation: string): boolean {
  return DURABLE_READ_OPERATIONS.has(operation) || DURABLE_WRITE_OPERATIONS.has(operation);
}

/**
 * Machine-readable codes of failed durable operations (`{success: false,
 * error, code}`): the gateway's HTTP status and the CLI's exit follow them.
 */
export type DurableOperationCode =
  | "BAD_REQUEST"
  | "NOT_FOUND"
  /** The broker has no durable services (no journal). */
  | "NOT_CONFIGURED"
  /** The journal could not be read or written; the message names the cause. */
  | "JOURNAL_UNAVAILABLE";
