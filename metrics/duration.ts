/**
 * Durations as the query API takes them: a positive integer and a unit,
 * `500ms`, `10s`, `1m`, `1h`, `1d`, `1w`. No months or years: buckets have a
 * fixed width on every engine.
 *
 * @module
 */

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** The accepted form, for messages and OpenAPI. */
export const DURATION_PATTERN = /^([1-9][0-9]{0,9})(ms|s|m|h|d|w)$/;

/** Milliseconds of a duration such as `10s`, or undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION_PATTERN.exec(text);
  if (!match) return undefined;
  const ms = Number(match[1]) * UNITS[match[2]!]!;
  return Number.isSafeInteger(ms) ? ms : undefined;
}
