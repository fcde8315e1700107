/**
 * Wire-level tests of the broker: raw DEALER sockets against a real
 * BrokerServer on a random loopback port, checking the frames of
 * docs/plantd-wire.md section 1 byte for byte in all three dialects.
 *
 * The expected frames are written out here from the contract, independently
 * of mdp/protocol.ts, so the codec is checked rather than trusted.
 */
import assert from "node:assert/strict";
import type { BrokerServer } from "../broker/server.ts";
import type { Frames } from "../transport/frames.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import {
  byte,
  describe,
  type FrameLike,
  Peer,
  str,
  toFrames,
  waitFor,
  withBroker,
} from "./_helpers.ts";

type Dialect = "plantd" | "mdp01" | "mdp02";
const DIALECTS: readonly Dialect[] = ["plantd", "mdp01", "mdp02"];
const NAME: Record<Dialect, string> = {
  plantd: "plantd",
  mdp01: "RFC 7 (MDP/0.1)",
  mdp02: "RFC 18 (MDP/0.2)",
};

// ------------------------------------------------------------ the contract's frame tables

/** Client side, as the DEALER peer sends and receives. */
const client = {
  request(d: Dialect, service: string, body: readonly FrameLike[]): FrameLike[] {
    if (d === "plantd") return ["", "MDPC02", "REQUEST", service, ...body];
    if (d === "mdp01") return ["", "MDPC01", service, ...body];
    return ["MDPC02", byte(0x01), service, ...body];
  },
  reply(d: Dialect, final: boolean, service: string, body: readonly FrameLike[]): FrameLike[] {
    if (d === "plantd") return ["MDPC02", final ? "FINAL" : "PARTIAL", service, ...body];
    if (d === "mdp01") {
      assert.ok(final, "RFC 7 has no partial replies");
      return ["", "MDPC01", service, ...body];
    }
    return ["MDPC02", byte(final ? 0x03 : 0x02), service, ...body];
  },
};

const W01 = { READY: 0x01, REQUEST: 0x02, REPLY: 0x03, HEARTBEAT: 0x04, DISCONNECT: 0x05 };
const W02 = {
  READY: 0x01,
  REQUEST: 0x02,
  PARTIAL: 0x03,
  FINAL: 0x04,
  HEARTBEAT: 0x05,
  DISCONNECT: 0x06,
};

/** Worker side, as the DEALER peer sends and receives. */
const worker = {
  ready(d: Dialect, service: string): FrameLike[] {
    if (d === "plantd") return ["", "MDPW02", "READY", service];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.READY), service];
    return ["MDPW02", byte(W02.READY), service];
  },
  heartbeat(d: Dialect): FrameLike[] {
    if (d === "plantd") return ["", "MDPW02", "HEARTBEAT"];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.HEARTBEAT)];
    return ["MDPW02", byte(W02.HEARTBEAT)];
  },
  disconnect(d: Dialect): FrameLike[] {
    if (d === "plantd") return ["", "MDPW02", "DISCONNECT"];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.DISCONNECT)];
    return ["MDPW02", byte(W02.DISCONNECT)];
  },
  partial(d: Dialect, clientId: FrameLike, body: readonly FrameLike[]): FrameLike[] {
    if (d === "plantd") return ["", "MDPW02", "PARTIAL", clientId, ...body];
    if (d === "mdp02") return ["MDPW02", byte(W02.PARTIAL), clientId, "", ...body];
    throw new RangeError("RFC 7 has no partial replies");
  },
  final(d: Dialect, clientId: FrameLike, body: readonly FrameLike[]): FrameLike[] {
    if (d === "plantd") return ["", "MDPW02", "FINAL", clientId, ...body];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.REPLY), clientId, "", ...body];
    return ["MDPW02", byte(W02.FINAL), clientId, "", ...body];
  },
  /** What the broker sends a worker for a request. */
  request(d: Dialect, clientId: FrameLike, body: readonly FrameLike[]): FrameLike[] {
    if (d === "plantd") return ["MDPW02", "REQUEST", clientId, "", ...body];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.REQUEST), clientId, "", ...body];
    return ["MDPW02", byte(W02.REQUEST), clientId, "", ...body];
  },
  /** What the broker sends an idle worker as a heartbeat. */
  brokerHeartbeat(d: Dialect): FrameLike[] {
    if (d === "plantd") return ["MDPW02", "HEARTBEAT"];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.HEARTBEAT)];
    return ["MDPW02", byte(W02.HEARTBEAT)];
  },
  /** What the broker sends a worker it rejects or drops. */
  brokerDisconnect(d: Dialect): FrameLike[] {
    if (d === "plantd") return ["MDPW02", "DISCONNECT"];
    if (d === "mdp01") return ["", "MDPW01", byte(W01.DISCONNECT)];
    return ["MDPW02", byte(W02.DISCONNECT)];
  },
  /** Index of the client-id frame in a request the broker sent. */
  clientIdAt(d: Dialect): number {
    return d === "mdp01" ? 3 : 2;
  },
};

