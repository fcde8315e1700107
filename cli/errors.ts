/**
 * Errors of the command-line client and their exit codes. Every failure
 * reaches the user as one line on stderr and a non-zero exit code.
 *
 * @module
 */

/** Exit codes of `plant`. */
export const EXIT = {
  OK: 0,
  /** The request reached the system and failed: not found, conflict, bad input, DOWN… */
  FAILED: 1,
  /** Bad command line. */
  USAGE: 2,
  /** The system could not be reached or did not answer: unreachable, no worker, timeout. */
  UNAVAILABLE: 3,
} as const;

export type ExitCode = typeof EXIT[keyof typeof EXIT];

/** A failure with a stable code (the gateway's codes where one applies) and an exit code. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  constructor(message: string, code = "FAILED", exitCode: ExitCode = EXIT.FAILED) {
    super(message);
    this.name = "CliError";
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** A bad command line: exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, "USAGE", EXIT.USAGE);
    this.name = "UsageError";
  }
}

/** Codes that mean "could not get an answer" rather than "the answer is no". */
const UNAVAILABLE_CODES = new Set(["SERVICE_UNAVAILABLE", "TIMEOUT", "UNREACHABLE"]);

/** A failure named by an API error code (REST body, WebSocket error, state reply). */
export function apiFailure(code: string, message: string): CliError {
  return new CliError(
    message,
    code,
    UNAVAILABLE_CODES.has(code) ? EXIT.UNAVAILABLE : EXIT.FAILED,
  );
}

/** The peer could not be reached at all. */
export function unreachable(what: string, where: string, reason: string): CliError {
  return new CliError(`cannot reach the ${what} at ${where}: ${reason}`, "UNREACHABLE", 3);
}
