// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * A state worker on PostgreSQL when the database goes away or refuses
 * writes (issue 18, honest health): the worker keeps running, /healthz is
 * DOWN naming the failure class with its cause, the `health` operation and
 * the replies name it, the failure is logged, and all is well again once the
 * database is back.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { freePort, waitFor, type WatchedChild, withBroker } from "./_helpers.ts";
import { withDatabase } from "./_postgres.ts";
import { TcpProxy } from "./_tcp_proxy.ts";
import { spawnPgState } from "./_state_pg.ts";

async function stateReply(client: MdpClient, operation: string, request: unknown) {
  const [reply] = await client.request(STATE_SERVICE, [operation, JSON.stringify(request)]);
  return JSON.parse(text(reply!));
}

async function healthz(port: number): Promise<{ status: number; body: any }> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: response.status, body: await response.json() };
}

const check = (body: any, name: string) => body.checks.find((c: any) => c.name === name);

/** Waits until the worker's /healthz answers `status`; fails at once if the worker exited. */
async function healthIs(worker: WatchedChild, port: number, status: number): Promise<any> {
  let last: { status: number; body: any } | undefined;
  await waitFor(async () => {
    assert.ok(!worker.exited(), `the worker exited: ${worker.stderr()}`);
    try {
      last = await healthz(port);
    } catch {
      return false;
    }
    return last.status === status;
  }, { timeoutMs: 30_000, what: () => `/healthz ${status} (last: ${JSON.stringify(last)})` });
  return last!.body;
}

Deno.test("PostgreSQL unreachable: the state worker stays up, /healthz DOWN naming STORAGE_UNAVAILABLE, replies name it; all recovers when it is back", async () => {
  await withDatabase(async (db) => {
    const proxy = new TcpProxy({ hostname: "127.0.0.1", port: 5432 });
    const url = new URL(db.url);
    url.port = String(proxy.port);
    // A password in the URL must never reach the log.
    url.password = "s3cret-never-logged";
    await withBroker({ heartbeatIntervalMs: 100, heartbeatLiveness: 10 }, async (server, track) => {
      const port = freePort();
      const worker = spawnPgState(url.toString(), server.endpoint, port);
      try {
        await healthIs(worker, port, 200);
        const client = track(new MdpClient(server.endpoint, { timeoutMs: 10_000 }));
        let reply = await stateReply(client, "state-set", { service: "s", key: "k", value: "1" });
        assert.equal(reply.success, true, JSON.stringify(reply));

        // Writers across the cut: each reply is a success or names the failure.
        const acked = new Map<string, string>();
        const others: string[] = [];
        let writing = true;
        let n = 0;
        const writers = Array.from({ length: 16 }, async () => {
          while (writing) {
            const key = `w${n++}`;
            const answer = await stateReply(client, "state-set", {
              service: "w",
              key,
              value: key,
            });
            if (answer.success) acked.set(key, key);
            else if (answer.error !== "STORAGE_UNAVAILABLE") others.push(JSON.stringify(answer));
          }
        });
        await waitFor(() => acked.size >= 200, { what: "writes before the cut" });
        await proxy.pause();
        reply = await stateReply(client, "state-set", { service: "s", key: "k", value: "2" });
        assert.equal(reply.error, "STORAGE_UNAVAILABLE", JSON.stringify(reply));
        assert.match(reply.message, /^State storage is unavailable, nothing was written: /);
        reply = await stateReply(client, "state-get", { service: "s", key: "k" });
        assert.equal(reply.error, "STORAGE_UNAVAILABLE", JSON.stringify(reply));

        const down = await healthIs(worker, port, 503);
        assert.equal(down.status, "DOWN");
        assert.match(check(down, "store").output, /^STORAGE_UNAVAILABLE: /);
        assert.equal(check(down, "store_writes").status, "DOWN");
        assert.match(check(down, "store_writes").output, /^STORAGE_UNAVAILABLE: /);
        // What a gateway asks: the store is not available, and why.
        const health = await stateReply(client, "health", {});
        assert.deepEqual(health.data, {
          service: STATE_SERVICE,
          status: "unavailable",
          store_available: false,
          write_failure: "STORAGE_UNAVAILABLE",
        });
        assert.match(worker.stderr(), /state writes fail: STORAGE_UNAVAILABLE/);

        writing = false;
        await Promise.all(writers);
        assert.deepEqual(others, []);

        proxy.resume();
        const up = await healthIs(worker, port, 200);
        const rows = await db.sql<{ key: string }[]>`
          select convert_from(key, 'UTF8') as key from state_entries
          where scope = convert_to('w', 'UTF8')`;
        const stored = new Set(rows.map((r) => r.key));
        assert.deepEqual(
          [...acked.keys()].filter((key) => !stored.has(key)),
          [],
          "acknowledged writes lost",
        );
        assert.equal(check(up, "store_writes").status, "UP");
        reply = await stateReply(client, "state-set", { service: "s", key: "k", value: "3" });
        assert.equal(reply.success, true, JSON.stringify(reply));
        reply = await stateReply(client, "state-get-many", { service: "s", keys: ["k"] });
        assert.deepEqual(
          { value: reply.data.entries.k.value, revision: reply.data.entries.k.revision },
          { value: "3", revision: 2 },
        );
        assert.equal((await stateReply(client, "health", {})).data.status, "healthy");
        assert.ok(!worker.stderr().includes("s3cret-never-logged"), worker.stderr());
      } finally {
        await worker.stop("SIGKILL");
        await proxy.close();
      }
    });
  });
});