// ------------------------------------------------------------ assertion helpers

function assertFrames(actual: Frames, expected: readonly FrameLike[], message?: string): void {
  const a = describe(actual);
  const e = describe(toFrames(expected));
  if (message === undefined) assert.deepEqual(a, e);
  else assert.deepEqual(a, e, message);
}

function same(a: Frames, expected: readonly FrameLike[]): boolean {
  const x = describe(a);
  const y = describe(toFrames(expected));
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** A skip predicate for broker heartbeats, so waits for requests ignore them. */
function heartbeats(d: Dialect): (frames: Frames) => boolean {
  return (frames) => same(frames, worker.brokerHeartbeat(d));
}

interface BrokerError {
  success: false;
  error: string;
  mdp: { code: string; service: string };
}

/** Checks a broker-made error reply frame by frame and returns its JSON. */
function assertErrorReply(d: Dialect, reply: Frames, service: string, code: string): BrokerError {
  const head = client.reply(d, true, service, []);
  assert.equal(reply.length, head.length + 1, `error reply is one JSON frame: ${describe(reply)}`);
  assertFrames(reply.slice(0, head.length), head);
  const parsed = JSON.parse(str(reply[head.length])) as BrokerError;
  assert.equal(parsed.success, false);
  assert.equal(typeof parsed.error, "string");
  assert.ok(parsed.error.length > 0);
  assert.deepEqual(parsed.mdp, { code, service });
  return parsed;
}

function serviceInfo(server: BrokerServer, name: string) {
  return server.broker.services().find((s) => s.name === name);
}

/** Connects a raw worker, sends READY and waits until the broker has registered it. */
async function readyWorker(
  server: BrokerServer,
  track: <T extends { close(): unknown }>(c: T) => T,
  d: Dialect,
  service: string,
  routingId: string,
): Promise<Peer> {
  const before = serviceInfo(server, service)?.workers ?? 0;
  const peer = track(new Peer(server.endpoint, { routingId }));
  await peer.send(worker.ready(d, service));
  await waitFor(() => (serviceInfo(server, service)?.workers ?? 0) === before + 1, {
    what: `${routingId} to register for ${service}`,
  });
  return peer;
}

/** Sends a request and returns the broker's reply (the client's next message). */
async function ask(
  peer: Peer,
  d: Dialect,
  service: string,
  body: readonly FrameLike[],
): Promise<Frames> {
  await peer.send(client.request(d, service, body));
  return await peer.next();
}

const BINARY = [0x00, 0xff, 0x10, 0x80];

// ------------------------------------------------------------ request / reply, all dialects

for (const cd of DIALECTS) {
  for (const wd of DIALECTS) {
    const replies = wd === "mdp01" ? "a REPLY" : "PARTIAL and FINAL";
    const gets = cd === "mdp01"
      ? "the final reply only"
      : wd === "mdp01"
      ? "FINAL"
      : "PARTIAL then FINAL";
    Deno.test(
      `broker answers a ${NAME[cd]} client served by a ${
        NAME[wd]
      } worker sending ${replies} with ${gets} in the client's dialect`,
      async () => {
        await withBroker({}, async (server, track) => {
          const service = "test.echo";
          const w = await readyWorker(server, track, wd, service, "worker-1");
          const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
          const body: FrameLike[] = ["op", BINARY, "wörld", ""];
          await c.send(client.request(cd, service, body));

          const request = await w.next({ skip: heartbeats(wd) });
          assertFrames(request, worker.request(wd, "client-1", body), "worker's REQUEST");

          const clientId = request[worker.clientIdAt(wd)]!;
          if (wd !== "mdp01") await w.send(worker.partial(wd, clientId, ["partial", BINARY]));
          await w.send(worker.final(wd, clientId, ["final", BINARY]));

          if (wd !== "mdp01" && cd !== "mdp01") {
            assertFrames(
              await c.next(),
              client.reply(cd, false, service, ["partial", BINARY]),
              "client's PARTIAL",
            );
          }
          // For an RFC 7 client the PARTIAL, sent first, must not come first: it is not sent.
          assertFrames(
            await c.next(),
            client.reply(cd, true, service, ["final", BINARY]),
            "client's FINAL",
          );
        });
      },
    );
  }
}

Deno.test("broker answers a plantd worker FINAL with and without the empty frame after the client id with the same client FINAL", async () => {
  await withBroker({}, async (server, track) => {
    const service = "test.echo";
    const w = await readyWorker(server, track, "plantd", service, "worker-1");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    const forms: Array<(id: FrameLike, body: FrameLike[]) => FrameLike[]> = [
      (id, body) => ["", "MDPW02", "FINAL", id, ...body],
      (id, body) => ["", "MDPW02", "FINAL", id, "", ...body],
    ];
    for (const [i, form] of forms.entries()) {
      await c.send(client.request("plantd", service, ["ping", String(i)]));
      const request = await w.next({ skip: heartbeats("plantd") });
      assertFrames(request, worker.request("plantd", "client-1", ["ping", String(i)]));
      await w.send(form("client-1", ["pong", String(i)]));
      assertFrames(await c.next(), client.reply("plantd", true, service, ["pong", String(i)]));
    }
  });
});

Deno.test("broker answers a client with a libzmq-made identity: the worker sees 5 bytes, first 0x00", async () => {
  await withBroker({}, async (server, track) => {
    const service = "test.echo";
    const w = await readyWorker(server, track, "plantd", service, "worker-1");
    const c = track(new Peer(server.endpoint));
    await c.send(client.request("plantd", service, ["hello"]));
    const request = await w.next({ skip: heartbeats("plantd") });
    const clientId = request[2]!;
    assert.equal(clientId.length, 5);
    assert.equal(clientId[0], 0x00);
    assertFrames(request, worker.request("plantd", clientId, ["hello"]));
    await w.send(worker.final("plantd", clientId, ["world"]));
    assertFrames(await c.next(), client.reply("plantd", true, service, ["world"]));
  });
});

Deno.test("broker answers peers that add an optional leading empty frame in RFC 18, mirroring it to the worker", async () => {
  await withBroker({}, async (server, track) => {
    const service = "test.echo";
    const w = track(new Peer(server.endpoint, { routingId: "worker-1" }));
    await w.send(["", ...worker.ready("mdp02", service)]);
    await waitFor(() => serviceInfo(server, service)?.workers === 1, { what: "worker" });
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    await c.send(["", ...client.request("mdp02", service, ["x"])]);
    // Its READY cannot say whether it wants the empty frame back: it gets one (docs/transport.md).
    const request = await w.next({
      skip: (f) => same(f, ["", ...worker.brokerHeartbeat("mdp02")]),
    });
    assertFrames(request, ["", ...worker.request("mdp02", "client-1", ["x"])]);
    await w.send(["", ...worker.final("mdp02", "client-1", ["y"])]);
    assertFrames(await c.next(), client.reply("mdp02", true, service, ["y"]));
  });
});

Deno.test("broker answers requests with the longest-idle worker first and in FIFO order per service", async () => {
  await withBroker({}, async (server, track) => {
    const service = "test.lru";
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    // Queued before any worker exists: served in the order sent.
    for (const n of ["1", "2", "3"]) await c.send(client.request("plantd", service, [n]));
    await waitFor(() => serviceInfo(server, service)?.queued === 3, { what: "3 queued requests" });
    const a = await readyWorker(server, track, "plantd", service, "worker-a");
    assertFrames(
      await a.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["1"]),
    );
    const b = await readyWorker(server, track, "plantd", service, "worker-b");
    assertFrames(
      await b.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["2"]),
    );
    await a.send(worker.final("plantd", "client-1", ["r1"]));
    assertFrames(await c.next(), client.reply("plantd", true, service, ["r1"]));
    assertFrames(
      await a.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["3"]),
    );
    await b.send(worker.final("plantd", "client-1", ["r2"]));
    assertFrames(await c.next(), client.reply("plantd", true, service, ["r2"]));
    // b has now been idle longer than a, which is still busy, then both idle: b, then a.
    await a.send(worker.final("plantd", "client-1", ["r3"]));
    assertFrames(await c.next(), client.reply("plantd", true, service, ["r3"]));
    await waitFor(() => serviceInfo(server, service)?.idle === 2, { what: "both idle" });
    await c.send(client.request("plantd", service, ["4"]));
    assertFrames(
      await b.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["4"]),
    );
    await c.send(client.request("plantd", service, ["5"]));
    assertFrames(
      await a.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["5"]),
    );
  });
});

