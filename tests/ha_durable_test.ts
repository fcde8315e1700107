/**
 * Durable requests on a broker pair sharing a PostgreSQL journal (docs/ha.md,
 * docs/durability.md), in real `main.ts broker` processes: the journal
 * follows the active broker. SIGKILL of the primary with thousands of
 * durable requests queued behind a slow worker: the backup takes over, opens
 * the journal (its lock, what it holds) and routes it again, and every
 * request is answered exactly once to our client (which asks again by key
 * at the backup), or is a dead letter with its reason; none is lost. The
 * restarted primary comes back passive and leaves the journal to the active
 * broker. A pair with a local libSQL journal is refused at startup.
 *
 * HA_DURABLE_COUNT sets the number of requests (default 2,000).
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { allDeadLetters, brokerOp } from "./_durable.ts";
import { waitFor } from "./_helpers.ts";
import { BrokerProcess, pairArgs, pairPorts } from "./_pair.ts";
import { freshDatabase } from "./_postgres.ts";

const COUNT = Number(Deno.env.get("HA_DURABLE_COUNT") ?? 2_000);
const HEARTBEAT_MS = 300;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Backend pids of the sessions holding the journal's advisory lock. */
async function lockHolders(db: { sql: (s: TemplateStringsArray) => Promise<unknown[]> }) {
  const rows = await db.sql`select a.pid from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and a.application_name = 'plantd-broker-journal'`;
  return (rows as Array<{ pid: number }>).map((r) => r.pid);
}

Deno.test(`broker pair on a shared PostgreSQL journal: SIGKILL of the primary with ${COUNT} durable requests queued; the backup routes the journal again and each is answered once (or is a dead letter); the restarted primary stays passive and leaves the journal to it`, async () => {
  const db = await freshDatabase();
  const ports = pairPorts();
  const endpoints = [ports.primary.endpoint, ports.backup.endpoint];
  const extra = [
    "--journal",
    db.url,
    "--durable-services",
    JSON.stringify(["slow.*"]),
    // Only the failover is under test: nothing expires meanwhile.
    "--durable-timeout-ms",
    "600000",
  ];
  const primary = new BrokerProcess(ports, "primary", HEARTBEAT_MS, extra);
  const backup = new BrokerProcess(ports, "backup", HEARTBEAT_MS, extra);
  const executions = new Uint16Array(COUNT);
  const worker = new MdpWorker(endpoints, "slow.command", async (body) => {
    const i = Number(decoder.decode(body[0]));
    executions[i]!++;
    await new Promise((resolve) => setTimeout(resolve, 4));
    return ["done", String(i)];
  }, {
    heartbeatIntervalMs: 200,
    heartbeatLiveness: 10,
    reconnectMs: 100,
    concurrency: 4,
    capacity: 4,
  });
  const client = new MdpClient(endpoints, { timeoutMs: 300_000 });
  const answers = new Array<string | undefined>(COUNT);
  const deadLettered = new Set<number>();
  const failures: string[] = [];
  let settled = 0;
  try {
    await primary.waitState("active");
    await backup.waitState("passive");
    await waitFor(async () => (await primary.check("journal"))?.status === "UP", {
      timeoutMs: 30_000,
      what: "the primary's journal open",
    });
    const passive = await backup.check("journal");
    assert.match(String(passive?.output), /passive/, "the passive backup did not open the journal");
    const [holder] = await lockHolders(db);
    assert.ok(holder !== undefined, "the active primary holds the journal's lock");

    const requests = Array.from(
      { length: COUNT },
      (_, i) =>
        client.request("slow.command", [String(i)], { durable: true }).then(
          (reply) => {
            assert.equal(answers[i], undefined, `request ${i} answered twice`);
            answers[i] = reply.map((f) => decoder.decode(f)).join("|");
          },
          (error) => {
            if (error instanceof MdpBrokerError && error.code === "DEAD_LETTERED") {
              deadLettered.add(i);
            } else failures.push(`${i}: ${error}`);
          },
        ).finally(() => settled++),
    );
    await waitFor(() => settled >= COUNT / 10, {
      timeoutMs: 120_000,
      what: () => `a tenth of the requests answered (${settled})`,
    });
    const ops = new MdpClient(ports.primary.endpoint, { timeoutMs: 10_000 });
    const journal = await brokerOp(ops, "journal").finally(() => ops.close());
    await primary.kill();
    const answeredBeforeKill = settled;
    assert.ok(Number(journal.journaled) > COUNT / 4, `journaled at the kill: ${journal.journaled}`);

    await waitFor(() => settled >= COUNT, {
      timeoutMs: 90_000,
      intervalMs: 100,
      what: () =>
        `every request settled (${settled} of ${COUNT}; failures: ${failures.length} ${
          failures.slice(0, 3)
        }); backup: ${backup.child.stderr().slice(-2000)}`,
    });
    await Promise.all(requests);
    assert.deepEqual(failures, [], "no request failed otherwise");
    assert.equal(await backup.state(), "active");

    const backupOps = new MdpClient(ports.backup.endpoint, { timeoutMs: 10_000 });
    try {
      const dead = await allDeadLetters(backupOps);
      for (const letter of dead) {
        const i = Number(letter.operation);
        assert.ok(
          deadLettered.has(i),
          `dead letter ${letter.id} (${i}) was reported to its client`,
        );
        assert.match(String(letter.reason), /^(worker_lost|expired|caller_lost)$/);
      }
      assert.equal(dead.length, deadLettered.size);
      let duplicates = 0;
      for (let i = 0; i < COUNT; i++) {
        if (deadLettered.has(i)) continue;
        assert.equal(answers[i], `done|${i}`, `request ${i}: its own reply`);
        duplicates += executions[i]! - 1;
      }
      // A reply goes to its client before the journal's group commit marks the
      // entry answered: the count reaches 0 once that commit is in.
      let after: Record<string, unknown> = {};
      await waitFor(async () => (after = await brokerOp(backupOps, "journal")).journaled === 0, {
        timeoutMs: 30_000,
        what: () => `nothing left journaled (${after.journaled})`,
      });
      console.log(
        `${COUNT} durable requests on a pair: ${answeredBeforeKill} answered before the kill, ${journal.journaled} journaled at it; ` +
          `${
            COUNT - deadLettered.size
          } answered, ${deadLettered.size} dead letters, ${duplicates} run twice`,
      );

      const opened = backup.child.stderr().split("\n").find((l) =>
        l.includes("journal open after")
      );
      assert.ok(opened, "the backup logged its journal open");
      console.log(`backup: ${JSON.stringify(JSON.parse(opened).fields)}`);

      // The killed primary comes back passive and does not take the journal from the backup.
      const [taker] = await lockHolders(db);
      assert.ok(taker !== undefined && taker !== holder, "the backup holds the journal's lock");
      primary.restart();
      await primary.waitState("passive");
      assert.match(String((await primary.check("journal"))?.output), /passive/);
      assert.equal((await backup.check("journal"))?.status, "UP");
      // A durable request through the pair is still journaled and answered by the backup.
      const [done] = await client.request("slow.command", ["0"], { durable: true });
      assert.equal(decoder.decode(done), "done");
      assert.deepEqual(await lockHolders(db), [taker], "the active backup kept the journal's lock");
      assert.equal(await backup.state(), "active");
      assert.equal(await primary.state(), "passive");
      // Stopped, the active broker closes the journal: its lock is released.
      assert.equal((await backup.stop()).code, 0, backup.child.stderr().slice(-2000));
      await waitFor(async () => (await lockHolders(db)).length === 0, {
        timeoutMs: 10_000,
        what: "the stopped broker to release the journal's lock",
      });
    } finally {
      await backupOps.close();
    }
  } finally {
    await client.close();
    await worker.close();
    await primary.kill();
    await backup.kill();
    await sharedPoller().idle();
    await db.drop();
  }
});

