/**
 * A commit whose answer never came: the connection to the database was lost
 * after COMMIT was sent, so the write may or may not have been applied. The
 * driver's error is the cause (its class, e.g. STORAGE_UNAVAILABLE, still
 * names the failure); clients are told the outcome is unknown.
 *
 * @module
 */

/** Raised for the writers of a group whose commit went unanswered. */
export class CommitOutcomeUnknown extends Error {
  constructor(cause: unknown) {
    super(
      `the commit went unanswered: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.name = "CommitOutcomeUnknown";
  }
}