// ------------------------------------------------------------ worker protocol errors

for (const d of DIALECTS) {
  Deno.test(`broker answers a second READY from a ${NAME[d]} worker with DISCONNECT and forgets it`, async () => {
    await withBroker({}, async (server, track) => {
      const w = await readyWorker(server, track, d, "test.twice", "worker-1");
      await w.send(worker.ready(d, "test.twice"));
      assertFrames(await w.next({ skip: heartbeats(d) }), worker.brokerDisconnect(d));
      assert.equal(server.broker.workerCount, 0);
      assert.equal(serviceInfo(server, "test.twice"), undefined);
    });
  });

  Deno.test(`broker answers HEARTBEAT from an unknown ${NAME[d]} worker with DISCONNECT`, async () => {
    await withBroker({}, async (server, track) => {
      const w = track(new Peer(server.endpoint, { routingId: "stranger" }));
      await w.send(worker.heartbeat(d));
      assertFrames(await w.next(), worker.brokerDisconnect(d));
      assert.equal(server.broker.workerCount, 0);
    });
  });

  Deno.test(`broker answers FINAL from an unknown ${NAME[d]} worker with DISCONNECT and forwards nothing`, async () => {
    await withBroker({}, async (server, track) => {
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      const w = track(new Peer(server.endpoint, { routingId: "stranger" }));
      await c.send(client.request(d, "mmi.heartbeat", ["hello"])); // the client is known to the ROUTER
      assertFrames(await c.next(), client.reply(d, true, "mmi.heartbeat", ["hello"]));
      await w.send(worker.final(d, "client-1", ["forged"]));
      assertFrames(await w.next(), worker.brokerDisconnect(d));
      // Nothing reached the client: its next message is the answer to its next request.
      assertFrames(
        await ask(c, d, "mmi.heartbeat", ["again"]),
        client.reply(d, true, "mmi.heartbeat", ["again"]),
      );
    });
  });

  if (d !== "mdp01") {
    Deno.test(`broker answers PARTIAL from an unknown ${NAME[d]} worker with DISCONNECT`, async () => {
      await withBroker({}, async (server, track) => {
        const w = track(new Peer(server.endpoint, { routingId: "stranger" }));
        await w.send(worker.partial(d, "client-1", ["forged"]));
        assertFrames(await w.next(), worker.brokerDisconnect(d));
      });
    });
  }

  Deno.test(`broker answers READY for an mmi.* service from a ${NAME[d]} worker with DISCONNECT`, async () => {
    await withBroker({}, async (server, track) => {
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      for (const [i, reserved] of ["mmi.service", "mmi.custom", "org.plantd.Broker"].entries()) {
        const w = track(new Peer(server.endpoint, { routingId: `worker-${i}` }));
        await w.send(worker.ready(d, reserved));
        assertFrames(await w.next(), worker.brokerDisconnect(d), reserved);
        assert.equal(server.broker.workerCount, 0);
      }
      assertFrames(
        await ask(c, "plantd", "mmi.service", ["mmi.custom"]),
        client.reply("plantd", true, "mmi.service", ["404"]),
      );
    });
  });

  Deno.test(`broker answers a DISCONNECT from a ${NAME[d]} worker by forgetting it, silently`, async () => {
    await withBroker({}, async (server, track) => {
      const w = await readyWorker(server, track, d, "test.bye", "worker-1");
      await w.send(worker.disconnect(d));
      await waitFor(() => server.broker.workerCount === 0, { what: "worker removed" });
      // The broker sent nothing back: the next message is the DISCONNECT for an unknown HEARTBEAT.
      await w.send(worker.heartbeat(d));
      assertFrames(await w.next({ skip: heartbeats(d) }), worker.brokerDisconnect(d));
    });
  });
}

