/** Client and worker library behaviour against a real broker over TCP. */
import assert from "node:assert/strict";
import { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError, MdpServiceUnavailableError, MdpTimeoutError } from "../mdp/errors.ts";
import { DIALECTS, frame, text } from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { BindError } from "../transport/bind.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { sleep, waitFor } from "./_helpers.ts";

interface World {
  server: BrokerServer;
  client: MdpClient;
  closers: Array<() => Promise<void>>;
}

async function withWorld(
  options: Parameters<typeof BrokerServer.start>[0],
  body: (world: World) => Promise<void>,
): Promise<void> {
  const server = await BrokerServer.start({ endpoint: "tcp://127.0.0.1:*", ...options });
  const client = new MdpClient(server.endpoint, { timeoutMs: 5000 });
  const world: World = { server, client, closers: [] };
  try {
    await body(world);
  } finally {
    for (const close of world.closers.reverse()) await close();
    await client.close();
    await world.server.close();
    await sharedPoller().idle();
  }
}

function addWorker(world: World, worker: MdpWorker): MdpWorker {
  world.closers.push(() => worker.close());
  return worker;
}

Deno.test("client matches 200 concurrent replies to their requests when workers answer out of order", async () => {
  await withWorld({}, async (world) => {
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "slow", async (body) => {
        await sleep(Number(text(body[0]!)) % 7);
        return body;
      }, { concurrency: 4 }),
    );
    const replies = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => world.client.request("slow", [String(i), `payload-${i}`]),
      ),
    );
    replies.forEach((reply, i) => assert.deepEqual(reply.map(text), [String(i), `payload-${i}`]));
  });
});

Deno.test("client times out a request with a typed error and discards its late reply", async () => {
  await withWorld({}, async (world) => {
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "lazy", async (body) => {
        if (text(body[0]!) === "slow") await sleep(400);
        return body;
      }),
    );
    await assert.rejects(
      world.client.request("lazy", ["slow"], { timeoutMs: 100 }),
      (e: Error) => e instanceof MdpTimeoutError && e.service === "lazy",
    );
    // The late reply to "slow" arrives while this request waits: it must not be taken for this one.
    const reply = await world.client.request("lazy", ["fast"]);
    assert.deepEqual(reply.map(text), ["fast"]);
  });
});

Deno.test("client retries with backoff until a worker comes up", async () => {
  await withWorld({}, async (world) => {
    setTimeout(() => {
      addWorker(world, new MdpWorker(world.server.endpoint, "late", (body) => body));
    }, 250);
    // The first attempt's request stays queued at the broker and is answered by the worker once it
    // joins; either that attempt or a retry succeeds — what matters is the caller gets the reply.
    const reply = await world.client.request("late", ["hi"], { timeoutMs: 150, retries: 10 });
    assert.deepEqual(reply.map(text), ["hi"]);
  });
});

Deno.test("client streams PARTIAL replies before the FINAL one", async () => {
  await withWorld({}, async (world) => {
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "count", async (body, ctx) => {
        const n = Number(text(body[0]!));
        for (let i = 1; i < n; i++) await ctx.partial([String(i)]);
        return [String(n)];
      }),
    );
    const seen: Array<[boolean, string]> = [];
    for await (const reply of world.client.stream("count", ["4"])) {
      seen.push([reply.final, text(reply.body[0]!)]);
    }
    assert.deepEqual(seen, [[false, "1"], [false, "2"], [false, "3"], [true, "4"]]);
    // request() skips the partials and returns the final body.
    assert.deepEqual((await world.client.request("count", ["3"])).map(text), ["3"]);
  });
});

Deno.test("broker fails a request nobody serves with SERVICE_UNAVAILABLE after its expiry", async () => {
  await withWorld({ requestTimeoutMs: 200, tickMs: 20 }, async (world) => {
    await assert.rejects(
      world.client.request("nobody", ["x"]),
      (e: Error) => e instanceof MdpServiceUnavailableError && e.code === "SERVICE_UNAVAILABLE",
    );
  });
});

