/**
 * Structured logging through LogTape, one line per record, in the seed's
 * format: `{"timestamp","level","service","context","message","fields"}`.
 * Libraries do not log; main.ts and component runners get a logger from here.
 *
 * @module
 */
import {
  configure,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
} from "@logtape/logtape";

/** Levels accepted in configuration. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type ConfigLogLevel = typeof LOG_LEVELS[number];
export type LogFormat = "json" | "pretty";

const LEVEL_NAMES: Record<LogLevel, string> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "fatal",
};

const encoder = new TextEncoder();

function renderMessage(record: LogRecord): string {
  return record.message.map((part) => typeof part === "string" ? part : JSON.stringify(part))
    .join("");
}

/** One record as the seed's JSON line. Category: ["plantd", service, ...context]. */
export function formatJson(record: LogRecord): string {
  const [, service = "plantd", ...context] = record.category;
  return JSON.stringify({
    timestamp: new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level],
    service,
    context: context.join("."),
    message: renderMessage(record),
    fields: record.properties,
  }) + "\n";
}

/** One record for a person at a terminal. */
export function formatPretty(record: LogRecord): string {
  const [, service = "plantd", ...context] = record.category;
  const fields = Object.keys(record.properties).length > 0
    ? " " + JSON.stringify(record.properties)
    : "";
  const where = context.length > 0 ? `${service}.${context.join(".")}` : service;
  return `${new Date(record.timestamp).toISOString()} ${
    LEVEL_NAMES[record.level].toUpperCase().padEnd(5)
  } [${where}] ${renderMessage(record)}${fields}\n`;
}

/**
 * Sets up logging for the process. Writes synchronously to stderr so that a
 * crash does not swallow its last lines; stdout stays free for command output.
 */
export async function setupLogging(
  level: ConfigLogLevel,
  format: LogFormat,
  write: (line: string) => void = (line) => Deno.stderr.writeSync(encoder.encode(line)),
): Promise<void> {
  const formatter = format === "json" ? formatJson : formatPretty;
  await configure({
    reset: true,
    sinks: { main: (record: LogRecord) => write(formatter(record)) },
    loggers: [
      { category: ["plantd"], lowestLevel: level === "warn" ? "warning" : level, sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
}

/** A logger for a component (`service`) and an optional context path. */
export function logger(service: string, ...context: string[]): Logger {
  return getLogger(["plantd", service, ...context]);
}

/** Removes the logging configuration (tests). */
export function resetLogging(): Promise<void> {
  return reset();
}