Deno.test("broker pair with durable services on a local libSQL journal: refused at startup (exit 2) naming journal", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ha-durable-" });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "broker",
        ...pairArgs(pairPorts(), "primary", HEARTBEAT_MS, [
          "--journal",
          `${dir}/journal.db`,
          "--durable-services",
          JSON.stringify(["slow.*"]),
        ]),
      ],
      stdout: "piped",
      stderr: "piped",
      // A broker that starts (the refusal broken) is stopped rather than waited for.
      signal: AbortSignal.timeout(30_000),
    }).output();
    const stderr = decoder.decode(output.stderr);
    assert.equal(output.code, 2, stderr);
    assert.match(stderr, /journal/);
    assert.match(stderr, /postgres:\/\//);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("broker pair: while another session holds the shared journal's lock, the active broker refuses durable requests with JOURNAL_UNAVAILABLE, shows it on /healthz, and takes the journal once the lock is released", async () => {
  const db = await freshDatabase();
  // The lock a dead broker's lingering session would hold (broker/journal_postgres.ts).
  const holder = await db.sql.reserve();
  const [taken] = await holder`select pg_try_advisory_lock(${0x706a6f75726e61}) as locked`;
  assert.equal(taken?.locked, true);
  const ports = pairPorts();
  const extra = ["--journal", db.url, "--durable-services", JSON.stringify(["slow.*"])];
  const primary = new BrokerProcess(ports, "primary", HEARTBEAT_MS, extra);
  const backup = new BrokerProcess(ports, "backup", HEARTBEAT_MS, extra);
  const worker = new MdpWorker(ports.primary.endpoint, "slow.command", () => ["done"], {
    heartbeatIntervalMs: 200,
    heartbeatLiveness: 10,
    reconnectMs: 100,
  });
  // One endpoint: the refusal reaches the caller rather than being asked again.
  const client = new MdpClient(ports.primary.endpoint, { timeoutMs: 10_000 });
  let released = false;
  try {
    await primary.waitState("active");
    let check: { status: string; output?: string } | undefined;
    await waitFor(
      async () =>
        /in use by another broker/.test(String((check = await primary.check("journal"))?.output)),
      {
        timeoutMs: 30_000,
        what: () => `the journal check to name the held lock (is ${JSON.stringify(check)})`,
      },
    );
    assert.equal(check?.status, "DOWN");
    await assert.rejects(
      client.request("slow.command", ["x"], { durable: true }),
      (error: unknown) =>
        error instanceof MdpBrokerError && error.code === "JOURNAL_UNAVAILABLE" &&
        /opening the shared journal/.test(error.message),
    );
    await holder`select pg_advisory_unlock(${0x706a6f75726e61})`;
    holder.release();
    released = true;
    await waitFor(async () => (await primary.check("journal"))?.status === "UP", {
      timeoutMs: 30_000,
      what: "the journal taken once the lock was released",
    });
    const [done] = await client.request("slow.command", ["y"], { durable: true });
    assert.equal(decoder.decode(done), "done");
    assert.match(primary.child.stderr(), /journal not open/);
  } finally {
    if (!released) holder.release();
    await client.close();
    await worker.close();
    await primary.kill();
    await backup.kill();
    await sharedPoller().idle();
    await db.drop();
  }
});
