/**
 * Dead letters (issue #19): a durable request whose worker process crashes
 * on it is re-queued until its `durable_max_attempts`th worker is lost, then
 * kept in the dead-letter queue with its reason, attempts and times; its
 * caller is told so. Replayed once the worker is fixed, it succeeds and its
 * reply is kept under its id.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { brokerOp, startBrokerProcess } from "./_durable.ts";
import { spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";

const WORKER = new URL("./peers/durable_worker.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

function spawnWorker(endpoint: string, service: string, fixed: boolean): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", WORKER, endpoint, service],
      env: { FIXED: fixed ? "1" : "0" },
      stdout: "null",
      stderr: "piped",
    }),
  );
}

Deno.test("a worker that crashes on a poison request sends it to the dead-letter queue after 3 attempts; replayed after the fix, it succeeds", async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBrokerProcess({
    journal: `${dir}/journal.db`,
    durableServices: ["plant.valve"],
    args: ["--durable-max-attempts", "3", "--durable-timeout-ms", "120000"],
  });
  const client = new MdpClient(broker.endpoint, { timeoutMs: 120_000 });
  // A supervisor, as systemd or Kubernetes would be: a crashed worker is started again.
  let current: WatchedChild | undefined;
  let crashes = 0;
  let supervising = true;
  const supervisor = (async () => {
    while (supervising) {
      current = spawnWorker(broker.endpoint, "plant.valve", false);
      const status = await current.status;
      if (status.signal === "SIGKILL") crashes++;
      else if (supervising) throw new Error(`worker exited: ${current.stderr()}`);
    }
  })();
  let fixed: WatchedChild | undefined;
  try {
    const sent = Date.now();
    const good = client.request("plant.valve", ["open"], { durable: true });
    const poison = client.request("plant.valve", ["poison"], { durable: true });
    const [okReply] = await good;
    assert.equal(decoder.decode(okReply), "ok");
    const error = await poison.then(() => undefined, (e) => e);
    assert.ok(error instanceof MdpBrokerError, String(error));
    assert.equal(error.code, "DEAD_LETTERED");
    assert.match(error.message, /worker_lost: its worker was lost 3 times/);
    assert.equal(crashes, 3, "three workers crashed on it, no fourth was given it");

    const list = await brokerOp(client, "dlq-list");
    assert.equal(list.count, 1);
    const [letter] = list.dead_letters as Array<Record<string, unknown>>;
    assert.equal(letter!.service, "plant.valve");
    assert.equal(letter!.reason, "worker_lost");
    assert.equal(letter!.attempts, 3);
    assert.equal(letter!.operation, "poison");
    const failures = letter!.failures as Array<{ at: string; reason: string }>;
    assert.equal(failures.length, 3);
    assert.ok(failures.every((f) => f.reason === "connection closed"), JSON.stringify(failures));
    const received = Date.parse(String(letter!.received_at));
    const dead = Date.parse(String(letter!.dead_at));
    assert.ok(
      received >= sent - 1000 && received <= dead,
      `${letter!.received_at} .. ${letter!.dead_at}`,
    );
    const shown = await brokerOp(client, "dlq-show", { id: letter!.id });
    assert.deepEqual(shown.body, [{ text: "poison" }]);

    // The fix is deployed.
    supervising = false;
    await current?.stop("SIGTERM");
    await supervisor;
    fixed = spawnWorker(broker.endpoint, "plant.valve", true);
    const replayed = await brokerOp(client, "dlq-replay", { id: letter!.id });
    assert.equal(replayed.replayed, true);
    let status: Record<string, unknown> = {};
    await waitFor(async () => {
      status = await brokerOp(client, "durable-status", { id: letter!.id });
      return status.state === "replied";
    }, {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: () => `the replayed request answered: ${JSON.stringify(status)}`,
    });
    assert.deepEqual(status.reply, [{ text: "fixed" }, { text: "poison" }]);
    assert.equal((await brokerOp(client, "dlq-list")).count, 0, "no longer a dead letter");
    assert.equal(crashes, 3);

    const metrics = await (await fetch(`${broker.healthUrl}/metrics`)).text();
    assert.match(metrics, /^mdp_dead_lettered_total\{reason="worker_lost"\} 1$/m);
    assert.match(metrics, /^mdp_dlq_replays_total 1$/m);
    assert.match(metrics, /^mdp_dead_letters 0$/m);
  } finally {
    supervising = false;
    await current?.stop("SIGKILL");
    await supervisor.catch(() => {});
    await fixed?.stop("SIGKILL");
    await client.close();
    await broker.stop("SIGKILL");
    await sharedPoller().idle();
    await Deno.remove(dir, { recursive: true });
  }
});
