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

/** Durable requests, ready to give the broker. */
export interface OpenDurable {
  durable: DurableRequests;
  /** The `journal` check: DOWN with the failure class and cause while commits fail. */
  check(): Check;
  close(): Promise<void>;
}

/** Opens the journal of `config`, or returns undefined when no service is durable. */
export async function openDurable(
  config: BrokerConfig,
  registry: Registry,
  onDeadLetter: (letter: DeadLetter) => void = () => {},
): Promise<OpenDurable | undefined> {
  if (config.durable_services.length === 0) return undefined;
  const log = logger("broker", "journal");
  const store: JournalStore = /^postgres(ql)?:\/\//.test(config.journal)
    ? await PostgresJournal.open(config.journal)
    : await LibsqlJournal.open({
      location: config.journal,
      ...(config.journal_auth_token ? { authToken: config.journal_auth_token } : {}),
      synchronous: config.journal_synchronous,
      maxBytes: config.journal_max_bytes,
    });
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
  let durable: DurableRequests;
  try {
    durable = holder.durable = await DurableRequests.open(store, {
      services: config.durable_services,
      maxAttempts: config.durable_max_attempts,
      replyTtlMs: config.durable_reply_ttl_ms,
      timeoutMs: config.durable_timeout_ms || config.request_timeout_ms,
      observer,
    });
  } catch (error) {
    await store.close();
    throw error;
  }
  log.info("durable services {services}: journal {storage}, {pending} requests to route", {
    services: config.durable_services.join(", "),
    storage: store.description,
    pending: durable.depth,
    dead_letters: durable.deadLetters,
  });
  return {
    durable,
    // Not required: non-durable requests are served while the journal fails.
    check: () => ({ ...health.check(), required: false }),
    close: () => durable.close(),
  };
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
