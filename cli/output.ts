/**
 * What `plant` prints: aligned tables for people, JSON for scripts. Output
 * goes through an {@link Output} so commands never touch stdout themselves.
 *
 * @module
 */

/** Where a command's results go. */
export interface Output {
  /** True with `--json`. */
  readonly json: boolean;
  /** One line of text for people (ignored in JSON mode). */
  line(text: string): void;
  /** A value for scripts: one JSON document per line (ignored unless JSON mode). */
  data(value: unknown): void;
  /** A table for people (ignored in JSON mode). */
  table(headers: string[], rows: ReadonlyArray<ReadonlyArray<string | number>>): void;
  /** A note on stderr, for people and scripts alike. */
  note(text: string): void;
}

const encoder = new TextEncoder();

/** Writes synchronously: a streamed line must be out before the next one or an exit. */
function write(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
}

/** Renders rows as columns separated by two spaces; the last column is not padded. */
export function renderTable(
  headers: string[],
  rows: ReadonlyArray<ReadonlyArray<string | number>>,
): string {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? "").length)));
  return cells.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ")
      .trimEnd()
  ).join("\n") + "\n";
}

/** Output to the process's stdout and stderr. */
export function consoleOutput(json: boolean): Output {
  return {
    json,
    line(text) {
      if (!json) write(Deno.stdout, text + "\n");
    },
    data(value) {
      if (json) write(Deno.stdout, JSON.stringify(value) + "\n");
    },
    table(headers, rows) {
      if (!json) write(Deno.stdout, renderTable(headers, rows));
    },
    note(text) {
      write(Deno.stderr, `plant: ${text}\n`);
    },
  };
}

/** A one-line rendering of any error message (no stack, no embedded newlines). */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, " ").trim();
}

/** Milliseconds since the epoch as an ISO time, or "-". */
export function isoTime(ms: number | undefined): string {
  return typeof ms === "number" && Number.isFinite(ms) ? new Date(ms).toISOString() : "-";
}