// ------------------------------------------------------------ heartbeats

for (const d of DIALECTS) {
  Deno.test(`broker answers an idle ${NAME[d]} worker with periodic HEARTBEATs in its dialect`, async () => {
    await withBroker(
      { heartbeatIntervalMs: 100, heartbeatLiveness: 1000, tickMs: 20 },
      async (server, track) => {
        const w = await readyWorker(server, track, d, "test.hb", "worker-1");
        for (let i = 0; i < 3; i++) {
          assertFrames(await w.next(), worker.brokerHeartbeat(d), `heartbeat ${i + 1}`);
        }
      },
    );
  });
}

Deno.test("broker answers only idle workers with HEARTBEAT, not a busy one, until it is idle again", async () => {
  await withBroker(
    { heartbeatIntervalMs: 100, heartbeatLiveness: 1000, tickMs: 20 },
    async (server, track) => {
      const busy = await readyWorker(server, track, "plantd", "test.busy", "worker-busy");
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      await c.send(client.request("plantd", "test.busy", ["work"]));
      assertFrames(
        await busy.next({ skip: heartbeats("plantd") }),
        worker.request("plantd", "client-1", ["work"]),
      );
      // Heartbeats sent before the request were skipped above; none may follow it.
      const idle = await readyWorker(server, track, "plantd", "test.idle", "worker-idle");
      for (let i = 0; i < 4; i++) assertFrames(await idle.next(), worker.brokerHeartbeat("plantd"));
      assert.deepEqual(busy.received.map(describe), [], "the busy worker got no heartbeat");
      await busy.send(worker.final("plantd", "client-1", ["done"]));
      assertFrames(await c.next(), client.reply("plantd", true, "test.busy", ["done"]));
      assertFrames(await busy.next(), worker.brokerHeartbeat("plantd"), "idle again: heartbeat");
    },
  );
});

// ------------------------------------------------------------ MMI