Deno.test("worker keeps heartbeating while a long handler runs and is not purged", async () => {
  const timing = { heartbeatIntervalMs: 50, heartbeatLiveness: 3 };
  await withWorld({ ...timing, tickMs: 10 }, async (world) => {
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "long", async () => {
        await sleep(600); // four times the broker's 150 ms expiry
        return ["done"];
      }, timing),
    );
    assert.deepEqual((await world.client.request("long", ["go"])).map(text), ["done"]);
  });
});

Deno.test("worker handler errors become an error reply and the worker keeps serving", async () => {
  await withWorld({}, async (world) => {
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "fragile", (body) => {
        if (text(body[0]!) === "boom") throw new Error("kaboom");
        return body;
      }),
    );
    const [reply] = await world.client.request("fragile", ["boom"]);
    assert.deepEqual(JSON.parse(text(reply!)), { success: false, error: "Internal error: kaboom" });
    assert.deepEqual((await world.client.request("fragile", ["ok"])).map(text), ["ok"]);
  });
});

Deno.test("worker sends DISCONNECT on close and the broker forgets it at once", async () => {
  await withWorld({}, async (world) => {
    const worker = new MdpWorker(world.server.endpoint, "brief", (body) => body);
    await waitFor(() => world.server.broker.services().some((s) => s.name === "brief"), {
      what: "READY",
    });
    await worker.close();
    await waitFor(() => world.server.broker.workerCount === 0, { what: "DISCONNECT" });
  });
});

Deno.test("worker reconnects to a broker that restarted on the same endpoint", async () => {
  const timing = { heartbeatIntervalMs: 50, heartbeatLiveness: 3 };
  const first = await BrokerServer.start({ endpoint: "tcp://127.0.0.1:*", ...timing, tickMs: 10 });
  const endpoint = first.endpoint;
  // The worker notices the silence after 10 heartbeats: fewer can trip on a loaded machine.
  const worker = new MdpWorker(endpoint, "phoenix", (body) => body, {
    ...timing,
    heartbeatLiveness: 10,
    reconnectMs: 50,
  });
  let second: BrokerServer | undefined;
  let client: MdpClient | undefined;
  try {
    await waitFor(() => first.broker.workerCount === 1, { what: "first registration" });
    await first.close();
    // ZeroMQ releases a closed socket's port asynchronously: retry the bind briefly.
    for (let attempt = 0; !second; attempt++) {
      try {
        // A generous expiry: under a loaded CI machine a 150 ms one can purge a live worker.
        second = await BrokerServer.start({
          endpoint,
          ...timing,
          heartbeatLiveness: 40,
          tickMs: 10,
        });
      } catch (error) {
        if (!(error instanceof BindError) || attempt >= 50) throw error;
        await sleep(100);
      }
    }
    const broker = second.broker;
    await waitFor(() => broker.workerCount === 1, { what: "registration with the new broker" });
    client = new MdpClient(endpoint);
    assert.deepEqual((await client.request("phoenix", ["back"])).map(text), ["back"]);
  } finally {
    await client?.close();
    await worker.close();
    await second?.close();
    await sharedPoller().idle();
  }
});

Deno.test("a worker lost mid-request fails the request with WORKER_LOST", async () => {
  const timing = { heartbeatIntervalMs: 50, heartbeatLiveness: 2 };
  await withWorld({ ...timing, tickMs: 10 }, async (world) => {
    let release!: () => void;
    const worker = new MdpWorker(world.server.endpoint, "doomed", async () => {
      await new Promise<void>((r) => release = r);
      return [frame("never")];
    }, timing);
    const pending = world.client.request("doomed", ["x"]);
    await waitFor(() => world.server.broker.services()[0]?.busy === 1, { what: "dispatch" });
    // Close the worker without letting the handler finish: DISCONNECT mid-request.
    const closing = worker.close();
    await assert.rejects(
      pending,
      (e: Error) => e instanceof MdpBrokerError && e.code === "WORKER_LOST",
    );
    release();
    await closing;
  });
});

