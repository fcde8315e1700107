/**
 * The broker's durable requests from its configuration: the journal opened
 * (and locked), what it held loaded, metrics, the `journal` health check and
 * the log. Nothing is opened when no service is durable.
 *
 * @module
 */
import type { Registry } from "prom-client";
import type { BrokerConfig } from "../config/components.ts";
import { type DurableObserver, DurableRequests } from "../broker/durable.ts";
import type { DeadLetter, JournalStore } from "../broker/journal.ts";
import { LibsqlJournal } from "../broker/journal_libsql.ts";
import { PostgresJournal } from "../broker/journal_postgres.ts";
import { WriteHealth } from "../storage/write_health.ts";
import { durableMetrics } from "../telemetry/durable_metrics.ts";
import type { Check } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import { Publisher } from "../bus/publisher.ts";
import type { RunningBuses } from "./bus.ts";
import { connectableEndpoint } from "./running.ts";
import type { Broker } from "../broker/broker.ts";

/** Durable requests, ready to give the broker. */
export interface OpenDurable {
  durable: DurableRequests;
  /** The `journal` check: DOWN with the failure class and cause while commits fail. */
  check(): Check;
  close(): Promise<void>;
}

/** The journal's store of `config`: PostgreSQL for a postgres:// URL, else libSQL. */
function openStore(config: BrokerConfig): Promise<JournalStore> {
  return isPostgresJournal(config.journal)
    ? PostgresJournal.open(config.journal)
    : LibsqlJournal.open({
      location: config.journal,
      ...(config.journal_auth_token ? { authToken: config.journal_auth_token } : {}),
      synchronous: config.journal_synchronous,
      maxBytes: config.journal_max_bytes,
    });
}

/** Whether `journal` names a PostgreSQL journal (the only kind a broker pair can share). */
export function isPostgresJournal(journal: string): boolean {
  return /^postgres(ql)?:\/\//.test(journal);
}

/** The observer, health and metrics of durable requests, made once per process. */
function durableParts(
  config: BrokerConfig,
  registry: Registry,
  onDeadLetter: (letter: DeadLetter) => void,
) {
  const log = logger("broker", "journal");
  const health = new WriteHealth(log, 60_000, { check: "journal", writes: "journal writes" });
  const holder: { durable?: DurableRequests } = {};
  const metrics = durableMetrics(registry, () => holder.durable);
  const observer: DurableObserver = {
    ...metrics,
    committed: (changes, seconds) => {
      metrics.committed?.(changes, seconds);
      health.succeeded();
    },
    commitFailed: (error, changes) => {
      metrics.commitFailed?.(error, changes);
      health.failed(error, changes);
    },
    deadLettered: (letter) => {
      metrics.deadLettered?.(letter);
      log.warn("dead letter {id} for {service}: {reason}: {detail}", {
        id: letter.key,
        service: letter.service,
        reason: letter.reason,
        detail: letter.detail,
        attempts: letter.attempts,
      });
      onDeadLetter(letter);
    },
    replayed: (letter) => {
      metrics.replayed?.(letter);
      log.info("dead letter {id} for {service} replayed", {
        id: letter.key,
        service: letter.service,
      });
    },
  };
  /** Opens the store and loads what it holds. */
  const open = async (): Promise<DurableRequests> => {
    const store = await openStore(config);
    try {
      const durable = holder.durable = await DurableRequests.open(store, {
        services: config.durable_services,
        maxAttempts: config.durable_max_attempts,
        replyTtlMs: config.durable_reply_ttl_ms,
        timeoutMs: config.durable_timeout_ms || config.request_timeout_ms,
        observer,
      });
      log.info("durable services {services}: journal {storage}, {pending} requests to route", {
        services: config.durable_services.join(", "),
        storage: store.description,
        pending: durable.depth,
        dead_letters: durable.deadLetters,
      });
      return durable;
    } catch (error) {
      await store.close();
      throw error;
    }
  };
  return { log, health, open };
}

/** Opens the journal of `config`, or returns undefined when no service is durable. */
export async function openDurable(
  config: BrokerConfig,
  registry: Registry,
  onDeadLetter: (letter: DeadLetter) => void = () => {},
): Promise<OpenDurable | undefined> {
  if (config.durable_services.length === 0) return undefined;
  const { health, open } = durableParts(config, registry, onDeadLetter);
  const durable = await open();
  return {
    durable,
    // Not required: non-durable requests are served while the journal fails.
    check: () => ({ ...health.check(), required: false }),
    close: () => durable.close(),
  };
}

/** The first and the longest wait between two attempts to open a pair's journal. */
const OPEN_RETRY_FIRST_MS = 100;
const OPEN_RETRY_MAX_MS = 2_000;

/** Where a pair broker's journal stands. */
type JournalPhase = "passive" | "opening" | "open";

/**
 * The shared journal of a broker pair (a postgres:// URL, docs/ha.md): opened
 * (its lock taken, what it holds loaded and routed) when this broker becomes
 * active, closed (the lock released) when it goes passive or stops. The
 * open is retried with a bounded backoff while it fails: the dead peer's
 * PostgreSQL session may hold the lock until the server notices the
 * connection is gone. Meanwhile durable requests are refused with
 * JOURNAL_UNAVAILABLE naming the cause, and the `journal` check is DOWN.
 */
