// deno-lint-ignore-file no-explicit-any -- the tests read JSON replies of many shapes
/**
 * Several state worker processes on one PostgreSQL database behind one
 * broker (issue 18): compare-and-set races with exactly one winner per
 * revision, no acknowledged write lost when one worker is SIGKILLed, and the
 * change events of both workers reaching subscribers exactly once.
 */
import assert from "node:assert/strict";
import { Subscriber } from "../bus/subscriber.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { freePort, metricSum, waitFor, type WatchedChild, withBroker } from "./_helpers.ts";
import { spawnPgState } from "./_state_pg.ts";
import { withDatabase } from "./_postgres.ts";
import { startSystem } from "./_system.ts";
import { WsClient } from "./_ws.ts";

async function stateReply(client: MdpClient, operation: string, request: unknown) {
  const [reply] = await client.request(STATE_SERVICE, [operation, JSON.stringify(request)]);
  return JSON.parse(text(reply!));
}

/** state_operations_total{operation, result="ok"} of a worker, from its /metrics. */
async function served(healthPort: number, operation: string): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const line = body.split("\n").find((l) =>
    l.startsWith("state_operations_total{") && l.includes(`operation="${operation}"`) &&
    l.includes('result="ok"')
  );
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

async function stopAll(children: WatchedChild[]): Promise<void> {
  for (const child of children) await child.stop("SIGKILL");
}

Deno.test("two state workers on one PostgreSQL database: 32 racing compare-and-set clients get exactly one winner per revision", async () => {
  await withDatabase(async (db) => {
    await withBroker(
      { heartbeatIntervalMs: 100, heartbeatLiveness: 10, tickMs: 20 },
      async (server, track) => {
        const ports = [freePort(), freePort()];
        // Started together on the empty database: the migration lock lets both open it.
        const workers = ports.map((port) => spawnPgState(db.url, server.endpoint, port));
        try {
          await waitFor(() => {
            for (const w of workers) assert.ok(!w.exited(), `a worker exited: ${w.stderr()}`);
            return server.broker.workerCount >= 8;
          }, { timeoutMs: 30_000, what: "both workers' 4 connections each at the broker" });
          const setup = track(new MdpClient(server.endpoint, { timeoutMs: 10_000 }));
          assert.equal(
            (await stateReply(setup, "create-scope", { service: "race" })).success,
            true,
          );

          const KEYS = ["k0", "k1", "k2", "k3"];
          const TARGET = 30;
          const wins: Array<{ key: string; revision: number; value: string }> = [];
          let conflicts = 0;
          const racer = async (id: number) => {
            const client = track(new MdpClient(server.endpoint, { timeoutMs: 10_000 }));
            for (let round = 0;; round++) {
              const key = KEYS[(id + round) % KEYS.length]!;
              const read = await stateReply(client, "state-get-many", {
                service: "race",
                keys: KEYS,
              });
              assert.equal(read.success, true, JSON.stringify(read));
              if (KEYS.every((k) => (read.data.entries[k]?.revision ?? 0) >= TARGET)) return;
              const current = read.data.entries[key]?.revision ?? 0;
              if (current >= TARGET) continue;
              const value = `racer${id}-from${current}`;
              const reply = await stateReply(client, "state-cas", {
                service: "race",
                key,
                value,
                revision: current,
              });
              if (reply.success) {
                assert.equal(reply.data.revision, current + 1, JSON.stringify(reply));
                wins.push({ key, revision: reply.data.revision, value });
              } else {
                assert.match(reply.error, /^Revision mismatch/, JSON.stringify(reply));
                conflicts++;
              }
            }
          };
          await Promise.all(Array.from({ length: 32 }, (_, id) => racer(id)));

          for (const key of KEYS) {
            const mine = wins.filter((w) => w.key === key);
            const perRevision = new Map<number, number>();
            for (const w of mine) {
              perRevision.set(w.revision, (perRevision.get(w.revision) ?? 0) + 1);
            }
            // Exactly one winner for each revision 1..TARGET, none beyond.
            assert.deepEqual(
              [...perRevision].sort(([a], [b]) => a - b),
              Array.from({ length: TARGET }, (_, i) => [i + 1, 1]),
              `winners per revision of ${key}`,
            );
            const last = mine.find((w) => w.revision === TARGET)!;
            // The database holds the last winner's value.
            const [row] = await db.sql`select convert_from(value, 'UTF8') as value, revision::int
              from state_entries where scope = convert_to('race', 'UTF8') and key = convert_to(${key}, 'UTF8')`;
            assert.deepEqual({ ...row }, { value: last.value, revision: TARGET });
            // The key's history: one row per winning CAS, none for the refused ones, in
            // commit order across the two workers, each from the value the one before set.
            const history = await stateReply(setup, "state-history", { service: "race", key });
            assert.equal(history.success, true, JSON.stringify(history));
            const rows = [...history.data.entries].reverse();
            const winner = (revision: number) => mine.find((w) => w.revision === revision)!.value;
            assert.deepEqual(
              rows.map((r: Record<string, unknown>) => [r.revision, r.old_value, r.new_value]),
              Array.from(
                { length: TARGET },
                (_, i) => [i + 1, i === 0 ? null : winner(i), winner(i + 1)],
              ),
              `history of ${key}`,
            );
          }
          assert.ok(conflicts > 0, "the clients raced");
          // Reads spread over both workers agree with the database.
          const reader = track(new MdpClient(server.endpoint, { timeoutMs: 10_000 }));
          const before = await Promise.all(ports.map((port) => served(port, "state-get-many")));
          const reads = await Promise.all(
            Array.from(
              { length: 64 },
              () => stateReply(reader, "state-get-many", { service: "race", keys: KEYS }),
            ),
          );
          const after = await Promise.all(ports.map((port) => served(port, "state-get-many")));
          for (const read of reads) {
            assert.deepEqual(read.data.entries, reads[0].data.entries);
            for (const key of KEYS) {
              assert.equal(read.data.entries[key].revision, TARGET);
              assert.equal(
                read.data.entries[key].value,
                wins.find((w) => w.key === key && w.revision === TARGET)!.value,
              );
            }
          }
          for (const i of [0, 1]) {
            assert.ok(after[i]! > before[i]!, `worker ${i} served some of the reads`);
            assert.ok((await served(ports[i]!, "state-cas")) > 0, `worker ${i} served CAS`);
          }
        } finally {
          await stopAll(workers);
        }
      },
    );
  });
});

