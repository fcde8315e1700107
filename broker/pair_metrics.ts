/**
 * Prometheus metrics and health checks of a broker pair (broker/pair.ts,
 * docs/ha.md).
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { PAIR_STATES } from "./binary_star.ts";
import type { BrokerPair, PairObserver } from "./pair.ts";
import type { Check } from "../telemetry/health.ts";

/** Creates the pair's metrics in `registry` and returns the observer that feeds them. */
export function pairMetrics(
  registry: Registry,
  pair: () => BrokerPair | undefined,
): Required<Pick<PairObserver, "transition" | "error" | "refused">> {
  const registers = [registry];
  new Gauge({
    name: "plantd_broker_pair_state",
    help: "1 for the Binary Star state this broker of a pair is in, 0 for the others",
    labelNames: ["state"],
    registers,
    collect() {
      const current = pair()?.fsm.state;
      for (const state of PAIR_STATES) this.set({ state }, state === current ? 1 : 0);
    },
  });
  new Gauge({
    name: "plantd_broker_pair_peer_up",
    help: "1 while the peer of the pair reports within two heartbeats",
    registers,
    collect() {
      this.set(pair()?.fsm.peerAlive ? 1 : 0);
    },
  });
  const transitions = new Counter({
    name: "plantd_broker_pair_transitions_total",
    help: "Changes of Binary Star state, by state left and state entered",
    labelNames: ["from", "to"],
    registers,
  });
  const errors = new Counter({
    name: "plantd_broker_pair_errors_total",
    help: "Pair errors: the peer with the same role, both brokers active or both passive",
    registers,
  });
  const refused = new Counter({
    name: "plantd_broker_pair_refused_total",
    help: "Client requests refused (BROKER_PASSIVE) because this broker was not active",
    labelNames: ["state"],
    registers,
  });
  return {
    transition: ({ from, to }) => transitions.inc({ from, to }),
    error: () => errors.inc(),
    refused: (state) => refused.inc({ state }),
  };
}

/**
 * The broker's /healthz checks of its pair. `pair_state` is UP in every
 * state a healthy pair member can be in, passive included, and names the
 * state; it is DOWN while the pair is misconfigured (both brokers claim the
 * same role) since such a broker never serves. `pair_peer` (not required)
 * is DOWN while the peer is silent: the pair has no standby.
 */
export function pairChecks(pair: BrokerPair, now: () => number = Date.now): Check[] {
  const fsm = pair.fsm;
  const at = new Date(now()).toISOString();
  const error = pair.lastError;
  const misconfigured = error !== undefined && error.misconfigured &&
    now() - error.at <= 2 * fsm.expiryMs;
  const heard = fsm.peerHeardAt;
  return [
    {
      name: "pair_state",
      status: misconfigured ? "DOWN" : "UP",
      lastUpdated: at,
      output: misconfigured
        ? `${fsm.role}: ${error!.message}`
        : `${fsm.state} (${fsm.role}; ${fsm.active ? "serving clients" : "not serving clients"})`,
    },
    {
      name: "pair_peer",
      status: fsm.peerAlive ? "UP" : "DOWN",
      lastUpdated: at,
      required: false,
      output: fsm.peerAlive
        ? `peer ${fsm.peerState} at ${pair.peerEndpoint}`
        : heard === undefined
        ? `no report from the peer at ${pair.peerEndpoint} yet`
        : `no report from the peer at ${pair.peerEndpoint} for ${
          now() - heard
        } ms (last: ${fsm.peerState})`,
    },
  ];
}
