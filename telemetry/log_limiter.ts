/**
 * A limit on repeated log lines (a flood of bad input must not flood the log).
 *
 * @module
 */

/** Logs at most one line per key and interval, with the number of lines held back. */
export function logLimiter(intervalMs: number, now: () => number = Date.now) {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (key: string, log: (suppressed: number) => void): void => {
    const at = now();
    const entry = last.get(key);
    if (entry && at - entry.at < intervalMs) {
      entry.suppressed++;
      return;
    }
    log(entry?.suppressed ?? 0);
    last.set(key, { at, suppressed: 0 });
  };
}