Deno.test("SIGKILL of one of two state workers on PostgreSQL while writes are in flight: no acknowledged write lost, the other keeps serving", async () => {
  await withDatabase(async (db) => {
    await withBroker(
      { heartbeatIntervalMs: 100, heartbeatLiveness: 10, tickMs: 20, requestTimeoutMs: 20_000 },
      async (server, track) => {
        const ports = [freePort(), freePort()];
        const workers = ports.map((port) => spawnPgState(db.url, server.endpoint, port));
        try {
          await waitFor(() => server.broker.workerCount >= 8, {
            timeoutMs: 30_000,
            what: "both workers at the broker",
          });
          const client = track(new MdpClient(server.endpoint, { timeoutMs: 3000 }));
          const acked = new Map<string, string>();
          let next = 0;
          let stop = false;
          let failed = 0;
          const writer = async () => {
            while (!stop) {
              const i = next++;
              const scope = `scope${i % 4}`;
              const value = `value-${i}-${"x".repeat(i % 50)}`;
              try {
                const reply = await stateReply(client, "state-set", {
                  service: scope,
                  key: `k${i}`,
                  value,
                });
                if (reply.success) acked.set(`${scope}/k${i}`, value);
                else failed++;
              } catch {
                // Lost with the killed worker (or timed out): never acknowledged.
                failed++;
              }
            }
          };
          const writers = Array.from({ length: 64 }, writer);
          await waitFor(() => acked.size >= 2000, {
            timeoutMs: 60_000,
            what: "2000 acknowledged writes",
          });
          const victim = workers[0]!;
          await victim.stop("SIGKILL");
          const atKill = acked.size;
          // The survivor keeps serving: many more writes are acknowledged after the kill.
          await waitFor(() => acked.size >= atKill + 2000, {
            timeoutMs: 60_000,
            what: () => `2000 more writes after the kill (${acked.size - atKill} so far)`,
          });
          stop = true;
          await Promise.all(writers);
          assert.ok(!workers[1]!.exited(), workers[1]!.stderr());

          // Every acknowledged write is in the database with its value.
          const rows = await db.sql<{ scope: string; key: string; value: string }[]>`
            select convert_from(scope, 'UTF8') as scope, convert_from(key, 'UTF8') as key,
              convert_from(value, 'UTF8') as value from state_entries`;
          const stored = new Map(rows.map((r) => [`${r.scope}/${r.key}`, r.value]));
          const lost = [...acked].filter(([id, value]) => stored.get(id) !== value);
          assert.deepEqual(lost, [], `${lost.length} of ${acked.size} acknowledged writes lost`);
          // And the survivor reads them back.
          const sample = [...acked].filter((_, i) => i % 50 === 0);
          for (const [id, value] of sample) {
            const [scope, key] = id.split("/") as [string, string];
            const reply = await stateReply(client, "state-get", { service: scope, key });
            assert.equal(reply.data.value, value, id);
          }
        } finally {
          await stopAll(workers);
        }
      },
    );
  });
});

