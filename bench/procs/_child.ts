/**
 * Life cycle of a benchmark child process: announce readiness on stdout, then
 * run until the parent closes our stdin (which also happens when the parent
 * dies) or sends SIGTERM/SIGINT, clean up, and exit.
 *
 * @module
 */

/** Prints `ready`, waits for the parent to let go, runs `cleanup` (at most 2 s) and exits. */
export async function serveUntilParentExits(
  ready: string,
  cleanup: () => Promise<void> | void,
): Promise<never> {
  let stopping: Promise<never> | undefined;
  const stop = (): Promise<never> => {
    stopping ??= (async () => {
      const force = setTimeout(() => Deno.exit(0), 2000);
      try {
        await cleanup();
      } catch {
        // exiting anyway
      }
      clearTimeout(force);
      Deno.exit(0);
    })();
    return stopping;
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  console.log(ready);
  const buffer = new Uint8Array(256);
  try {
    while ((await Deno.stdin.read(buffer)) !== null) {
      // the parent writes nothing; EOF means it is done with us or gone
    }
  } catch {
    // stdin broken: the parent is gone
  }
  return await stop();
}

/**
 * `{ wireHeartbeat }` when BENCH_WIRE_HEARTBEAT_MS is set: ZMTP heartbeats at
 * that interval, timeout and TTL 3x (the config defaults' ratio); `{}` otherwise.
 */
export function wireHeartbeatFromEnv(): {
  wireHeartbeat?: { heartbeatIvlMs: number; heartbeatTimeoutMs: number; heartbeatTtlMs: number };
} {
  const ivl = Number(Deno.env.get("BENCH_WIRE_HEARTBEAT_MS") ?? "0");
  return ivl > 0
    ? {
      wireHeartbeat: { heartbeatIvlMs: ivl, heartbeatTimeoutMs: 3 * ivl, heartbeatTtlMs: 3 * ivl },
    }
    : {};
}
