/**
 * No phantom requests (issue #18): a request whose caller was told it failed
 * is never executed later. The client does not send it once the broker comes
 * back, the broker does not dispatch it once its deadline passed, and the
 * gateway answers 503 at once (not the timeout's 504) while its broker
 * connection is down, and reports it DOWN at once.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { BrokerServer } from "../broker/server.ts";
import { gatewayConfig, stateConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpTimeoutError } from "../mdp/errors.ts";
import { deadlineFrame, decodePeerMessage, readDeadline } from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { startGateway } from "../roles/gateway.ts";
import type { Running } from "../roles/running.ts";
import { startState } from "../roles/state.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import type { Frames } from "../transport/frames.ts";
import { ZMQ_ROUTER } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { freePort, waitFor, withBroker } from "./_helpers.ts";
import { openWs } from "./_ws.ts";

const dec = new TextDecoder();
const texts = (frames: Frames) => frames.map((f) => dec.decode(f));

for (const transport of ["auto", "libzmq"] as const) {
  Deno.test(`client (${transport} DEALER) never sends a request that timed out while the broker was down`, async () => {
    const endpoint = `tcp://127.0.0.1:${freePort()}`;
    // A raw ROUTER answers no mmi.broker probe: the extensions are assumed, as with our broker.
    const client = new MdpClient(endpoint, { transport, extensions: "on" });
    let router: NativeSocket | undefined;
    let loop: Promise<void> | undefined;
    try {
      await assert.rejects(
        client.request("svc", ["stale"], { timeoutMs: 150 }),
        MdpTimeoutError,
      );
      // The broker comes back (a raw ROUTER: it shows exactly what arrives).
      const received: Frames[] = [];
      router = new NativeSocket(ZMQ_ROUTER, { linger: 0 });
      router.attach(endpoint, "bind", "test");
      loop = router.drain((frames) => received.push(frames));
      const fresh = client.request("svc", ["fresh"], { timeoutMs: 5000 }).catch(() => undefined);
      await waitFor(() => received.some((m) => texts(m).includes("fresh")), {
        what: "the fresh request at the broker",
      });
      const bodies = received.map((m) => texts(m).at(-1));
      assert.deepEqual(bodies, ["fresh"], "the stale request never reached the broker");
      // identity | id | deadline | "" | MDPC02 | REQUEST | service | body
      const budget = readDeadline(received[0]![2]!);
      assert.ok(budget !== undefined && budget > 0 && budget <= 5000, `deadline frame: ${budget}`);
      await client.close();
      await fresh;
    } finally {
      await client.close();
      router?.close();
      await loop;
      await sharedPoller().idle();
    }
  });
}

Deno.test("broker drops a queued request whose caller's deadline passed instead of giving it to a worker that registers later", async () => {
  await withBroker({ requestTimeoutMs: 30_000, tickMs: 20 }, async (server, track) => {
    const client = track(new MdpClient(server.endpoint));
    await assert.rejects(client.request("late", ["stale"], { timeoutMs: 150 }), MdpTimeoutError);
    // Dropped within a tick of its deadline (the queue would keep it 30 s).
    await waitFor(() => (server.broker.services()[0]?.queued ?? 0) === 0, {
      timeoutMs: 1000,
      what: "the expired request gone from the queue",
    });
    const seen: string[] = [];
    track(
      new MdpWorker(server.endpoint, "late", (body) => {
        seen.push(dec.decode(body[0]));
        return body;
      }),
    );
    const [reply] = await client.request("late", ["fresh"], { timeoutMs: 5000 });
    assert.equal(dec.decode(reply), "fresh");
    assert.deepEqual(seen, ["fresh"], "the worker never saw the expired request");
  });
});

/** A gateway and state worker on `endpoint`, with a broker that comes and goes. */
async function withGateway(
  requestTimeoutMs: number,
  transport: "auto" | "libzmq",
  body: (url: string, broker: { start(): Promise<void>; stop(): Promise<void> }) => Promise<void>,
): Promise<void> {
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const dir = await Deno.makeTempDir();
  let server: BrokerServer | undefined;
  let state: Running | undefined;
  const gateway = await startGateway(
    {
      ...loadConfig(gatewayConfig, { args: [], env: {} }),
      port: 0,
      broker_endpoint: endpoint,
      buses: {},
      publish_buses: {},
      request_timeout_ms: requestTimeoutMs,
      mdp_transport: transport,
      auth_db: `${dir}/auth.db`,
    },
    () => [],
    new Registry(),
  );
  const broker = {
    async start() {
      server = await BrokerServer.start({ endpoint, heartbeatIntervalMs: 200 });
      state ??= await startState(
        {
          ...loadConfig(stateConfig, { args: [], env: {} }),
          db: `${dir}/state.db`,
          broker_endpoint: endpoint,
          health_port: 0,
          heartbeat_interval_ms: 200,
          bus_endpoint: "",
        },
        undefined,
        new Registry(),
      );
    },
    async stop() {
      await server?.close();
      server = undefined;
    },
  };
  try {
    await body(gateway.url, broker);
  } finally {
    await gateway.close();
    await state?.close();
    await server?.close();
    await sharedPoller().idle();
    await Deno.remove(dir, { recursive: true });
  }
}