for (const d of DIALECTS) {
  Deno.test(`broker answers mmi.service from a ${NAME[d]} client with 200 for a served service and 404 otherwise`, async () => {
    await withBroker({}, async (server, track) => {
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      assertFrames(
        await ask(c, d, "mmi.service", ["test.mmi"]),
        client.reply(d, true, "mmi.service", ["404"]),
      );
      const w = await readyWorker(server, track, "plantd", "test.mmi", "worker-1");
      assertFrames(
        await ask(c, d, "mmi.service", ["test.mmi"]),
        client.reply(d, true, "mmi.service", ["200"]),
      );
      // Reply body = request body with its last frame replaced by the code.
      assertFrames(
        await ask(c, d, "mmi.service", ["keep", BINARY, "test.mmi"]),
        client.reply(d, true, "mmi.service", ["keep", BINARY, "200"]),
      );
      assertFrames(
        await ask(c, d, "mmi.service", ["test.other"]),
        client.reply(d, true, "mmi.service", ["404"]),
      );
      assertFrames(
        await ask(c, d, "mmi.service", ["org.plantd.Broker"]),
        client.reply(d, true, "mmi.service", ["200"]),
      );
      await w.send(worker.disconnect("plantd"));
      await waitFor(() => server.broker.workerCount === 0, { what: "worker gone" });
      assertFrames(
        await ask(c, d, "mmi.service", ["test.mmi"]),
        client.reply(d, true, "mmi.service", ["404"]),
      );
    });
  });
}

Deno.test("broker answers mmi.service with 200 even when the only worker is busy", async () => {
  await withBroker({}, async (server, track) => {
    const w = await readyWorker(server, track, "plantd", "test.busy", "worker-1");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    await c.send(client.request("plantd", "test.busy", ["hold"]));
    assertFrames(
      await w.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["hold"]),
    );
    assert.equal(serviceInfo(server, "test.busy")?.idle, 0);
    const m = track(new Peer(server.endpoint, { routingId: "client-2" }));
    assertFrames(
      await ask(m, "plantd", "mmi.service", ["test.busy"]),
      client.reply("plantd", true, "mmi.service", ["200"]),
    );
  });
});

Deno.test("broker answers mmi.workers with the number of registered workers", async () => {
  await withBroker({}, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    assertFrames(
      await ask(c, "mdp02", "mmi.workers", ["test.w"]),
      client.reply("mdp02", true, "mmi.workers", ["0"]),
    );
    await readyWorker(server, track, "plantd", "test.w", "worker-1");
    await readyWorker(server, track, "mdp02", "test.w", "worker-2");
    await readyWorker(server, track, "mdp01", "test.other", "worker-3");
    assertFrames(
      await ask(c, "mdp02", "mmi.workers", ["test.w"]),
      client.reply("mdp02", true, "mmi.workers", ["2"]),
    );
    assertFrames(
      await ask(c, "plantd", "mmi.workers", ["test.other"]),
      client.reply("plantd", true, "mmi.workers", ["1"]),
    );
  });
});

Deno.test("broker answers mmi.heartbeat with the request body echoed", async () => {
  await withBroker({}, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    for (const d of DIALECTS) {
      assertFrames(
        await ask(c, d, "mmi.heartbeat", ["ping", BINARY]),
        client.reply(d, true, "mmi.heartbeat", ["ping", BINARY]),
      );
    }
  });
});

Deno.test("broker answers mmi.broker with JSON: version, uptime, services, workers, extensions", async () => {
  await withBroker({ version: "9.8.7-test" }, async (server, track) => {
    await readyWorker(server, track, "plantd", "test.a", "worker-1");
    await readyWorker(server, track, "mdp02", "test.b", "worker-2");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    const reply = await ask(c, "plantd", "mmi.broker", ["info"]);
    assert.equal(reply.length, 4);
    assertFrames(reply.slice(0, 3), client.reply("plantd", true, "mmi.broker", []));
    const info = JSON.parse(str(reply[3]));
    assert.equal(info.version, "9.8.7-test");
    assert.equal(typeof info.uptime_s, "number");
    assert.ok(info.uptime_s >= 0);
    assert.equal(info.services, 2);
    assert.equal(info.workers, 2);
    // What mdp/negotiation.ts reads to send request ids and deadline frames.
    assert.deepEqual(info.extensions, [
      "envelope-stack",
      "deadline-frame",
      "worker-capacity",
      "org.plantd.Broker",
    ]);
  });
});

Deno.test("broker answers an unknown mmi.* service with 501", async () => {
  await withBroker({}, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    for (const d of DIALECTS) {
      assertFrames(await ask(c, d, "mmi.x", ["anything"]), client.reply(d, true, "mmi.x", ["501"]));
      assertFrames(
        await ask(c, d, "mmi.x", ["a", "b"]),
        client.reply(d, true, "mmi.x", ["a", "501"]),
      );
    }
  });
});

// ------------------------------------------------------------ org.plantd.Broker