Deno.test("a worker with capacity serves many requests at once on one connection", async () => {
  await withWorld({}, async (world) => {
    let active = 0;
    let most = 0;
    addWorker(
      world,
      new MdpWorker(world.server.endpoint, "wide", async (body) => {
        most = Math.max(most, ++active);
        await sleep(20 + (Number(text(body[0]!)) % 5) * 5);
        active--;
        return body;
      }, { capacity: 8 }),
    );
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => world.client.request("wide", [String(i)])),
    );
    replies.forEach((reply, i) => assert.deepEqual(reply.map(text), [String(i)]));
    assert.equal(world.server.broker.workerCount, 1);
    assert.equal(most, 8, "eight requests were in the one worker at once");
  });
});

Deno.test("a lost worker with capacity fails every request it held", async () => {
  await withWorld({}, async (world) => {
    const worker = new MdpWorker(world.server.endpoint, "held", () => new Promise(() => {}), {
      capacity: 3,
    });
    const pending = Array.from(
      { length: 3 },
      () => world.client.request("held", ["x"]).then(() => "ok", (e) => (e as MdpBrokerError).code),
    );
    await waitFor(() => world.server.broker.services()[0]?.busy === 1, { what: "dispatch" });
    await worker.close();
    assert.deepEqual(await Promise.all(pending), ["WORKER_LOST", "WORKER_LOST", "WORKER_LOST"]);
  });
});

for (const broker of ["auto", "libzmq"] as const) {
  for (const peers of ["auto", "libzmq"] as const) {
    Deno.test(
      `broker on ${broker === "auto" ? "ZMTP" : "libzmq"} serves client and worker on ${
        peers === "auto" ? "ZMTP" : "libzmq"
      }: requests, a streamed reply, a large body`,
      async () => {
        const server = await BrokerServer.start({
          endpoint: "tcp://127.0.0.1:*",
          transport: broker,
        });
        const worker = new MdpWorker(server.endpoint, "mixed", async (body, context) => {
          await context.partial(["partial"]);
          return body;
        }, { transport: peers });
        const client = new MdpClient(server.endpoint, { timeoutMs: 5000, transport: peers });
        try {
          assert.equal(server.transport, broker === "auto" ? "zmtp" : "libzmq");
          const big = new Uint8Array(3_000_000).fill(9);
          const replies = await Promise.all(
            Array.from({ length: 50 }, (_, i) => client.request("mixed", [`r${i}`])),
          );
          assert.deepEqual(replies.map((r) => text(r[0]!)), replies.map((_, i) => `r${i}`));
          const parts: string[] = [];
          for await (const reply of client.stream("mixed", ["streamed"])) {
            parts.push(`${reply.final ? "final" : "partial"}:${text(reply.body[0]!)}`);
          }
          assert.deepEqual(parts, ["partial:partial", "final:streamed"]);
          const [echoed] = await client.request("mixed", [big]);
          assert.equal(echoed!.length, big.length);
          assert.ok(echoed!.every((b) => b === 9));
        } finally {
          await client.close();
          await worker.close();
          await server.close();
          await sharedPoller().idle();
        }
      },
    );
  }
}

/** Bodies whose empty frames a Majordomo hop could mistake for a delimiter. */
const EMPTY_SHAPES: string[][] = [[""], ["", "x"], ["x", ""], ["", ""], ["", "", "x"], []];

Deno.test("bodies with empty frames anywhere (or none at all) come back unchanged from the echo worker in every client and worker dialect", async () => {
  await withWorld({}, async (world) => {
    for (const wd of DIALECTS) {
      const echo = startEchoWorker(world.server.endpoint, { dialect: wd });
      await waitFor(() => world.server.broker.workerCount === 1, { what: `${wd} echo worker` });
      for (const cd of DIALECTS) {
        const client = new MdpClient(world.server.endpoint, { dialect: cd, timeoutMs: 5000 });
        try {
          for (const shape of EMPTY_SHAPES) {
            const reply = await client.request(ECHO_SERVICE, ["echo", ...shape]);
            assert.deepEqual(reply.map(text), shape, `${cd} client, ${wd} worker`);
          }
        } finally {
          await client.close();
        }
      }
      await echo.close();
      await waitFor(() => world.server.broker.workerCount === 0, { what: "echo worker gone" });
    }
  });
});
