/**
 * The dead-letter queue from the outside (issue #19): `/api/dlq` (list, show,
 * replay, delete, purge) with `dlq:read` / `dlq:write`, no way around them
 * through the generic service bridge, a WebSocket event on the event bus
 * when a dead letter arrives, and `plant dlq ls|show|replay|delete|purge`
 * through the gateway and straight to the broker.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpTimeoutError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { brokerOp } from "./_durable.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";
import { waitFor } from "./_helpers.ts";
import { plant } from "./_cli.ts";
import { openWs } from "./_ws.ts";

Deno.test("dead letters through REST with dlq:read and dlq:write, a WebSocket event on arrival, and plant dlq both ways", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withSecuredSystem(async (system) => {
      const reader = await tokenWith([
        "dlq:read",
        "bus:subscribe:event:org.plantd.Broker.dlq",
      ]);
      const writer = await tokenWith(["dlq:read", "dlq:write"]);
      const caller = await tokenWith(["service:*", "service:list"]);
      const api = (path: string, token?: string, method = "GET") =>
        fetch(`${system.url}${path}`, { method, headers: token ? bearer(token) : {} });

      const ws = await openWs(system.url, bearer(reader));
      const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 10_000 });
      let worker: MdpWorker | undefined;
      try {
        ws.send({ type: "subscribe", id: "d", bus: "event", prefix: "org.plantd.Broker.dlq" });
        await ws.next((m) => m.type === "subscribed" && m.id === "d");

        // No worker serves it: its caller's deadline passes in the queue.
        await assert.rejects(
          client.request("plant.valve", ["open"], { durable: true, timeoutMs: 300 }),
          MdpTimeoutError,
        );
        const event = await ws.next((m) => m.type === "message" && m.id === "d");
        assert.equal(event.topic, "org.plantd.Broker.dlq");
        const announced = JSON.parse(event.payload);
        assert.equal(announced.service, "plant.valve");
        assert.equal(announced.reason, "expired");

        assert.equal((await api("/api/dlq")).status, 401);
        const refused = await api("/api/dlq", caller);
        assert.equal(refused.status, 403, "service:* is not dlq:read");
        await refused.body?.cancel();
        const listed = await (await api("/api/dlq", reader)).json();
        assert.equal(listed.count, 1);
        const [letter] = listed.dead_letters;
        assert.equal(letter.id, announced.id);
        assert.equal(letter.reason, "expired");
        assert.equal(letter.operation, "open");
        const shown = await (await api(`/api/dlq/${letter.id}`, reader)).json();
        assert.deepEqual(shown.body, [{ text: "open" }]);

        // The generic bridge asks the same permissions.
        const bridged = await fetch(`${system.url}/api/services/org.plantd.Broker/dlq-list`, {
          method: "POST",
          headers: { ...bearer(caller), "content-type": "application/json" },
          body: "{}",
        });
        assert.equal(bridged.status, 403);
        await bridged.body?.cancel();

        const notAllowed = await api(`/api/dlq/${letter.id}/replay`, reader, "POST");
        assert.equal(notAllowed.status, 403, "replaying needs dlq:write");
        await notAllowed.body?.cancel();
        const missing = await api(`/api/dlq/${"0".repeat(32)}`, writer, "DELETE");
        assert.equal(missing.status, 404);
        assert.equal((await missing.json()).error.code, "NOT_FOUND");
        const replayed = await api(`/api/dlq/${letter.id}/replay`, writer, "POST");
        assert.equal(replayed.status, 200);
        assert.deepEqual(await replayed.json(), {
          id: letter.id,
          service: "plant.valve",
          replayed: true,
        });
        assert.equal((await (await api("/api/dlq", reader)).json()).count, 0);
        worker = new MdpWorker(system.brokerEndpoint, "plant.valve", () => ["opened"]);
        await waitFor(
          async () =>
            (await brokerOp(client, "durable-status", { id: letter.id })).state === "replied",
          {
            what: "the replayed request answered",
          },
        );

        // The CLI, both ways.
        await worker.close();
        worker = undefined;
        await assert.rejects(
          client.request("plant.valve", ["close"], { durable: true, timeoutMs: 300 }),
          MdpTimeoutError,
        );
        await ws.next((m) => m.type === "message" && m.id === "d");
        const viaGateway = ["--gateway", system.url, "--token", writer];
        const ls = await plant([...viaGateway, "--json", "dlq", "ls"]);
        assert.equal(ls.code, 0, ls.stderr);
        const [second] = JSON.parse(ls.stdout).dead_letters;
        assert.equal(second.operation, "close");
        const show = await plant(["--broker", system.brokerEndpoint, "dlq", "show", second.id]);
        assert.equal(show.code, 0, show.stderr);
        assert.match(show.stdout, /expired: its caller's deadline passed/);
        assert.match(show.stdout, /frame 0\s+close/);
        const unknown = await plant([...viaGateway, "dlq", "replay", "f".repeat(32)]);
        assert.equal(unknown.code, 1);
        assert.match(unknown.stderr, /does not exist/);
        const purge = await plant([
          "--broker",
          system.brokerEndpoint,
          "dlq",
          "purge",
          "plant.valve",
        ]);
        assert.equal(purge.code, 0, purge.stderr);
        assert.match(purge.stdout, /deleted 1 dead letter$/m);
        const empty = await plant([...viaGateway, "dlq", "ls"]);
        assert.match(empty.stdout, /no dead letters/);
      } finally {
        await worker?.close();
        await client.close();
        await ws.close();
      }
    }, {
      broker: { durable_services: ["plant.*"], journal: `${dir}/journal.db` },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
