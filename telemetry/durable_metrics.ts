/**
 * Prometheus metrics of the broker's durable requests and journal
 * (broker/durable.ts), fed by its observer interface.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { DurableObserver, DurableRequests } from "../broker/durable.ts";
import { storageFailure } from "../storage/failure.ts";

/** Creates the metrics in `registry`; returns the observer that feeds them. */
export function durableMetrics(
  registry: Registry,
  durable: () => DurableRequests | undefined,
): DurableObserver {
  const registers = [registry];
  new Gauge({
    name: "mdp_journal_depth",
    help: "Durable requests journaled and not yet answered (queued or with a worker)",
    registers,
    collect() {
      this.set(durable()?.depth ?? 0);
    },
  });
  new Gauge({
    name: "mdp_dead_letters",
    help: "Dead letters in the broker's journal",
    registers,
    collect() {
      this.set(durable()?.deadLetters ?? 0);
    },
  });
  const admitted = new Counter({
    name: "mdp_durable_admitted_total",
    help: "Durable requests journaled",
    registers,
  });
  const refused = new Counter({
    name: "mdp_durable_refused_total",
    help: "Durable requests refused because the journal could not store them, per failure class",
    labelNames: ["failure"],
    registers,
  });
  const reasked = new Counter({
    name: "mdp_durable_reasks_total",
    help:
      "Durable requests asked again by their key: attached to the pending request, answered from the stored reply, told they are dead letters, or new",
    labelNames: ["outcome"],
    registers,
  });
  const dead = new Counter({
    name: "mdp_dead_lettered_total",
    help: "Durable requests moved to the dead-letter queue, per reason",
    labelNames: ["reason"],
    registers,
  });
  const replays = new Counter({
    name: "mdp_dlq_replays_total",
    help: "Dead letters replayed",
    registers,
  });
  const commits = new Histogram({
    name: "mdp_journal_commit_changes",
    help: "Changes per journal transaction (group commit)",
    buckets: [1, 2, 4, 8, 16, 64, 256, 1024, 4096],
    registers,
  });
  const commitSeconds = new Histogram({
    name: "mdp_journal_commit_duration_seconds",
    help: "Duration of a journal transaction",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers,
  });
  const commitErrors = new Counter({
    name: "mdp_journal_commit_errors_total",
    help: "Journal transactions that failed, per failure class",
    labelNames: ["failure"],
    registers,
  });
  return {
    admitted: () => admitted.inc(),
    refused: (_service, failure) => refused.inc({ failure }),
    reasked: (outcome) => reasked.inc({ outcome }),
    deadLettered: (letter) => dead.inc({ reason: letter.reason }),
    replayed: () => replays.inc(),
    committed: (changes, seconds) => {
      commits.observe(changes);
      commitSeconds.observe(seconds);
    },
    commitFailed: (error) => commitErrors.inc({ failure: storageFailure(error) }),
  };
}
