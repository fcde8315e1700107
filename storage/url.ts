/**
 * Database URLs in logs and messages.
 *
 * @module
 */

/** A URL with its password (in the authority or a `password=` parameter) hidden, for logs. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, "$1***@").replace(/([?&]password=)[^&]*/gi, "$1***");
}

/** Whether a configured database location is a PostgreSQL URL. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}
