/**
 * A worker set to dialect "auto" (mdp/dialect_discovery.ts): against our
 * broker it stays on plantd with its capacity; against a broker that answers
 * nothing it tries plantd, RFC 7 and RFC 18 in that order on fresh
 * connections and then says loudly, naming the setting, that none worked;
 * while no broker listens it judges nothing. Strict RFC brokers:
 * tests/interop_matrix_test.ts.
 */
import assert from "node:assert/strict";
import { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { MdpWorker, type WorkerEvent } from "../mdp/worker.ts";
import { logWorkerEvents } from "../roles/worker_options.ts";
import { logger, resetLogging, setupLogging } from "../telemetry/log.ts";
import { freePort, settleTransport, waitFor, withBroker } from "./_helpers.ts";
import { hexBytes, PyZmq } from "./_pyzmq.ts";

const FAST = { heartbeatIntervalMs: 50, heartbeatLiveness: 3, reconnectMs: 20 };
const dialectEvents = (events: WorkerEvent[]) =>
  events.filter((e): e is Extract<WorkerEvent, { type: "dialect" }> => e.type === "dialect");

Deno.test("dialect auto against our broker: plantd is confirmed at the broker's first word and the READY keeps its capacity", async () => {
  await withBroker({ heartbeatIntervalMs: 50, tickMs: 20 }, async (server, track) => {
    const events: WorkerEvent[] = [];
    const gates: Array<() => void> = [];
    track(
      new MdpWorker(
        server.endpoint,
        "svc",
        async (body) => {
          await new Promise<void>((resolve) => gates.push(resolve));
          return body;
        },
        { dialect: "auto", capacity: 2, ...FAST },
        (event) => events.push(event),
      ),
    );
    await waitFor(() => dialectEvents(events).length > 0, { what: "a dialect verdict" });
    assert.deepEqual(
      dialectEvents(events).map((e) => [e.dialect, e.outcome]),
      [["plantd", "confirmed"]],
    );
    const client = track(new MdpClient(server.endpoint));
    const replies = [client.request("svc", ["a"]), client.request("svc", ["b"])];
    // Both at once on one connection: the broker read the capacity in the READY.
    await waitFor(() => gates.length === 2, { what: "two requests at the worker at once" });
    gates.forEach((open) => open());
    assert.deepEqual((await Promise.all(replies)).map((r) => r.map(text)), [["a"], ["b"]]);
  });
});

Deno.test("dialect auto against a broker that answers nothing: READY in plantd, RFC 7, RFC 18, each on a fresh connection, then an error naming the setting", async () => {
  const lines: Array<{ level: string; message: string }> = [];
  await setupLogging("debug", "json", (line) => lines.push(JSON.parse(line)));
  const router = await PyZmq.start("ROUTER");
  const events: WorkerEvent[] = [];
  let worker: MdpWorker | undefined;
  try {
    const endpoint = await router.bind();
    const log = logWorkerEvents(logger("echo"), "dialect (PLANTD_MODULE_ECHO_DIALECT)");
    worker = new MdpWorker(endpoint, "svc", (b) => b, { dialect: "auto", capacity: 4, ...FAST }, (
      event,
    ) => {
      events.push(event);
      log(event);
    });
    const readies: string[][] = [];
    const peers = new Set<string>();
    while (readies.length < 3) {
      const message = await router.receive(5000);
      assert.ok(message, `READY ${readies.length + 1} within 5000 ms`);
      const frames = message.map((f) => hexBytes(f.hex!));
      const shown = frames.slice(1).map((f) =>
        f.length === 1 && f[0]! < 0x20 ? `0x0${f[0]}` : new TextDecoder().decode(f)
      );
      if (!shown.includes("READY") && !(shown.includes("0x01") && shown.includes("svc"))) continue;
      readies.push(shown);
      peers.add(message[0]!.hex!);
    }
    assert.deepEqual(readies, [
      ["", "MDPW02", "READY", "svc", "4"],
      ["", "MDPW01", "0x01", "svc"],
      ["MDPW02", "0x01", "svc"],
    ]);
    assert.equal(peers.size, 3, "each dialect on its own connection");
    await waitFor(() => dialectEvents(events).some((e) => e.outcome === "exhausted"), {
      what: "the search to run out",
    });
    assert.deepEqual(dialectEvents(events).slice(0, 3).map((e) => [e.dialect, e.outcome, e.next]), [
      ["plantd", "silent", "mdp01"],
      ["mdp01", "silent", "mdp02"],
      ["mdp02", "exhausted", "plantd"],
    ]);
    const error = lines.find((l) => l.level === "error");
    assert.match(error?.message ?? "", /none of the dialects plantd, mdp01, mdp02/);
    assert.match(error?.message ?? "", /set dialect \(PLANTD_MODULE_ECHO_DIALECT\)/);
  } finally {
    await worker?.close();
    await router.close();
    await resetLogging();
    await settleTransport();
  }
});

Deno.test("dialect auto judges nothing while no broker listens, then confirms plantd when ours comes up", async () => {
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const events: WorkerEvent[] = [];
  const worker = new MdpWorker(
    endpoint,
    "svc",
    (b) => b,
    { dialect: "auto", ...FAST },
    (e) => events.push(e),
  );
  let server: BrokerServer | undefined;
  try {
    // Many silent windows go by, each ending in a reconnect, none counted against a dialect.
    await waitFor(() => events.filter((e) => e.type === "reconnect").length >= 4, {
      what: "four silent windows",
    });
    assert.deepEqual(dialectEvents(events), []);
    server = await BrokerServer.start({ endpoint, heartbeatIntervalMs: 50, tickMs: 20 });
    await waitFor(() => dialectEvents(events).length > 0, { what: "a dialect verdict" });
    assert.deepEqual(
      dialectEvents(events).map((e) => [e.dialect, e.outcome]),
      [["plantd", "confirmed"]],
    );
  } finally {
    await worker.close();
    await server?.close();
    await settleTransport();
  }
});
