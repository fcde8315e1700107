/**
 * Waiting for something, but not forever: a bounded wait whose timer never
 * outlives it (Deno's test sanitizers, and a process that should exit, both
 * notice a stray timer).
 *
 * @module
 */

/**
 * Resolves when `promise` settles or after `ms`, whichever comes first; a
 * rejection of `promise` is thrown. The timer is cleared either way.
 */
export async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise<void>((resolve) => timer = setTimeout(resolve, ms))]);
  } finally {
    clearTimeout(timer);
  }
}