const putter = (url: string) => (key: string, value: string) =>
  fetch(`${url}/api/state/ghost/${key}`, {
    method: "PUT",
    headers: { "content-type": "text/plain" },
    body: value,
  });

for (const transport of ["auto", "libzmq"] as const) {
  Deno.test(`gateway (${transport} DEALER) answers 503 at once, not after its request timeout, while the broker is down`, async () => {
    await withGateway(10_000, transport, async (url) => {
      const started = Date.now();
      const refused = await putter(url)("k1", "stale1");
      const elapsed = Date.now() - started;
      const error = await refused.json();
      assert.equal(refused.status, 503, JSON.stringify(error));
      assert.equal(error.error.code, "SERVICE_UNAVAILABLE");
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.ok(elapsed < 2500, `answered in ${elapsed} ms, not after the 10 s timeout`);
    });
  });
}

Deno.test("gateway answers a WebSocket request SERVICE_UNAVAILABLE at once while the broker is down", async () => {
  await withGateway(10_000, "auto", async (url) => {
    const ws = await openWs(url);
    try {
      const started = Date.now();
      ws.send({ type: "request", id: "r1", service: "org.plantd.module.Echo", body: ["x"] });
      const answer = await ws.next((m) => m.id === "r1");
      const elapsed = Date.now() - started;
      assert.equal(answer.type, "error");
      assert.equal(answer.code, "SERVICE_UNAVAILABLE");
      assert.ok(elapsed < 2500, `answered in ${elapsed} ms, not after the 10 s timeout`);
    } finally {
      await ws.close();
    }
  });
});

Deno.test("a write the gateway failed while the broker was down is not applied when broker and state worker come up", async () => {
  await withGateway(2000, "auto", async (url, broker) => {
    const put = putter(url);
    const failed = await put("k1", "stale1");
    await failed.body?.cancel();
    assert.ok(failed.status === 503 || failed.status === 504, `status ${failed.status}`);
    await broker.start();
    // The state service is registered and serving through this gateway.
    await waitFor(async () => {
      const response = await put("k2", "fresh");
      await response.body?.cancel();
      return response.ok;
    }, { timeoutMs: 10_000, intervalMs: 100, what: "a later write through the gateway" });
    const ghost = await fetch(`${url}/api/state/ghost/k1`);
    await ghost.body?.cancel();
    assert.equal(ghost.status, 404, "the failed write was not applied later");
  });
});

for (const transport of ["auto", "libzmq"] as const) {
  Deno.test(`gateway (${transport} DEALER) /healthz broker_connection goes DOWN as soon as the broker's connection closes`, async () => {
    await withGateway(2000, transport, async (url, broker) => {
      const brokerCheck = async () => {
        const body = await (await fetch(`${url}/healthz`)).json();
        return body.checks.find((c: { name: string }) => c.name === "broker_connection");
      };
      await broker.start();
      await waitFor(async () => (await brokerCheck()).status === "UP", {
        timeoutMs: 10_000,
        what: "broker_connection UP",
      });
      await broker.stop();
      // Before: UP until three directory refreshes had failed (about 4 s).
      await waitFor(async () => (await brokerCheck()).status === "DOWN", {
        timeoutMs: 1000,
        what: "broker_connection DOWN",
      });
      assert.match((await brokerCheck()).output, /connection to the broker is down/);
    });
  });
}

Deno.test("deadline frame: the broker reads it off the end of the stack and leaves any other frame there", () => {
  const id = Uint8Array.of(0, 0, 0, 7);
  const request = (stack: Uint8Array[]) =>
    decodePeerMessage([
      ...stack,
      new Uint8Array(0),
      ...["MDPC02", "REQUEST", "svc", "body"].map((t) => new TextEncoder().encode(t)),
    ]);
  const stamped = request([id, deadlineFrame(1234)]);
  assert.equal(stamped.kind, "request");
  if (stamped.kind !== "request") return;
  assert.equal(stamped.budgetMs, 1234);
  assert.deepEqual(stamped.stack, [id], "workers and replies see the id only");

  // Plain MDP and Go clients: no deadline, the stack as sent.
  const plain = request([id]);
  assert.ok(plain.kind === "request" && plain.budgetMs === undefined);
  const lookalike = Uint8Array.of(0xff, 0x64, 0x6c, 0x02, 0, 0, 0, 1);
  const other = request([id, lookalike]);
  assert.ok(other.kind === "request" && other.budgetMs === undefined);
  assert.deepEqual(other.kind === "request" && other.stack, [id, lookalike]);
});