Deno.test("broker answers org.plantd.Broker services and service with real worker counts and queue depths", async () => {
  await withBroker({}, async (server, track) => {
    const s = "org.plantd.Broker";
    const a1 = await readyWorker(server, track, "plantd", "svc.a", "worker-a1");
    await readyWorker(server, track, "mdp01", "svc.a", "worker-a2");
    await readyWorker(server, track, "mdp02", "svc.b", "worker-b1");
    const busyClient = track(new Peer(server.endpoint, { routingId: "client-busy" }));
    await busyClient.send(client.request("plantd", "svc.a", ["hold"]));
    assertFrames(
      await a1.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-busy", ["hold"]),
    );
    const waiting = track(new Peer(server.endpoint, { routingId: "client-wait" }));
    await waiting.send(client.request("plantd", "svc.c", ["queued"]));
    await waitFor(() => serviceInfo(server, "svc.c")?.queued === 1, { what: "queued request" });

    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    const json = async (d: Dialect, body: FrameLike[]) => {
      const reply = await ask(c, d, s, body);
      const head = client.reply(d, true, s, []);
      assert.equal(reply.length, head.length + 1, `one JSON frame: ${describe(reply)}`);
      assertFrames(reply.slice(0, head.length), head);
      return JSON.parse(str(reply[head.length]));
    };
    const a = { name: "svc.a", workers: 2, idle: 1, busy: 1, queued: 0 };
    const b = { name: "svc.b", workers: 1, idle: 1, busy: 0, queued: 0 };
    const cInfo = { name: "svc.c", workers: 0, idle: 0, busy: 0, queued: 1 };
    for (const d of DIALECTS) {
      assert.deepEqual(await json(d, ["services", "{}"]), {
        success: true,
        data: { count: 3, services: [a, b, cInfo] },
      });
    }
    assert.deepEqual(await json("plantd", ["service", '{"service":"svc.a"}']), {
      success: true,
      data: a,
    });
    assert.deepEqual(await json("mdp02", ["service", '{"service":"svc.c"}']), {
      success: true,
      data: cInfo,
    });
    const missing = await json("plantd", ["service", '{"service":"svc.none"}']);
    assert.equal(missing.success, false);
    assert.match(missing.error, /svc\.none/);
    assert.equal((await json("plantd", ["service", "{}"])).success, false);
    assert.equal((await json("plantd", ["bogus", "{}"])).success, false);
  });
});

// ------------------------------------------------------------ broker-made error replies

for (const d of DIALECTS) {
  Deno.test(`broker answers a ${NAME[d]} request with no body frame with an EMPTY_REQUEST error`, async () => {
    await withBroker({}, async (server, track) => {
      await readyWorker(server, track, d, "test.echo", "worker-1");
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      const reply = await ask(c, d, "test.echo", []);
      assertErrorReply(d, reply, "test.echo", "EMPTY_REQUEST");
      assert.equal(serviceInfo(server, "test.echo")?.idle, 1, "no worker was bothered");
    });
  });
}

Deno.test("broker answers a request for a service with no worker with SERVICE_UNAVAILABLE after requestTimeoutMs", async () => {
  await withBroker({ requestTimeoutMs: 150, tickMs: 20 }, async (server, track) => {
    const peers = DIALECTS.map((d) =>
      track(new Peer(server.endpoint, { routingId: `client-${d}` }))
    );
    for (const [i, d] of DIALECTS.entries()) {
      await peers[i]!.send(client.request(d, "test.nobody", ["hello?"]));
    }
    for (const [i, d] of DIALECTS.entries()) {
      const parsed = assertErrorReply(
        d,
        await peers[i]!.next(),
        "test.nobody",
        "SERVICE_UNAVAILABLE",
      );
      assert.match(parsed.error, /test\.nobody/);
    }
    assert.equal(serviceInfo(server, "test.nobody"), undefined, "nothing left queued");
  });
});

for (const d of DIALECTS) {
  Deno.test(`broker answers a request whose ${NAME[d]} worker dies mid-request with WORKER_LOST`, async () => {
    await withBroker(
      { heartbeatIntervalMs: 100, heartbeatLiveness: 5, tickMs: 20 },
      async (server, track) => {
        const w = await readyWorker(server, track, d, "test.dies", "worker-1");
        // Stay alive (heartbeats) until the request arrives, then go silent.
        const alive = setInterval(() => w.send(worker.heartbeat(d)).catch(() => {}), 30);
        try {
          const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
          await c.send(client.request(d, "test.dies", ["work"]));
          const request = await w.next({ skip: heartbeats(d) });
          clearInterval(alive);
          assertFrames(request, worker.request(d, "client-1", ["work"]));
          assertErrorReply(d, await c.next(), "test.dies", "WORKER_LOST");
          assert.equal(server.broker.workerCount, 0);
          // A late reply from the purged worker is refused and not forwarded.
          await w.send(worker.final(d, "client-1", ["too late"]));
          assertFrames(await w.next({ skip: heartbeats(d) }), worker.brokerDisconnect(d));
          assertFrames(
            await ask(c, d, "mmi.heartbeat", ["next"]),
            client.reply(d, true, "mmi.heartbeat", ["next"]),
          );
        } finally {
          clearInterval(alive);
        }
      },
    );
  });

  Deno.test(`broker answers a request whose ${NAME[d]} worker sends DISCONNECT mid-request with WORKER_LOST`, async () => {
    await withBroker({}, async (server, track) => {
      const w = await readyWorker(server, track, d, "test.quits", "worker-1");
      const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
      await c.send(client.request(d, "test.quits", ["work"]));
      assertFrames(await w.next({ skip: heartbeats(d) }), worker.request(d, "client-1", ["work"]));
      await w.send(worker.disconnect(d));
      assertErrorReply(d, await c.next(), "test.quits", "WORKER_LOST");
      assert.equal(server.broker.workerCount, 0);
    });
  });
}