Deno.test("PostgreSQL refusing writes (read-only): replies and the health operation name STORAGE_READONLY, /healthz DOWN; a write succeeds once it is writable", async () => {
  await withDatabase(async (db) => {
    await withBroker({ heartbeatIntervalMs: 100, heartbeatLiveness: 10 }, async (server, track) => {
      const port = freePort();
      const worker = spawnPgState(db.url, server.endpoint, port);
      /** Ends the worker's sessions: its next ones start with the database's new defaults. */
      const reconnect = () =>
        db.admin`select pg_terminate_backend(pid) from pg_stat_activity
          where datname = ${db.name} and application_name = 'plantd-state'`;
      try {
        await healthIs(worker, port, 200);
        const client = track(new MdpClient(server.endpoint, { timeoutMs: 10_000 }));
        assert.equal(
          (await stateReply(client, "state-set", { service: "s", key: "k", value: "1" })).success,
          true,
        );
        await db.admin.unsafe(`alter database ${db.name} set default_transaction_read_only = on`);
        await reconnect();
        let reply: any;
        // A write on a session the termination just ended fails as unavailable: the next one
        // opens a read-only session.
        await waitFor(async () => {
          reply = await stateReply(client, "state-set", { service: "s", key: "k", value: "2" });
          return reply.error === "STORAGE_READONLY";
        }, { what: () => `STORAGE_READONLY (last: ${JSON.stringify(reply)})` });
        assert.match(reply.message, /^State storage is read-only, nothing was written: /);
        const health = await stateReply(client, "health", {});
        assert.equal(health.data.status, "degraded");
        assert.equal(health.data.write_failure, "STORAGE_READONLY");
        const down = await healthIs(worker, port, 503);
        assert.match(check(down, "store_writes").output, /^STORAGE_READONLY: /);
        // Reads still work.
        reply = await stateReply(client, "state-get", { service: "s", key: "k" });
        assert.equal(reply.data.value, "1");
        assert.match(worker.stderr(), /state writes fail: STORAGE_READONLY/);

        await db.admin.unsafe(`alter database ${db.name} reset default_transaction_read_only`);
        await reconnect();
        await waitFor(async () => {
          reply = await stateReply(client, "state-set", { service: "s", key: "k", value: "3" });
          return reply.success === true;
        }, { what: () => `a write to succeed again (last: ${JSON.stringify(reply)})` });
        await healthIs(worker, port, 200);
        assert.equal((await stateReply(client, "health", {})).data.status, "healthy");
      } finally {
        await worker.stop("SIGKILL");
      }
    });
  });
});
