/**
 * Lets the same log line through at most once per window: a peer that
 * retries (reconnects, re-sends READY) must not flood the log, yet the line
 * that does get through says how many were held back.
 *
 * @module
 */

/** Distinct lines remembered; beyond it the memory starts over (a flood of distinct ids). */
const MAX_IDS = 1000;

/** A per-id log throttle. */
export class LogWindow {
  readonly #windowMs: number;
  readonly #now: () => number;
  #last = new Map<string, { at: number; suppressed: number }>();

  constructor(windowMs = 10_000, now: () => number = Date.now) {
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /**
   * Whether the line `id` may be logged now: undefined to hold it back, else
   * how many were held back since the last one (0 for none).
   */
  pass(id: string): number | undefined {
    const now = this.#now();
    const last = this.#last.get(id);
    if (last && now - last.at < this.#windowMs) {
      last.suppressed++;
      return undefined;
    }
    if (this.#last.size > MAX_IDS) this.#last.clear();
    this.#last.set(id, { at: now, suppressed: 0 });
    return last?.suppressed ?? 0;
  }
}

/** The same throttle as a function: `log` runs when the line `key` may be logged. */
export function logLimiter(windowMs: number, now: () => number = Date.now) {
  const window = new LogWindow(windowMs, now);
  return (key: string, log: (suppressed: number) => void): void => {
    const suppressed = window.pass(key);
    if (suppressed !== undefined) log(suppressed);
  };
}
