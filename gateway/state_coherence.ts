/**
 * Whether this gateway sees every change the state service makes, so its
 * read cache may keep an entry until a change replaces it instead of for a
 * short TTL (docs/state.md, "Read cache").
 *
 * Each state worker numbers its change events without gaps (`pub`, `n`) and
 * says how many it has sent in a heartbeat every `every` ms
 * (state/changes.ts); only events the state bus gate admitted (signed, not
 * replayed) are counted here. The view is complete while
 * - every known publisher's numbers arrive without a gap;
 * - every known publisher's heartbeats keep coming (within `liveness` x `every`);
 * - at least one publisher is live, and the broker connections its
 *   publishers say they hold add up to no fewer than the state workers the
 *   broker lists (a worker whose events never arrive here, a Go plantd state
 *   service for one, shows by count).
 *
 * Each time that stops holding (a gap, a publisher first seen after its first
 * event, a silent publisher, an unseen worker), `onLost` is told: the cache
 * drops everything it holds, since any entry may have missed a change.
 *
 * @module
 */

/** Why the view stopped being complete (label `reason` of the cache's flush counter). */
export type LossReason = "gap" | "late_join" | "silent" | "unseen_worker";

/** Options of {@link StateCoherence}. */
export interface StateCoherenceOptions {
  onLost: (reason: LossReason) => void;
  /** State workers the broker lists (0 when it lists none). */
  workers?: () => number;
  /** Heartbeat periods a publisher may miss before it counts as silent. @default 3 */
  liveness?: number;
  /** How long a publisher first seen by a change may go without a heartbeat. @default 10000 */
  firstHeartbeatMs?: number;
  now?: () => number;
}

interface Publisher {
  /** The last `n` seen. */
  n: number;
  /** Broker connections it holds (0 until its first heartbeat). */
  workers: number;
  /** When it counts as silent unless a heartbeat comes first. */
  deadline: number;
}

/** Tracks the state service's publishers; see the module doc. */
export class StateCoherence {
  readonly #publishers = new Map<string, Publisher>();
  readonly #onLost: (reason: LossReason) => void;
  readonly #workers: () => number;
  readonly #liveness: number;
  readonly #firstHeartbeatMs: number;
  readonly #now: () => number;
  #complete = false;

  constructor(options: StateCoherenceOptions) {
    this.#onLost = options.onLost;
    this.#workers = options.workers ?? (() => 0);
    this.#liveness = options.liveness ?? 3;
    this.#firstHeartbeatMs = options.firstHeartbeatMs ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** A change event numbered `n` by publisher `pub` was admitted. */
  change(pub: string, n: number): void {
    const known = this.#publishers.get(pub);
    if (!known) {
      this.#publishers.set(pub, { n, workers: 0, deadline: this.#now() + this.#firstHeartbeatMs });
      if (n !== 1) this.#onLost("late_join");
      return;
    }
    if (n !== known.n + 1) this.#onLost("gap");
    known.n = n;
  }

  /**
   * A heartbeat of `pub`, which has numbered `n` change events, beats every
   * `everyMs` and holds `workers` broker connections.
   */
  heartbeat(pub: string, n: number, everyMs: number, workers: number): void {
    const deadline = this.#now() + everyMs * this.#liveness;
    const known = this.#publishers.get(pub);
    if (!known) {
      this.#publishers.set(pub, { n, workers, deadline });
      if (n !== 0) this.#onLost("late_join");
    } else {
      if (n !== known.n) this.#onLost("gap");
      known.n = n;
      known.workers = workers;
      known.deadline = deadline;
    }
  }

  /**
   * Whether the view is complete now; forgets silent publishers and tells
   * `onLost` when the view has just stopped being complete. Called on a
   * timer and before an entry is cached.
   */
  check(): boolean {
    const now = this.#now();
    let silent = false;
    let workers = 0;
    for (const [pub, publisher] of this.#publishers) {
      if (publisher.deadline > now) {
        workers += publisher.workers;
        continue;
      }
      this.#publishers.delete(pub);
      silent = true;
    }
    if (silent) this.#onLost("silent");
    const complete = this.#publishers.size > 0 && workers >= this.#workers();
    if (this.#complete && !complete && !silent) this.#onLost("unseen_worker");
    this.#complete = complete;
    return complete;
  }

  /** Publishers heard from within their liveness. */
  get publishers(): number {
    return this.#publishers.size;
  }
}