// ------------------------------------------------------------ robustness

Deno.test("broker answers malformed messages with nothing unless they can be answered, counts them, and keeps serving", async () => {
  let drops = 0;
  await withBroker({}, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    const garbage: FrameLike[][] = [
      ["garbage"],
      ["", "MDPX99", "REQUEST", "svc", "x"],
      ["MDPC02"],
      ["", "MDPC02", "REQUEST", ""],
      ["MDPW02", byte(0x09)],
      ["", "MDPW02", "SING"],
    ];
    for (const message of garbage) await c.send(message);
    assertFrames(
      await ask(c, "plantd", "mmi.service", ["svc"]),
      client.reply("plantd", true, "mmi.service", ["404"]),
      "nothing came back for the garbage",
    );
    assert.equal(drops, garbage.length);
    // A client command that is not REQUEST, with a service: an error in the client's dialect.
    await c.send(["MDPC02", "NONSENSE", "svc", "x"]);
    assertErrorReply("plantd", await c.next(), "svc", "BAD_REQUEST");
    await c.send(["MDPC02", byte(0x07), "svc", "x"]);
    assertErrorReply("mdp02", await c.next(), "svc", "BAD_REQUEST");
    // A READY without a service name: the worker is told, not left waiting.
    await c.send(["", "MDPW01", byte(W01.READY), ""]);
    assertFrames(await c.next(), worker.brokerDisconnect("mdp01"));
    assert.equal(drops, garbage.length + 3);
    assert.equal(server.broker.workerCount, 0);
  }, { drop: () => drops++ });
});

Deno.test("broker answers mmi.broker with a services count that leaves out names nobody serves", async () => {
  await withBroker({ requestTimeoutMs: 50, tickMs: 20 }, async (server, track) => {
    await readyWorker(server, track, "plantd", "test.a", "worker-1");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    for (const name of ["test.gone-1", "test.gone-2", "test.gone-3"]) {
      assertErrorReply("plantd", await ask(c, "plantd", name, ["x"]), name, "SERVICE_UNAVAILABLE");
    }
    const reply = await ask(c, "plantd", "mmi.broker", ["info"]);
    const info = JSON.parse(str(reply[3]));
    assert.equal(info.services, server.broker.services().length);
    assert.equal(info.services, 1);
    assert.equal(info.workers, 1);
  });
});

Deno.test("broker answers a request whose worker died with the next worker's reply when requeueLost is on", async () => {
  await withBroker({ requeueLost: true }, async (server, track) => {
    const a = await readyWorker(server, track, "plantd", "test.requeue", "worker-a");
    const b = await readyWorker(server, track, "mdp02", "test.requeue", "worker-b");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    await c.send(client.request("mdp01", "test.requeue", ["work"]));
    assertFrames(
      await a.next({ skip: heartbeats("plantd") }),
      worker.request("plantd", "client-1", ["work"]),
    );
    await a.send(worker.disconnect("plantd"));
    assertFrames(
      await b.next({ skip: heartbeats("mdp02") }),
      worker.request("mdp02", "client-1", ["work"]),
    );
    await b.send(worker.final("mdp02", "client-1", ["done"]));
    assertFrames(await c.next(), client.reply("mdp01", true, "test.requeue", ["done"]));
  });
});

Deno.test("broker answers a request beyond maxQueuePerService with a QUEUE_FULL error", async () => {
  await withBroker({ maxQueuePerService: 2 }, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    await c.send(client.request("plantd", "test.full", ["1"]));
    await c.send(client.request("plantd", "test.full", ["2"]));
    await c.send(client.request("mdp02", "test.full", ["3"]));
    assertErrorReply("mdp02", await c.next(), "test.full", "QUEUE_FULL");
    assert.equal(serviceInfo(server, "test.full")?.queued, 2);
  });
});

Deno.test("broker answers a busy worker that keeps sending HEARTBEATs past the expiry by keeping it and forwarding its reply", async () => {
  await withBroker(
    { heartbeatIntervalMs: 100, heartbeatLiveness: 5, tickMs: 20 },
    async (server, track) => {
      const w = await readyWorker(server, track, "mdp02", "test.long", "worker-1");
      // An idle worker whose broker heartbeats serve as the clock; it stays alive too.
      const clock = await readyWorker(server, track, "plantd", "test.clock", "worker-clock");
      const alive = setInterval(() => {
        w.send(worker.heartbeat("mdp02")).catch(() => {});
        clock.send(worker.heartbeat("plantd")).catch(() => {});
      }, 30);
      try {
        const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
        await c.send(client.request("plantd", "test.long", ["slow"]));
        assertFrames(
          await w.next({ skip: heartbeats("mdp02") }),
          worker.request("mdp02", "client-1", ["slow"]),
        );
        clock.received.splice(0);
        // 8 broker heartbeat rounds outlast the 500 ms expiry.
        for (let i = 0; i < 8; i++) {
          assertFrames(await clock.next(), worker.brokerHeartbeat("plantd"));
        }
        assert.equal(serviceInfo(server, "test.long")?.busy, 1, "the busy worker is still known");
        await w.send(worker.final("mdp02", "client-1", ["done"]));
        assertFrames(await c.next(), client.reply("plantd", true, "test.long", ["done"]));
      } finally {
        clearInterval(alive);
      }
    },
  );
});

