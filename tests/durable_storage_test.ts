/**
 * A journal that cannot be written (issue #19): with the journal at its size
 * limit (journal_max_bytes, SQLite's max_page_count, as a full disk would
 * be), durable requests are refused with JOURNAL_UNAVAILABLE naming
 * STORAGE_FULL, the broker's /healthz journal check says so, requests to
 * other services are served as before, and no refused request is ever
 * routed: a worker that comes later gets exactly the requests that were stored.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { brokerOp, journalCheck, startBrokerProcess } from "./_durable.ts";
import { waitFor } from "./_helpers.ts";

const decoder = new TextDecoder();
const workerOptions = { heartbeatIntervalMs: 200, heartbeatLiveness: 10, reconnectMs: 100 };

Deno.test("a full journal refuses durable requests naming STORAGE_FULL, /healthz says so, other services are served, and nothing refused is routed", async () => {
  const dir = await Deno.makeTempDir();
  const broker = await startBrokerProcess({
    journal: `${dir}/journal.db`,
    durableServices: ["plant.*"],
    args: ["--journal-max-bytes", String(256 * 1024), "--durable-timeout-ms", "120000"],
  });
  const client = new MdpClient(broker.endpoint, { timeoutMs: 120_000 });
  const echo = new MdpWorker(broker.endpoint, "echo", (body) => body, workerOptions);
  let worker: MdpWorker | undefined;
  const outcomes = new Map<string, "answered" | "refused" | string>();
  const track = (name: string, request: Promise<unknown>) =>
    request.then(
      () => outcomes.set(name, "answered"),
      (error) => {
        const refused = error instanceof MdpBrokerError && error.code === "JOURNAL_UNAVAILABLE";
        outcomes.set(name, refused ? "refused" : String(error));
        if (refused) refusal ??= error.message;
      },
    );
  let refusal: string | undefined;
  try {
    assert.equal((await journalCheck(broker))?.status, "UP");
    // Stored while there is room: no worker takes them yet.
    const small = Array.from(
      { length: 10 },
      (_, i) =>
        track(`small-${i}`, client.request("plant.valve", [`small-${i}`], { durable: true })),
    );
    await waitFor(async () => (await brokerOp(client, "journal")).journaled === 10, {
      what: "ten durable requests journaled",
    });
    // Then more than the journal holds.
    const big = "x".repeat(8 * 1024);
    const flood = Array.from(
      { length: 100 },
      (_, i) =>
        track(`big-${i}`, client.request("plant.valve", [`big-${i}`, big], { durable: true })),
    );
    await waitFor(() => refusal !== undefined, {
      timeoutMs: 30_000,
      what: () => `a refusal (outcomes: ${JSON.stringify([...outcomes])})`,
    });
    assert.match(refusal!, /journal cannot store it \(STORAGE_FULL: .*full/);

    const check = await journalCheck(broker);
    assert.equal(check?.status, "DOWN");
    assert.match(check?.output ?? "", /^STORAGE_FULL: /);
    assert.equal(check?.required, false, "the broker still serves non-durable requests");
    const [echoed] = await client.request("echo", ["still served"], { timeoutMs: 5000 });
    assert.equal(decoder.decode(echoed), "still served");

    // Every request either stored or refused: none waits for an answer that will not come.
    let stored = 0;
    await waitFor(async () => {
      stored = (await brokerOp(client, "journal")).journaled as number;
      return outcomes.size + stored === 110;
    }, {
      timeoutMs: 30_000,
      what: () => `each request stored or refused (${outcomes.size} refused, ${stored} stored)`,
    });
    const refused = [...outcomes].filter(([, o]) => o === "refused").map(([name]) => name);
    assert.ok(refused.length > 0 && refused.every((n) => n.startsWith("big-")), refused.join());
    assert.equal(stored + refused.length, 110);

    // A worker now gets what was stored, and never a refused request.
    const seen: string[] = [];
    worker = new MdpWorker(broker.endpoint, "plant.valve", (body) => {
      seen.push(decoder.decode(body[0]));
      return ["done"];
    }, workerOptions);
    await Promise.all([...small, ...flood]);
    // Nothing else waits at the broker for the worker.
    await waitFor(async () => {
      const { services } = await brokerOp(client, "services");
      const valve = (services as Array<{ name: string; queued: number; busy: number }>)
        .find((s) => s.name === "plant.valve");
      return valve?.queued === 0 && valve.busy === 0;
    }, { what: "plant.valve's queue empty and its worker idle" });
    assert.deepEqual(
      [...outcomes.values()].filter((o) => o !== "answered" && o !== "refused"),
      [],
      "no other failure",
    );
    assert.equal(seen.length, stored);
    for (const name of refused) assert.ok(!seen.includes(name), `${name} was refused, not routed`);
    for (let i = 0; i < 10; i++) assert.equal(outcomes.get(`small-${i}`), "answered");
  } finally {
    await client.close();
    await echo.close();
    await worker?.close();
    await broker.stop("SIGKILL");
    await sharedPoller().idle();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a second broker on the same journal file exits non-zero naming the lock and the holder's pid", async () => {
  const dir = await Deno.makeTempDir();
  const first = await startBrokerProcess({
    journal: `${dir}/journal.db`,
    durableServices: ["plant.*"],
  });
  try {
    const second = await startBrokerProcess({
      journal: `${dir}/journal.db`,
      durableServices: ["plant.*"],
    }).then((started) => started, (error: Error) => error);
    if (!(second instanceof Error)) {
      await second.stop("SIGKILL");
      assert.fail("a second broker started on the same journal");
    }
    assert.match(second.message, /the broker exited: .*in use by another broker \(pid \d+\)/s);
    assert.ok(!first.child.exited(), "the first broker keeps running");
    assert.match(first.child.stderr(), /^$/, "and logs nothing of it");
  } finally {
    await first.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
