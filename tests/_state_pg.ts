/**
 * A state worker process on a PostgreSQL database, for the tests of several
 * workers sharing one store.
 *
 * @module
 */
import { spawnWatched, type WatchedChild } from "./_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A state worker process on PostgreSQL database `url`, health (and /metrics) on `healthPort`. */
export function spawnPgState(
  url: string,
  brokerEndpoint: string,
  healthPort: number,
  extra: string[] = [],
): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "state",
        "--db",
        url,
        "--db-pool-size",
        "4",
        "--broker-endpoint",
        brokerEndpoint,
        "--health-port",
        String(healthPort),
        "--log-level",
        "error",
        "--bus-endpoint",
        "",
        "--heartbeat-interval-ms",
        "100",
        // Ten missed heartbeats (1 s): tests running in parallel on 2 cores can
        // hold a process past three.
        "--heartbeat-liveness",
        "10",
        ...extra,
      ],
      stdout: "null",
      stderr: "piped",
    }),
  );
}
