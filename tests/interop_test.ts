/**
 * Interop with an independent Majordomo peer outside TypeScript: a Python
 * program on Debian's python3-zmq (tests/peers/mdp_peer.py) acting as RFC 7,
 * RFC 18 and plantd clients and workers against a real BrokerServer.
 *
 * python3-zmq is required: without it these tests fail, they do not skip.
 */
import assert from "node:assert/strict";
import type { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { type Dialect, text } from "../mdp/protocol.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { waitFor, withBroker } from "./_helpers.ts";
import {
  DIALECTS,
  hex,
  NAME,
  type PeerEvent,
  PythonWorker,
  requirePythonZmq,
  runPythonClient,
} from "./_mdp_peers.ts";
import { startSystem } from "./_system.ts";

function workersOf(server: BrokerServer, service: string): number {
  return server.broker.services().find((s) => s.name === service)?.workers ?? 0;
}

/** Checks a Python worker stopped cleanly, broke no rule, and the broker heard its DISCONNECT. */
async function stopCleanly(server: BrokerServer, worker: PythonWorker, service: string) {
  const { status, stderr } = await worker.stop();
  assert.equal(status.code, 0, `python worker exit: ${stderr}`);
  assert.deepEqual(worker.errors(), [], "the python worker saw no contract violation");
  assert.ok(worker.events.some((e) => e.event === "stopped"));
  await waitFor(() => workersOf(server, service) === 0, {
    what: `the broker to drop the python worker of ${service} after its DISCONNECT`,
  });
}

const ECHO_BODY = ["echo", "hello", "wörld", "", "hex:00ff10"];
const ECHO_REPLY_HEX = [hex("hello"), hex("wörld"), "", "00ff10"];

// ------------------------------------------------------------ Python clients, TS worker

for (const cd of DIALECTS) {
  Deno.test(`broker answers a Python ${NAME[cd]} client with the TS echo worker's reply in every worker dialect`, async () => {
    await requirePythonZmq();
    await withBroker({}, async (server, track) => {
      for (const wd of DIALECTS) {
        const echo = track(startEchoWorker(server.endpoint, { dialect: wd }));
        await waitFor(() => workersOf(server, ECHO_SERVICE) === 1, { what: `${wd} echo worker` });
        const events = await runPythonClient(server.endpoint, cd, ECHO_SERVICE, ECHO_BODY);
        assert.equal(events.length, 1, `one final reply, no partials: ${JSON.stringify(events)}`);
        const reply = events[0]!;
        assert.equal(reply.event, "reply", JSON.stringify(reply));
        assert.equal(reply.command, "FINAL");
        assert.equal(reply.service, ECHO_SERVICE);
        assert.deepEqual(reply.body_hex, ECHO_REPLY_HEX, `echo via a ${wd} TS worker`);
        await echo.close();
        await waitFor(() => workersOf(server, ECHO_SERVICE) === 0, { what: "echo worker gone" });
      }
    });
  });
}

Deno.test("broker answers Python clients of every dialect asking mmi.service and a missing service", async () => {
  await requirePythonZmq();
  await withBroker({ requestTimeoutMs: 100, tickMs: 20 }, async (server, track) => {
    track(startEchoWorker(server.endpoint));
    await waitFor(() => workersOf(server, ECHO_SERVICE) === 1, { what: "echo worker" });
    for (const cd of DIALECTS) {
      const [found] = await runPythonClient(server.endpoint, cd, "mmi.service", [ECHO_SERVICE]);
      assert.deepEqual(found?.body, ["200"]);
      assert.equal(found?.service, "mmi.service");
      const [missing] = await runPythonClient(server.endpoint, cd, "mmi.service", ["nope"]);
      assert.deepEqual(missing?.body, ["404"]);
      const [unavailable] = await runPythonClient(server.endpoint, cd, "test.nobody", ["x"]);
      assert.equal(unavailable?.event, "reply");
      const error = JSON.parse((unavailable?.body as string[])[0]!);
      assert.equal(error.success, false);
      assert.equal(error.mdp.code, "SERVICE_UNAVAILABLE");
    }
  });
});

// ------------------------------------------------------------ TS clients, Python workers

for (const wd of DIALECTS) {
  Deno.test(`broker answers the TS MdpClient in every dialect with replies from a Python ${NAME[wd]} worker`, async () => {
    await requirePythonZmq();
    await withBroker({}, async (server, track) => {
      const service = `py.upper.${wd}`;
      const partials = wd === "mdp01" ? 0 : 2;
      const worker = track(
        await PythonWorker.start(server.endpoint, wd, service, [
          "--mode",
          "upper",
          "--partials",
          String(partials),
        ]),
      );
      await waitFor(() => workersOf(server, service) === 1, { what: `python ${wd} worker` });
      for (const cd of DIALECTS) {
        const client = track(new MdpClient(server.endpoint, { dialect: cd, timeoutMs: 5000 }));
        const binary = Uint8Array.of(0x00, 0x61, 0xff);
        const reply = await client.request(service, ["hello", "Wörld", "", binary]);
        assert.deepEqual(reply.map(hex), [
          hex("HELLO"),
          hex("WöRLD"),
          "",
          hex(Uint8Array.of(0x00, 0x41, 0xff)),
        ], `${cd} client, ${wd} python worker`);

        const streamed: Array<{ final: boolean; body: string[] }> = [];
        for await (const r of client.stream(service, ["abc"])) {
          streamed.push({ final: r.final, body: r.body.map(text) });
        }
        // An RFC 7 client gets the final reply only.
        const expectedPartials = cd === "mdp01" ? 0 : partials;
        assert.deepEqual(streamed, [
          ...Array.from({ length: expectedPartials }, (_, i) => ({
            final: false,
            body: [`partial-${i + 1}`],
          })),
          { final: true, body: ["ABC"] },
        ], `stream: ${cd} client, ${wd} python worker`);
        await client.close();
      }
      // The peer prints a request before answering it; its stdout is read asynchronously.
      const requests = () => worker.events.filter((e) => e.event === "request");
      await waitFor(() => requests().length === 2 * DIALECTS.length, {
        what: "the python worker to report every request",
      });
      assert.deepEqual(requests()[0]?.body, ["hello", "Wörld", "", "\u0000a\ufffd"]);
      await stopCleanly(server, worker, service);
    });
  });
}

// ------------------------------------------------------------ Python on both sides

Deno.test("broker carries requests between Python clients and Python workers of every dialect pair", async () => {
  await requirePythonZmq();
  await withBroker({}, async (server, track) => {
    const workers = new Map<Dialect, PythonWorker>();
    for (const wd of DIALECTS) {
      workers.set(
        wd,
        track(await PythonWorker.start(server.endpoint, wd, `py.echo.${wd}`, ["--partials", "1"])),
      );
    }
    for (const wd of DIALECTS) {
      await waitFor(() => workersOf(server, `py.echo.${wd}`) === 1, { what: `python ${wd}` });
    }
    for (const cd of DIALECTS) {
      for (const wd of DIALECTS) {
        const service = `py.echo.${wd}`;
        const events = await runPythonClient(server.endpoint, cd, service, ["ping", "hex:00"]);
        const expected: PeerEvent[] = [];
        if (cd !== "mdp01" && wd !== "mdp01") {
          expected.push({ event: "partial", command: "PARTIAL", body_hex: [hex("partial-1")] });
        }
        expected.push({ event: "reply", command: "FINAL", body_hex: [hex("ping"), "00"] });
        assert.deepEqual(
          events.map((e) => ({ event: e.event, command: e.command, body_hex: e.body_hex })),
          expected,
          `${cd} python client, ${wd} python worker`,
        );
        assert.ok(events.every((e) => e.service === service && e.dialect === cd));
      }
    }
    for (const wd of DIALECTS) await stopCleanly(server, workers.get(wd)!, `py.echo.${wd}`);
  });
});

Deno.test("broker answers a Python worker of every dialect with HEARTBEATs it accepts while idle", async () => {
  await requirePythonZmq();
  await withBroker(
    { heartbeatIntervalMs: 100, heartbeatLiveness: 50, tickMs: 20 },
    async (server, track) => {
      const workers = [];
      for (const wd of DIALECTS) {
        workers.push(track(
          await PythonWorker.start(server.endpoint, wd, `py.hb.${wd}`, [
            "--heartbeat-ms",
            "100",
            "--liveness",
            "50",
          ]),
        ));
      }
      for (const w of workers) {
        await waitFor(() => w.events.filter((e) => e.event === "heartbeat").length >= 3, {
          what: "three broker heartbeats at a python worker",
        });
        assert.deepEqual(w.errors(), []);
      }
      assert.equal(server.broker.workerCount, DIALECTS.length);
      for (const [i, wd] of DIALECTS.entries()) {
        await stopCleanly(server, workers[i]!, `py.hb.${wd}`);
      }
    },
  );
});

// ------------------------------------------------------------ lost peers (SIGKILL)

/** Broker timing for the lost-peer tests: heartbeat expiry far beyond what the tests wait. */
const LOST = { heartbeatIntervalMs: 1000, heartbeatLiveness: 20, tickMs: 50 };
const EXPIRY_MS = LOST.heartbeatIntervalMs * LOST.heartbeatLiveness;
/** A Python worker heartbeating as the broker does, never giving up on a silent broker. */
const STEADY = ["--heartbeat-ms", String(LOST.heartbeatIntervalMs), "--liveness", "1000"];

function requested(worker: PythonWorker): number {
  return worker.events.filter((e) => e.event === "request").length;
}

for (const transport of ["auto", "libzmq"] as const) {
  const router = transport === "auto" ? "ZMTP" : "libzmq";
  Deno.test(`broker (${router} ROUTER) answers WORKER_LOST as soon as a Python worker holding the request is SIGKILLed, long before heartbeat expiry, and a replacement serves the next request`, async () => {
    await requirePythonZmq();
    await withBroker({ ...LOST, transport }, async (server, track) => {
      assert.equal(server.transport, transport === "auto" ? "zmtp" : "libzmq");
      const held = track(
        await PythonWorker.start(server.endpoint, "plantd", "py.lost", [
          "--mode",
          "hold",
          ...STEADY,
        ]),
      );
      await waitFor(() => workersOf(server, "py.lost") === 1, { what: "the python worker" });
      const client = track(new MdpClient(server.endpoint, { timeoutMs: EXPIRY_MS + 5000 }));
      const pending = client.request("py.lost", ["work"]).then(() => undefined, (e) => e);
      await waitFor(() => requested(held) === 1, { what: "the python worker to hold the request" });
      const killedAt = Date.now();
      await held.kill();
      const error = await pending;
      const took = Date.now() - killedAt;
      assert.ok(error instanceof MdpBrokerError && error.code === "WORKER_LOST", String(error));
      assert.match(error.message, /connection closed/);
      // The worker was heard from within an interval of the kill: expiry cannot fire this soon.
      assert.ok(took < EXPIRY_MS - 2 * LOST.heartbeatIntervalMs, `WORKER_LOST after ${took} ms`);
      assert.equal(workersOf(server, "py.lost"), 0, "the dead worker is gone");

      const replacement = track(new MdpWorker(server.endpoint, "py.lost", (body) => body));
      await waitFor(() => workersOf(server, "py.lost") === 1, { what: "the replacement" });
      assert.deepEqual((await client.request("py.lost", ["again"])).map(text), ["again"]);
      await replacement.close();
    });
  });

  Deno.test(`broker (${router} ROUTER) forgets a SIGKILLed idle Python worker at once, so the next request goes to its replacement`, async () => {
    await requirePythonZmq();
    await withBroker({ ...LOST, transport }, async (server, track) => {
      const first = track(await PythonWorker.start(server.endpoint, "mdp02", "py.idle", STEADY));
      await waitFor(() => workersOf(server, "py.idle") === 1, { what: "the python worker" });
      await first.kill();
      // Well within the window where a silent worker still counts as fresh (two intervals).
      await waitFor(() => workersOf(server, "py.idle") === 0, {
        what: "the broker to forget the killed worker",
        timeoutMs: LOST.heartbeatIntervalMs,
      });
      track(new MdpWorker(server.endpoint, "py.idle", (body) => body, { dialect: "mdp01" }));
      await waitFor(() => workersOf(server, "py.idle") === 1, { what: "the replacement" });
      const client = track(new MdpClient(server.endpoint, { timeoutMs: 5000 }));
      assert.deepEqual((await client.request("py.idle", ["next"])).map(text), ["next"]);
      assert.equal(requested(first), 0);
    });
  });
}

Deno.test("broker re-queues the request a SIGKILLed Python worker held when requeue_lost_services covers the service, and the replacement serves it", async () => {
  await requirePythonZmq();
  await withBroker(
    { ...LOST, requeueLostServices: ["py.requeue.*"] },
    async (server, track) => {
      const held = track(
        await PythonWorker.start(server.endpoint, "plantd", "py.requeue.a", [
          "--mode",
          "hold",
          ...STEADY,
        ]),
      );
      await waitFor(() => workersOf(server, "py.requeue.a") === 1, { what: "the python worker" });
      const client = track(new MdpClient(server.endpoint, { timeoutMs: EXPIRY_MS + 5000 }));
      // Settled either way, so a failure below leaves no promise rejected unobserved.
      const pending = client.request("py.requeue.a", ["work"]).catch((error: Error) => error);
      await waitFor(() => requested(held) === 1, { what: "the python worker to hold the request" });
      await held.kill();
      await waitFor(
        () => server.broker.services().find((s) => s.name === "py.requeue.a")?.queued === 1,
        {
          what: "the held request back in the queue",
          timeoutMs: LOST.heartbeatIntervalMs,
        },
      );
      const replacement = track(new MdpWorker(server.endpoint, "py.requeue.a", (body) => body));
      const reply = await pending;
      assert.ok(Array.isArray(reply), String(reply));
      assert.deepEqual(reply.map(text), ["work"]);
      await replacement.close();
    },
  );
});

Deno.test("over HTTP the gateway answers 502 WORKER_LOST, not 504, when the Python worker holding the request is SIGKILLed", async () => {
  await requirePythonZmq();
  const system = await startSystem();
  // startSystem's broker: 200 ms heartbeats, expiry 2 s; the call waits 1.5 s, less than that.
  const held = await PythonWorker.start(system.brokerEndpoint, "plantd", "py.http", [
    "--mode",
    "hold",
    "--heartbeat-ms",
    "200",
    "--liveness",
    "1000",
  ]);
  try {
    await waitFor(async () => {
      const listed = await (await fetch(`${system.url}/api/services`)).json();
      return listed.services.some((s: { name: string }) => s.name === "py.http");
    }, { what: "py.http listed by the gateway" });
    const response = fetch(`${system.url}/api/services/py.http/op?timeout_ms=1500`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    await waitFor(() => requested(held) === 1, { what: "the python worker to hold the request" });
    await held.kill();
    const reply = await response;
    const body = await reply.json();
    assert.equal(reply.status, 502, JSON.stringify(body));
    assert.equal(body.error.code, "WORKER_LOST");
    assert.equal(body.error.upstream_code, "WORKER_LOST");
    assert.equal(body.error.service, "py.http");
  } finally {
    await held.stop();
    await system.stop();
  }
});

// ------------------------------------------------------------ bodies with empty frames

const EMPTY_SHAPES: string[][] = [[""], ["", "x"], ["x", ""], ["", ""]];

Deno.test("Python clients of every dialect get bodies with empty frames back unchanged from the TS echo worker of every dialect", async () => {
  await requirePythonZmq();
  await withBroker({}, async (server, track) => {
    for (const wd of DIALECTS) {
      const echo = track(startEchoWorker(server.endpoint, { dialect: wd }));
      await waitFor(() => workersOf(server, ECHO_SERVICE) === 1, { what: `${wd} echo worker` });
      for (const cd of DIALECTS) {
        for (const shape of EMPTY_SHAPES) {
          const [reply] = await runPythonClient(server.endpoint, cd, ECHO_SERVICE, [
            "echo",
            ...shape,
          ]);
          assert.equal(reply?.event, "reply", JSON.stringify(reply));
          assert.deepEqual(reply?.body_hex, shape.map(hex), `${cd} python client, ${wd} worker`);
        }
      }
      await echo.close();
      await waitFor(() => workersOf(server, ECHO_SERVICE) === 0, { what: "echo worker gone" });
    }
  });
});

Deno.test("the TS client of every dialect gets bodies with empty frames back unchanged from Python workers of every dialect", async () => {
  await requirePythonZmq();
  await withBroker({}, async (server, track) => {
    for (const wd of DIALECTS) {
      const service = `py.empty.${wd}`;
      const worker = track(await PythonWorker.start(server.endpoint, wd, service));
      await waitFor(() => workersOf(server, service) === 1, { what: `python ${wd} worker` });
      for (const cd of DIALECTS) {
        const client = track(new MdpClient(server.endpoint, { dialect: cd, timeoutMs: 5000 }));
        for (const shape of EMPTY_SHAPES) {
          const reply = await client.request(service, shape);
          assert.deepEqual(reply.map(hex), shape.map(hex), `${cd} client, ${wd} python worker`);
        }
        await client.close();
      }
      await stopCleanly(server, worker, service);
    }
  });
});
