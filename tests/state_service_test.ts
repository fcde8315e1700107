/**
 * The state service as a process behind a real broker: SIGKILL in the middle of
 * thousands of writes loses no acknowledged write; online backup and restore.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { backupState } from "../state/backup.ts";
import { openStateDatabase } from "../state/db.ts";
import { STATE_SERVICE, StateOperations } from "../state/operations.ts";
import { StateStore } from "../state/store.ts";
import { startStateWorker } from "../state/worker.ts";
import { waitFor, withBroker } from "./_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function spawnState(db: string, endpoint: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "state",
      "--db",
      db,
      "--broker-endpoint",
      endpoint,
      "--health-port",
      "0",
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
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

async function stateReply(client: MdpClient, operation: string, request: unknown) {
  const [reply] = await client.request(STATE_SERVICE, [operation, JSON.stringify(request)]);
  return JSON.parse(text(reply!));
}

Deno.test("every write acknowledged before a SIGKILL of the state process is there after restart", async () => {
  const dir = await Deno.makeTempDir();
  const db = `${dir}/state.db`;
  const children: Deno.ChildProcess[] = [];
  try {
    await withBroker(
      { heartbeatIntervalMs: 100, heartbeatLiveness: 10, tickMs: 20, requestTimeoutMs: 20_000 },
      async (server, track) => {
        children.push(spawnState(db, server.endpoint));
        const client = track(new MdpClient(server.endpoint, { timeoutMs: 20_000 }));
        await stateReply(client, "health", {});
        const acked = new Map<string, string>();
        let next = 0;
        let killed = false;
        const writer = async () => {
          while (!killed && next < 100_000) {
            const i = next++;
            const key = `k${i}`;
            const value = `value-${i}-${"x".repeat(i % 50)}`;
            try {
              const reply = await stateReply(client, "state-set", {
                service: `scope${i % 4}`,
                key,
                value,
              });
              if (reply.success) acked.set(`scope${i % 4}/${key}`, value);
            } catch {
              return; // the worker died under this request: it was never acknowledged
            }
          }
        };
        const writers = Array.from({ length: 64 }, writer);
        await waitFor(() => acked.size >= 3000, {
          timeoutMs: 60_000,
          what: "3000 acknowledged writes",
        });
        children[0]!.kill("SIGKILL");
        killed = true;
        await children[0]!.status;
        await Promise.all(writers);
        assert.ok(acked.size >= 3000);
        // Until the broker has expired the killed worker it may still route a
        // request to it (which then fails as lost): wait for that first.
        await waitFor(() => server.broker.workerCount === 0, {
          what: "the broker to forget the killed worker",
        });

        children.push(spawnState(db, server.endpoint));
        const byScope = new Map<string, string[]>();
        for (const id of acked.keys()) {
          const [scope, key] = id.split("/") as [string, string];
          byScope.set(scope, [...byScope.get(scope) ?? [], key]);
        }
        let checked = 0;
        for (const [scope, keys] of byScope) {
          for (let i = 0; i < keys.length; i += 1000) {
            const batch = keys.slice(i, i + 1000);
            const reply = await stateReply(client, "state-get-many", {
              service: scope,
              keys: batch,
            });
            assert.equal(reply.success, true, JSON.stringify(reply));
            for (const key of batch) {
              assert.equal(
                reply.data.entries[key]?.value,
                acked.get(`${scope}/${key}`),
                `${scope}/${key}`,
              );
              checked++;
            }
          }
        }
        assert.equal(checked, acked.size);
      },
    );
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("state backup runs while writes continue, and the copy restores into a working service", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withBroker({}, async (server, track) => {
      const open = await openStateDatabase({ location: `${dir}/live.db` });
      const store = await StateStore.load(open);
      track({ close: () => store.close() });
      track(startStateWorker(server.endpoint, new StateOperations(store), { concurrency: 8 }));
      const client = track(new MdpClient(server.endpoint));
      let written = 0;
      let stop = false;
      const writing = (async () => {
        while (!stop) {
          const i = written;
          await stateReply(client, "state-set", { service: "plant", key: `k${i}`, value: `v${i}` });
          written = i + 1;
        }
      })();
      await waitFor(() => written >= 200, { timeoutMs: 20_000, what: "writes before the backup" });
      await backupState(`${dir}/live.db`, `${dir}/backup.db`);
      await waitFor(() => written >= 400, { timeoutMs: 20_000, what: "writes after the backup" });
      stop = true;
      await writing;

      // Restore: a new service on the copy serves a consistent prefix of the writes.
      const restored = await StateStore.load(
        await openStateDatabase({ location: `${dir}/backup.db` }),
      );
      try {
        const keys = restored.keys("plant") ?? [];
        assert.ok(keys.length >= 200 && keys.length < written, `${keys.length} keys of ${written}`);
        for (let i = 0; i < keys.length; i++) {
          assert.equal(restored.get("plant", `k${i}`)?.value, `v${i}`);
        }
      } finally {
        await restored.close();
      }
    });
    await assert.rejects(backupState(`${dir}/live.db`, `${dir}/backup.db`), /exists already/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