Deno.test("broker answers mmi.broker with the same services count as org.plantd.Broker right after the last worker leaves", async () => {
  // A long tick: the count must not depend on when idle services are pruned.
  await withBroker({ tickMs: 60_000 }, async (server, track) => {
    const w = await readyWorker(server, track, "plantd", "test.leaving", "worker-1");
    await w.send(worker.disconnect("plantd"));
    await waitFor(() => server.broker.workerCount === 0, { what: "worker gone" });
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    const info = JSON.parse(str((await ask(c, "plantd", "mmi.broker", ["info"]))[3]));
    const listed = JSON.parse(
      str((await ask(c, "plantd", "org.plantd.Broker", ["services", "{}"]))[3]),
    );
    assert.equal(listed.data.count, 0);
    assert.equal(info.services, listed.data.count);
    assert.equal(info.workers, 0);
  });
});

// ------------------------------------------------------------ bodies with empty frames

const EMPTY_SHAPES: FrameLike[][] = [[""], ["", "x"], ["x", ""], ["", ""], ["", BINARY, ""]];

for (const wd of DIALECTS) {
  Deno.test(`broker and the ${NAME[wd]} TS echo worker return bodies with empty frames unchanged to raw clients of every dialect`, async () => {
    await withBroker({}, async (server, track) => {
      const echo = track(startEchoWorker(server.endpoint, { dialect: wd }));
      await waitFor(() => serviceInfo(server, ECHO_SERVICE)?.workers === 1, { what: "echo" });
      for (const cd of DIALECTS) {
        const c = track(new Peer(server.endpoint, { routingId: `client-${cd}` }));
        for (const shape of EMPTY_SHAPES) {
          assertFrames(
            await ask(c, cd, ECHO_SERVICE, ["echo", ...shape]),
            client.reply(cd, true, ECHO_SERVICE, shape),
            `${NAME[cd]} client: ${describe(toFrames(shape))}`,
          );
        }
      }
      await echo.close();
    });
  });
}

Deno.test("broker passes a plantd worker's FINAL body that starts with an empty frame through when the worker puts the optional empty frame after the client id", async () => {
  await withBroker({}, async (server, track) => {
    const w = await readyWorker(server, track, "plantd", "test.echo", "worker-1");
    const c = track(new Peer(server.endpoint, { routingId: "client-1" }));
    for (const shape of EMPTY_SHAPES) {
      await c.send(client.request("plantd", "test.echo", shape));
      assertFrames(
        await w.next({ skip: heartbeats("plantd") }),
        worker.request("plantd", "client-1", shape),
      );
      // The contract's optional "" after the client id, dropped by the broker, protects the body.
      await w.send(["", "MDPW02", "FINAL", "client-1", "", ...shape]);
      assertFrames(await c.next(), client.reply("plantd", true, "test.echo", shape));
    }
  });
});

// ------------------------------------------------------------ gone clients

for (const transport of ["auto", "libzmq"] as const) {
  Deno.test(`broker (${transport === "auto" ? "ZMTP" : "libzmq"} ROUTER) drops the queued requests of a client whose connection closed`, async () => {
    let gone = 0;
    await withBroker({ transport }, async (server, track) => {
      const c = new Peer(server.endpoint, { routingId: "client-gone" });
      const stays = track(new Peer(server.endpoint, { routingId: "client-stays" }));
      await c.send(client.request("plantd", "test.orphan", ["a"]));
      await c.send(client.request("mdp02", "test.orphan", ["b"]));
      await stays.send(client.request("plantd", "test.orphan", ["c"]));
      await waitFor(() => serviceInfo(server, "test.orphan")?.queued === 3, { what: "queued" });
      c.socket.close();
      await waitFor(() => serviceInfo(server, "test.orphan")?.queued === 1, {
        what: "the gone client's requests dropped (request expiry is 30 s away)",
      });
      assert.equal(gone, 2);
      // The other client's request is still served.
      const w = await readyWorker(server, track, "mdp02", "test.orphan", "worker-1");
      assertFrames(
        await w.next({ skip: heartbeats("mdp02") }),
        worker.request("mdp02", "client-stays", ["c"]),
      );
    }, { drop: (reason) => reason === "client gone" && gone++ });
  });
}