Deno.test("change events of two state workers on PostgreSQL reach a bus subscriber exactly once each; a gateway watch shows them in order per key, up to the last", async () => {
  await withDatabase(async (db) => {
    // One worker in the system's process, a second one as a process of its own.
    const system = await startSystem({ state: { db: db.url, db_pool_size: 4 } });
    const port = freePort();
    const second = spawnPgState(db.url, system.brokerEndpoint, port, [
      "--bus-endpoint",
      system.frontends.state!,
      // One argument: a random secret may start with '-', which a flag's next argument may not.
      `--state-bus-secret=${system.stateBusSecret}`,
      "--concurrency",
      "8",
    ]);
    const subscriber = new Subscriber(system.backends.state!, { bus: "state", topics: ["plant"] });
    const ws = await new WsClient(system.url).open();
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 10_000 });
    const events: any[] = [];
    let reading = true;
    const read = (async () => {
      while (reading) {
        const batch = await subscriber.receiveBatch().catch(() => []);
        for (const message of batch) events.push(JSON.parse(text(message.payload)));
      }
    })();
    try {
      ws.send({ type: "watch", id: "w", scope: "plant" });
      await ws.nextOf("subscribed", "w");
      await waitFor(async () => {
        try {
          const health = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
          return health.status === "UP";
        } catch {
          return false;
        }
      }, { timeoutMs: 30_000, what: () => `the second worker UP: ${second.stderr()}` });
      // The subscription reaches the bus asynchronously: write until an event comes through.
      await waitFor(async () => {
        await stateReply(client, "state-set", { service: "plant", key: "probe", value: "p" });
        return events.length > 0;
      }, { what: "the bus subscription" });
      /** state-set-many served by the in-process worker. */
      const servedHere = async () =>
        ((await system.registry.getSingleMetric("state_operations_total")?.get())?.values ?? [])
          .find((v) => v.labels.operation === "state-set-many" && v.labels.result === "ok")
          ?.value ?? 0;

      // Concurrent writes to shared keys, then writes one at a time: both workers serve them.
      const acked: Array<{ key: string; revision: number }> = [];
      const write = async (i: number) => {
        const key = `k${i % 10}`;
        const reply = await stateReply(client, "state-set-many", {
          service: "plant",
          entries: { [key]: `v${i}` },
        });
        assert.equal(reply.success, true, JSON.stringify(reply));
        acked.push({ key, revision: reply.data.revisions[key] });
      };
      await Promise.all(Array.from({ length: 200 }, (_, i) => write(i)));
      for (let i = 200; i < 260; i++) await write(i);
      const sets = () => events.filter((e) => e.op === "set" && e.key !== "probe");
      await waitFor(() => sets().length >= acked.length, {
        timeoutMs: 10_000,
        what: () => `${acked.length} events on the bus (${sets().length})`,
      });
      // Exactly once each: one event per acknowledged (key, revision), no other.
      const seen = sets().map((e) => `${e.key}#${e.revision}`).sort();
      assert.deepEqual(seen, acked.map((a) => `${a.key}#${a.revision}`).sort());
      // Numbered in commit order across the workers: seq grows with the revision per key.
      for (let k = 0; k < 10; k++) {
        const mine = sets().filter((e) => e.key === `k${k}`).sort((a, b) =>
          a.revision - b.revision
        );
        for (let i = 1; i < mine.length; i++) assert.ok(mine[i].seq > mine[i - 1].seq, `k${k}`);
      }
      // The gateway's watch refuses replays by seq: events of the two workers travel on two
      // connections, so for one key a later change may overtake an earlier one, which is then
      // refused (docs/state.md "libSQL or PostgreSQL"). What it shows: only acknowledged
      // changes, once each, in revision order per key, ending at each key's last revision.
      const watched = () =>
        ws.all.filter((m) =>
          m.type === "change" && m.change.op === "set" && m.change.key !== "probe"
        );
      const last = new Map<string, number>();
      for (const a of acked) last.set(a.key, Math.max(last.get(a.key) ?? 0, a.revision));
      const reachedLast = () =>
        [...last].every(([key, revision]) =>
          watched().some((m) => m.change.key === key && m.change.revision === revision)
        );
      await waitFor(reachedLast, {
        timeoutMs: 30_000,
        what: () => `every key's last revision on the watch (${watched().length} changes)`,
      });
      const shown = watched().map((m) => `${m.change.key}#${m.change.revision}`);
      assert.equal(new Set(shown).size, shown.length, "each change at most once");
      for (const change of shown) assert.ok(seen.includes(change), `${change} was acknowledged`);
      for (let k = 0; k < 10; k++) {
        const revisions = watched().filter((m) => m.change.key === `k${k}`).map((m) =>
          m.change.revision as number
        );
        assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b), `k${k} never goes back`);
      }
      // Both workers made some of them.
      const here = await servedHere();
      const there = await served(port, "state-set-many");
      assert.ok(here > 0 && there > 0, `writes served: ${here} here, ${there} there`);
      // The gateway heard both workers and missed none of their events: an overtaken event,
      // refused by the watch, still counts in its publisher's numbers (no flush for a gap).
      const gauge = (name: string, labels: Record<string, string> = {}) =>
        metricSum(system.registry, name, labels);
      await waitFor(async () => await gauge("gateway_state_cache_coherent") === 1, {
        what: "the gateway's read cache coherent with both workers",
      });
      assert.equal(await gauge("gateway_state_cache_flushes_total", { reason: "gap" }), 0);
    } finally {
      reading = false;
      await client.close();
      await ws.close();
      subscriber.close();
      await read;
      await second.stop("SIGKILL");
      await system.stop();
    }
  });
});
