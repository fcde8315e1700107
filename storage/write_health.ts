/**
 * Whether a store's writes succeed, for /healthz and the log: the state
 * worker's (a database that answers `SELECT 1` can still refuse every write:
 * disk full, read-only, I/O errors) and the broker's journal of durable
 * requests. The last commit decides: a failed one turns the check
 * (`store_writes` by default) DOWN with its class and cause, the next
 * successful one turns it UP again. A database that cannot be reached
 * (PostgreSQL down) counts as failing writes too, until it answers again.
 *
 * @module
 */
import type { Check } from "../telemetry/health.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import { type StorageFailure, storageFailure } from "./failure.ts";

/** Where failures and the recovery are reported (a logger's methods). */
export interface WriteHealthLog {
  error(message: string, properties: Record<string, unknown>): void;
  info(message: string, properties: Record<string, unknown>): void;
}

interface Failing {
  failure: StorageFailure;
  cause: string;
  since: string;
}

/** Names of a {@link WriteHealth}: its check, and the writes in its log lines. */
export interface WriteHealthNames {
  /** @default "store_writes" */
  check?: string;
  /** @default "state writes" */
  writes?: string;
}

/** Tracks commit outcomes; feed it the store's onCommit and onCommitError. */
export class WriteHealth {
  #log: WriteHealthLog;
  #limit: ReturnType<typeof logLimiter>;
  #failing: Failing | undefined;
  #changed = new Date().toISOString();
  #check: string;
  #writes: string;

  /** Each failure class is logged at most once per `windowMs`, with how many were held back. */
  constructor(log: WriteHealthLog, windowMs = 60_000, names: WriteHealthNames = {}) {
    this.#log = log;
    this.#limit = logLimiter(windowMs);
    this.#check = names.check ?? "store_writes";
    this.#writes = names.writes ?? "state writes";
  }

  /** A group of `writes` failed to commit with `error`. */
  failed(error: unknown, writes: number): void {
    const failure = storageFailure(error);
    const cause = error instanceof Error ? error.message : String(error);
    if (this.#failing?.failure !== failure) {
      this.#changed = new Date().toISOString();
    }
    this.#failing = { failure, cause, since: this.#failing?.since ?? this.#changed };
    this.#limit(
      failure,
      (suppressed) =>
        this.#log.error(`${this.#writes} fail: {failure}: {cause}`, {
          failure,
          cause,
          writes,
          // Failures of this class not logged since the last line.
          suppressed,
        }),
    );
  }

  /** A commit wrote to the database. */
  succeeded(): void {
    if (!this.#failing) return;
    this.#log.info(`${this.#writes} succeed again after {failure}`, {
      failure: this.#failing.failure,
      since: this.#failing.since,
    });
    this.#failing = undefined;
    this.#changed = new Date().toISOString();
  }

  /**
   * The database did not answer a ping: writes fail as well, so this counts
   * as their failure (the class is usually STORAGE_UNAVAILABLE).
   */
  unreachable(error: unknown): void {
    this.failed(error, 0);
  }

  /**
   * The database answered a ping: a failure that was only about reaching it
   * is over (a full or read-only database still needs a write to succeed).
   */
  reachable(): void {
    if (this.#failing?.failure !== "STORAGE_UNAVAILABLE") return;
    this.#log.info("state store reachable again after {failure}", {
      failure: this.#failing.failure,
      since: this.#failing.since,
    });
    this.#failing = undefined;
    this.#changed = new Date().toISOString();
  }

  /** The failure class while writes fail, else undefined. */
  get failing(): StorageFailure | undefined {
    return this.#failing?.failure;
  }

  /** The health check. */
  check(): Check {
    const failing = this.#failing;
    return {
      name: this.#check,
      status: failing ? "DOWN" : "UP",
      lastUpdated: this.#changed,
      ...(failing ? { output: `${failing.failure}: ${failing.cause}` } : {}),
    };
  }
}
