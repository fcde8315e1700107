/**
 * The Binary Star state machine of a broker pair (ZeroMQ Guide, chapter 4,
 * "Binary Star"): a primary and a backup tell each other their state every
 * heartbeat, and exactly one of them serves clients. It performs no I/O and
 * reads time from the injected clock, so every transition is testable
 * without sockets or timers; broker/pair.ts runs it on the state channel.
 *
 * States and events are the guide's: PRIMARY and BACKUP (started, not yet
 * decided), ACTIVE (serves clients), PASSIVE (refuses them); events are the
 * peer's reported state and a client request. A passive broker takes over
 * only when both hold: the peer has been silent for two heartbeats, and a
 * client request arrives (the clients vote). A pair cut off from each other
 * but reachable by clients therefore does not split: clients only come to
 * the passive broker once they lost the active one.
 *
 * Where this differs from the guide (docs/ha.md "State machine"):
 * - A starting primary serves a client only once its peer has been silent
 *   for two heartbeats (the guide's serves at once): a primary restarted
 *   while the backup is active would otherwise serve until it hears it.
 * - Two active brokers (the guide aborts): the backup goes passive, the
 *   primary stays active. Two passive ones (the guide aborts): the primary
 *   becomes active. Either is reported as an error.
 * - A peer reporting the same role as ours is a configuration error: it
 *   counts as a live peer (nothing fails over to a misconfigured pair) and
 *   is reported; no state changes.
 *
 * @module
 */

/** Which broker of the pair this is: fixed by configuration. */
export type PairRole = "primary" | "backup";

/** Where the state machine is: the guide's four states. */
export type PairState = "primary" | "backup" | "active" | "passive";

export const PAIR_STATES: readonly PairState[] = ["primary", "backup", "active", "passive"];

/** A change of state and why it happened, for the log and metrics. */
export interface Transition {
  from: PairState;
  to: PairState;
  reason: string;
}

/** What a peer's state report did. */
export interface PeerOutcome {
  transition?: Transition;
  /** Something is wrong with the pair (dual active or passive, same roles). */
  error?: string;
}

/** What a client request did: whether to serve it, and any change of state. */
export interface ClientOutcome {
  accept: boolean;
  transition?: Transition;
}

/** Options of {@link BinaryStar}. */
export interface BinaryStarOptions {
  /** How often the peers report their state; silent for two of them, a peer is dead. */
  heartbeatMs: number;
  now?: () => number;
}

/** The Binary Star state machine of one broker of the pair. */
export class BinaryStar {
  readonly role: PairRole;
  readonly expiryMs: number;
  #state: PairState;
  #now: () => number;
  /** Past it the peer counts as dead; from the start, the time it has to speak first. */
  #peerExpiry: number;
  #peerState: PairState | undefined;
  #peerHeardAt: number | undefined;

  constructor(role: PairRole, options: BinaryStarOptions) {
    if (!(options.heartbeatMs > 0)) throw new RangeError("heartbeatMs must be positive");
    this.role = role;
    this.#state = role;
    this.#now = options.now ?? Date.now;
    this.expiryMs = 2 * options.heartbeatMs;
    this.#peerExpiry = this.#now() + this.expiryMs;
  }

  get state(): PairState {
    return this.#state;
  }

  /** Whether client requests are served now. */
  get active(): boolean {
    return this.#state === "active";
  }

  /** The state the peer last reported, if it ever did. */
  get peerState(): PairState | undefined {
    return this.#peerState;
  }

  /** When the peer last reported (the injected clock's time), if it ever did. */
  get peerHeardAt(): number | undefined {
    return this.#peerHeardAt;
  }

  /** Whether the peer reported within the last two heartbeats. */
  get peerAlive(): boolean {
    return this.#peerHeardAt !== undefined && this.#now() <= this.#peerExpiry;
  }

  /** The peer reported `state`; `role` is the role it says it has, when it says. */
  onPeer(state: PairState, role?: PairRole): PeerOutcome {
    this.#peerHeardAt = this.#now();
    this.#peerExpiry = this.#peerHeardAt + this.expiryMs;
    this.#peerState = state;
    const sameRole = role === this.role || state === this.role;
    if (sameRole) {
      return {
        error: `the peer is also the ${this.role}: one broker of the pair must be ` +
          `primary and the other backup`,
      };
    }
    switch (this.#state) {
      case "primary":
        if (state === "backup") return this.#go("active", "the backup is up: active");
        if (state === "active") return this.#go("passive", "the backup is active: passive");
        // A passive peer becomes active on hearing a primary: wait for it to say so.
        return {};
      case "backup":
        if (state === "active") return this.#go("passive", "the primary is active: passive");
        return {};
      case "active":
        if (state !== "active") return {};
        if (this.role === "backup") {
          return {
            ...this.#go("passive", "both brokers were active: the backup gives way"),
            error: "both brokers of the pair were active (split brain): the backup went passive",
          };
        }
        return {
          error: "both brokers of the pair were active (split brain): the backup must yield",
        };
      case "passive":
        if (state === "primary" || state === "backup") {
          return this.#go("active", `the ${state} restarted: active`);
        }
        if (state === "passive") {
          if (this.role === "primary") {
            return {
              ...this.#go("active", "both brokers were passive: the primary takes over"),
              error: "both brokers of the pair were passive: the primary went active",
            };
          }
          return { error: "both brokers of the pair were passive: the primary must take over" };
        }
        return {};
    }
  }

  /** A client request arrived: serve it or refuse it (see the module documentation). */
  onClientRequest(): ClientOutcome {
    switch (this.#state) {
      case "active":
        return { accept: true };
      case "backup":
        return { accept: false };
      case "primary":
      case "passive": {
        if (this.#now() <= this.#peerExpiry) return { accept: false };
        // Passive is only reached on a peer's report, so it was heard at least once.
        const reason = this.#state === "primary"
          ? `no peer for ${this.expiryMs} ms and a client asked: active alone`
          : `peer silent for ${this.#now() - this.#peerHeardAt!} ms and a client asked: failover`;
        return { accept: true, ...this.#go("active", reason) };
      }
    }
  }

  #go(to: PairState, reason: string): { transition: Transition } {
    const from = this.#state;
    this.#state = to;
    return { transition: { from, to, reason } };
  }
}
