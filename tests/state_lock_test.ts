/**
 * One state worker per libSQL file: a second one on the same file exits with
 * a message naming the lock, and the lock dies with its holder (SIGKILL too).
 */
import assert from "node:assert/strict";
import { freePort, spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function spawnState(db: string, healthPort: number, brokerPort: number): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "state",
        "--db",
        db,
        // No broker listens there: the worker keeps trying, which is all this needs.
        "--broker-endpoint",
        `tcp://127.0.0.1:${brokerPort}`,
        "--health-port",
        String(healthPort),
        "--log-level",
        "error",
        "--bus-endpoint",
        "",
      ],
      stdout: "null",
      stderr: "piped",
    }),
  );
}

/** Waits until the worker's health server answers: it holds its database by then. */
async function serving(child: WatchedChild, port: number): Promise<void> {
  await waitFor(async () => {
    assert.ok(!child.exited(), `the worker exited: ${child.stderr()}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/livez`);
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  }, { timeoutMs: 30_000, what: "the state worker's health server" });
}

Deno.test("a second state worker on the same libSQL file exits non-zero naming the lock; after SIGKILL of the first a new one starts", async () => {
  const dir = await Deno.makeTempDir();
  // In a folder that does not exist yet, as `task dev`'s data/ on a first run.
  const db = `${dir}/data/state.db`;
  const brokerPort = freePort();
  const children: WatchedChild[] = [];
  try {
    const firstPort = freePort();
    const first = spawnState(db, firstPort, brokerPort);
    children.push(first);
    await serving(first, firstPort);

    const second = spawnState(db, 0, brokerPort);
    children.push(second);
    await waitFor(() => second.exited(), {
      timeoutMs: 30_000,
      what: "the second worker on the same file to exit",
    });
    const status = await second.status;
    assert.notEqual(status.code, 0);
    assert.match(second.stderr(), /in use by another state worker/);
    assert.match(second.stderr(), new RegExp(`pid ${first.process.pid}`));
    assert.ok(!first.exited(), "the first worker keeps running");

    // The OS drops the lock with its process, however it ends.
    await first.stop("SIGKILL");
    const thirdPort = freePort();
    const third = spawnState(db, thirdPort, brokerPort);
    children.push(third);
    await serving(third, thirdPort);
    assert.equal((await third.stop("SIGTERM")).code, 0, third.stderr());
  } finally {
    for (const child of children) await child.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