export class PairJournal {
  readonly #parts: ReturnType<typeof durableParts>;
  #broker: Broker | undefined;
  #phase: JournalPhase = "passive";
  #durable: DurableRequests | undefined;
  /** Bumped on each activation and deactivation: an open started before either is abandoned. */
  #epoch = 0;
  #attempts = 0;
  #lastError = "";
  #since = Date.now();
  #closing: Promise<void> = Promise.resolve();
  #wake: (() => void) | undefined;

  constructor(
    config: BrokerConfig,
    registry: Registry,
    onDeadLetter: (letter: DeadLetter) => void,
  ) {
    this.#parts = durableParts(config, registry, onDeadLetter);
  }

  /** Where the journal stands: passive, opening (with the cause of the last failure) or open. */
  get phase(): JournalPhase {
    return this.#phase;
  }

  /** The broker to attach the journal to, once it exists. */
  setBroker(broker: Broker): void {
    this.#broker = broker;
    if (this.#durable) broker.attachDurable(this.#durable);
    else broker.detachDurable(this.#refusal());
  }

  #refusal(): string {
    return this.#phase === "passive"
      ? "this broker is passive: the journal is open on the active broker"
      : `this broker became active and is opening the shared journal (attempt ${this.#attempts}${
        this.#lastError ? `: ${this.#lastError}` : ""
      })`;
  }

  /** This broker became active: opens the journal, retrying until it can or goes passive. */
  activate(): void {
    if (this.#phase !== "passive") return;
    const epoch = ++this.#epoch;
    this.#phase = "opening";
    this.#attempts = 0;
    this.#lastError = "";
    this.#since = Date.now();
    this.#broker?.detachDurable(this.#refusal());
    void this.#open(epoch);
  }

  async #open(epoch: number): Promise<void> {
    // The last close must have released the lock before this broker asks for it again.
    await this.#closing;
    let wait = OPEN_RETRY_FIRST_MS;
    while (epoch === this.#epoch) {
      this.#attempts++;
      try {
        const durable = await this.#parts.open();
        if (epoch !== this.#epoch) {
          await durable.close();
          return;
        }
        this.#durable = durable;
        this.#phase = "open";
        this.#broker?.attachDurable(durable);
        this.#parts.log.info("journal open after {attempts} attempts in {ms} ms", {
          attempts: this.#attempts,
          ms: Date.now() - this.#since,
        });
        return;
      } catch (error) {
        this.#lastError = error instanceof Error ? error.message : String(error);
        this.#broker?.detachDurable(this.#refusal());
        this.#parts.log.warn(
          "journal not open (attempt {attempts}, retry in {wait_ms} ms): {error}",
          { attempts: this.#attempts, wait_ms: wait, error: this.#lastError },
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      wait = Math.min(OPEN_RETRY_MAX_MS, wait * 2);
    }
  }

  /** This broker went passive (or stops): closes the journal, releasing its lock. */
  deactivate(): Promise<void> {
    this.#epoch++;
    this.#wake?.();
    if (this.#phase !== "passive") this.#since = Date.now();
    this.#phase = "passive";
    const durable = this.#durable;
    this.#durable = undefined;
    this.#broker?.detachDurable(this.#refusal());
    if (durable) {
      this.#closing = durable.close().then(
        () => this.#parts.log.info("journal closed: its lock is released"),
        (error) => this.#parts.log.error("journal close failed: {error}", { error: String(error) }),
      );
    }
    return this.#closing;
  }

  /** The `journal` check: DOWN while an active broker has not opened it. */
  check(): Check {
    if (this.#phase === "open") return { ...this.#parts.health.check(), required: false };
    if (this.#phase === "passive") {
      return {
        name: "journal",
        status: "UP",
        lastUpdated: new Date(this.#since).toISOString(),
        output: "passive: the journal is open on the active broker",
        required: false,
      };
    }
    return {
      name: "journal",
      status: "DOWN",
      lastUpdated: new Date(this.#since).toISOString(),
      output: `active, journal not open: ${this.#refusal()}`,
      required: false,
    };
  }

  close(): Promise<void> {
    return this.deactivate();
  }
}

/** Topic of the dead-letter events on the event bus. */
export const DLQ_EVENT_TOPIC = "org.plantd.Broker.dlq";

/**
 * Publishes each new dead letter on one of the broker's own buses (its
 * frontend, as any publisher), as `[topic, json]`. A CURVE bus would need a
 * client key of the broker's own: not done, said in the log instead.
 */
export function dlqEvents(
  config: BrokerConfig,
  buses: RunningBuses,
  curve: boolean,
): { publish(letter: DeadLetter): void; close(): Promise<void> } | undefined {
  const bus = config.dlq_event_bus === "" ? undefined : buses.set.get(config.dlq_event_bus);
  if (!bus || config.durable_services.length === 0) return undefined;
  if (curve) {
    logger("broker", "journal").warn(
      "dead-letter events are not published: bus {bus} requires CURVE",
      { bus: config.dlq_event_bus },
    );
    return undefined;
  }
  const publisher = new Publisher(connectableEndpoint(bus.frontend), { form: "frames" });
  return {
    publish(letter) {
      publisher.publish(
        DLQ_EVENT_TOPIC,
        JSON.stringify({
          id: letter.key,
          service: letter.service,
          reason: letter.reason,
          detail: letter.detail,
          attempts: letter.attempts,
          received_at: new Date(letter.receivedAt).toISOString(),
          dead_at: new Date(letter.deadAt).toISOString(),
        }),
      );
    },
    close: () => publisher.close(),
  };
}
