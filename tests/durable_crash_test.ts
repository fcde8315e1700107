/**
 * Durable requests survive a broker crash (issue #19): the broker, in its own
 * process, is SIGKILLed with thousands of durable requests journaled and
 * queued behind slow workers, and started again on the same journal. Every
 * request is then answered exactly once to the client that asked (ours,
 * which asks again by key after reconnecting), or is a dead letter with its
 * reason; none is lost.
 *
 * DURABLE_CRASH_COUNT sets the number of requests (default 10,000).
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { allDeadLetters, brokerOp, startBrokerProcess } from "./_durable.ts";
import { waitFor } from "./_helpers.ts";
import { freshDatabase } from "./_postgres.ts";

const COUNT = Number(Deno.env.get("DURABLE_CRASH_COUNT") ?? 10_000);
const decoder = new TextDecoder();

Deno.test(`SIGKILL of the broker with ${COUNT} durable requests queued: after its restart each is answered once to its client, or is a dead letter with its reason`, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await crashAndRestart(`${dir}/journal.db`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`the same on a PostgreSQL journal`, async () => {
  const db = await freshDatabase();
  try {
    await crashAndRestart(db.url);
  } finally {
    await db.drop();
  }
});

async function crashAndRestart(journal: string): Promise<void> {
  const broker = await startBrokerProcess({
    journal,
    durableServices: ["slow.*"],
    // The durable timeout must outlast the test: only a restart is under test here.
    args: ["--durable-timeout-ms", "600000"],
  });
  const executions = new Uint16Array(COUNT);
  const options = {
    heartbeatIntervalMs: 200,
    heartbeatLiveness: 10,
    reconnectMs: 100,
    concurrency: 4,
    capacity: 4,
  };
  // Slow: a few ms each, sixteen at once, so thousands are still queued at the kill.
  const worker = new MdpWorker(broker.endpoint, "slow.command", async (body) => {
    const i = Number(decoder.decode(body[0]));
    executions[i]!++;
    await new Promise((resolve) => setTimeout(resolve, 4));
    return ["done", String(i)];
  }, options);
  const client = new MdpClient(broker.endpoint, { timeoutMs: 300_000 });
  const ops = new MdpClient(broker.endpoint, { timeoutMs: 10_000 });
  const answers = new Array<string | undefined>(COUNT);
  const deadLettered = new Set<number>();
  const failures: string[] = [];
  let settled = 0;
  try {
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
    const services = await brokerOp(ops, "services");
    const queued = (services.services as Array<{ name: string; queued: number }>)
      .find((s) => s.name === "slow.command")?.queued ?? 0;
    const journal = await brokerOp(ops, "journal");
    await broker.stop("SIGKILL");
    const answeredBeforeKill = settled;
    assert.ok(queued > COUNT / 4, `requests queued at the kill: ${queued}`);

    await broker.restart();
    await waitFor(() => settled >= COUNT, {
      timeoutMs: 240_000,
      intervalMs: 100,
      what: () => `every request settled (${settled} of ${COUNT}; failures: ${failures.length})`,
    });
    await Promise.all(requests);

    assert.deepEqual(failures, [], "no request failed otherwise");
    const dead = await allDeadLetters(ops);
    for (const letter of dead) {
      const i = Number(letter.operation);
      assert.ok(deadLettered.has(i), `dead letter ${letter.id} (${i}) was reported to its client`);
      assert.match(String(letter.reason), /^(worker_lost|expired|caller_lost)$/);
    }
    assert.equal(dead.length, deadLettered.size);
    let duplicates = 0;
    for (let i = 0; i < COUNT; i++) {
      if (deadLettered.has(i)) continue;
      assert.equal(answers[i], `done|${i}`, `request ${i}: its own reply`);
      assert.ok(executions[i]! >= 1, `request ${i} ran`);
      duplicates += executions[i]! - 1;
    }
    const after = await brokerOp(ops, "journal");
    assert.equal(after.pending, 0, "nothing left journaled");
    assert.equal(after.journaled, 0, "nothing left journaled");
    console.log(
      `${COUNT} durable requests: ${answeredBeforeKill} answered before the kill, ${queued} queued and ${journal.pending} journaled at it; ` +
        `${
          COUNT - deadLettered.size
        } answered, ${deadLettered.size} dead letters, ${duplicates} run twice (in a worker's hands, or answered but not committed, at the kill)`,
    );
  } finally {
    await client.close();
    await ops.close();
    await worker.close();
    await broker.stop("SIGKILL");
    await sharedPoller().idle();
  }
}
