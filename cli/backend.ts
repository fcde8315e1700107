/**
 * What the commands need from plantd, whichever way it is reached: the
 * gateway over HTTP and WebSocket (cli/gateway_backend.ts) or the broker over
 * Majordomo and the buses directly (cli/broker_backend.ts). Both give the
 * same data and fail with the same {@link CliError} codes.
 *
 * @module
 */
import type { HistoryRecord } from "../state/client.ts";
import type { Health } from "../telemetry/health.ts";

/** A service known to the broker; counts are null where the broker does not tell them (mmi.service). */
export interface ServiceRow {
  name: string;
  workers: number | null;
  idle: number | null;
  busy: number | null;
  queued: number | null;
}

/** A reply frame: text (plus the parsed value when JSON), or base64 when not UTF-8. */
export interface Frame {
  text?: string;
  json?: unknown;
  base64?: string;
}

/** A key's value. */
export interface Entry {
  scope: string;
  key: string;
  value: string;
  revision: number;
  /** ms since the epoch */
  updated_at: number;
}

/** A bus message as printed. */
export interface BusLine {
  bus: string;
  topic: string;
  /** Text, or base64 when `encoding` says so. */
  payload: string;
  encoding: "text" | "base64";
}

/** Options of {@link Backend.subscribe}. */
export interface SubscribeOptions {
  /** Told once the subscription is in place. */
  onReady: (where: string) => void;
  onMessage: (message: BusLine) => void;
  /** Ends the subscription. */
  signal: AbortSignal;
}

export type { HistoryRecord };

/** What `plant dlq` asks of the broker's dead-letter queue (docs/durability.md). */
export type DlqOperation = "list" | "show" | "replay" | "delete" | "purge";

/** What `plant alarms` asks of `org.plantd.Alarms` (docs/alarms.md). */
export type AlarmsOperation = "list" | "ack" | "rules" | "rule-set" | "rule-delete";

/** plantd, reached one way or the other. */
export interface Backend {
  /** Where requests go, for messages. */
  readonly target: string;
  /** The broker's services, or those of `names`. */
  services(names?: string[]): Promise<ServiceRow[]>;
  /** Set when the listing is not the broker's own (a note for the user). */
  servicesSource?(): string | undefined;
  /** Sends `[operation, json]` to `service`; resolves with the final reply's frames. */
  call(service: string, operation: string, json: string): Promise<Frame[]>;
  health(): Promise<Health>;
  listScopes(): Promise<string[]>;
  listKeys(scope: string): Promise<string[]>;
  createScope(scope: string): Promise<void>;
  deleteScope(scope: string): Promise<void>;
  /** Fails with KEY_NOT_FOUND or SCOPE_NOT_FOUND. */
  get(scope: string, key: string): Promise<Entry>;
  /** Creates the scope when needed; returns the new revision. */
  set(scope: string, key: string, value: string): Promise<number>;
  /** Fails with KEY_NOT_FOUND when the key does not exist. */
  delete(scope: string, key: string): Promise<void>;
  /** The key's history, newest first (docs/state.md#key-history); empty when it has none. */
  history(scope: string, key: string): Promise<HistoryRecord[]>;
  /**
   * A dead-letter queue operation: `list` takes `service`, `limit`, `after`;
   * `show`, `replay` and `delete` an `id`; `purge` a `service`. Resolves with
   * the answer's data (`/api/dlq`'s JSON); a missing dead letter is NOT_FOUND.
   */
  dlq(
    operation: DlqOperation,
    params: Record<string, string | number>,
  ): Promise<Record<string, unknown>>;
  /** GET /api/events with `query`; only the gateway has the event history. */
  events?(query: Record<string, string>): Promise<Record<string, unknown>>;
  /**
   * An alarms operation: `list` takes the `/api/alarms` filters, `ack` and
   * `rule-delete` an `id`, `rule-set` a `rule` (with its id). Resolves with
   * the answer's data (`/api/alarms`'s JSON); unknown ids are NOT_FOUND.
   */
  alarms(
    operation: AlarmsOperation,
    params: Record<string, unknown>,
  ): Promise<Record<string, unknown>>;
  /** Streams bus messages until `signal` aborts; rejects when the stream breaks. */
  subscribe(bus: string, prefix: string, options: SubscribeOptions): Promise<void>;
  close(): Promise<void>;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** A payload as text when it is UTF-8, else base64. */
export function payloadLine(payload: Uint8Array): Pick<BusLine, "payload" | "encoding"> {
  try {
    return { payload: decoder.decode(payload), encoding: "text" };
  } catch {
    let binary = "";
    for (const byte of payload) binary += String.fromCharCode(byte);
    return { payload: btoa(binary), encoding: "base64" };
  }
}
