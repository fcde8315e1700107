/**
 * Peers the broker cannot understand are not met with silence: libzmq DEALERs
 * in a Python process (python3-zmq, tests/_pyzmq.ts) send the malformed
 * Majordomo messages other implementations are known to send, and each gets
 * an answer (an error reply or DISCONNECT), a count on
 * mdp_dropped_messages_total and one warning naming the peer.
 *
 * python3-zmq is required: without it these tests fail, they do not skip.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import type { BrokerObserver } from "../broker/broker.ts";
import type { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { dropLog } from "../broker/broker_drops.ts";
import { brokerMetrics } from "../broker/broker_metrics.ts";
import { logger, resetLogging, setupLogging } from "../telemetry/log.ts";
import { encodeHex, hexBytes, PyZmq } from "./_pyzmq.ts";
import { waitFor, withBroker } from "./_helpers.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const EMPTY = new Uint8Array(0);

interface LogLine {
  level: string;
  message: string;
  fields: Record<string, unknown>;
}

/** A broker observed as roles/broker.ts observes it: metrics and the drop log, lines captured. */
async function observed(): Promise<{
  registry: Registry;
  lines: LogLine[];
  observer: (server: () => BrokerServer | undefined) => BrokerObserver;
}> {
  const lines: LogLine[] = [];
  await setupLogging("debug", "json", (line) => lines.push(JSON.parse(line)));
  const registry = new Registry();
  return {
    registry,
    lines,
    observer: (server) => {
      const metrics = brokerMetrics(registry, () => server()?.broker);
      const log = dropLog(logger("broker", "protocol"));
      return {
        ...metrics,
        drop: (reason, from) => {
          metrics.drop?.(reason, from);
          log(reason, from);
        },
      };
    },
  };
}

async function dropped(registry: Registry, reason: string): Promise<number> {
  const metric = await registry.getSingleMetric("mdp_dropped_messages_total")!.get();
  return metric.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

function warnings(lines: LogLine[], reason: string): LogLine[] {
  return lines.filter((l) => l.level === "warn" && l.fields.reason === reason);
}

/** The next message at a Python peer, as bytes; throws when none comes. */
async function next(peer: PyZmq, what: string): Promise<Uint8Array[]> {
  const frames = await peer.receive(3000);
  if (!frames) throw new Error(`no ${what} within 3000 ms`);
  return frames.map((f) => hexBytes(f.hex ?? ""));
}

/** A broker with the observer of {@link observed}; ends logging afterwards. */
async function withObservedBroker(
  body: (server: BrokerServer, registry: Registry, lines: LogLine[]) => Promise<void>,
): Promise<void> {
  const { registry, lines, observer } = await observed();
  const holder: { server?: BrokerServer } = {};
  try {
    await withBroker({ tickMs: 20 }, async (server) => {
      holder.server = server;
      await body(server, registry, lines);
    }, observer(() => holder.server));
  } finally {
    await resetLogging();
  }
}

Deno.test("a client sending 0x02 (a worker's REQUEST code) as its REQUEST gets a BAD_REQUEST reply; counted and warned once with its address", async () => {
  await withObservedBroker(async (server, registry, lines) => {
    const client = await PyZmq.start("DEALER", { routing_id: "bad-client" });
    try {
      await client.connect(server.endpoint);
      const request = [enc("MDPC02"), Uint8Array.of(0x02), enc("test.echo"), enc("hello")];
      await client.send(request);
      const reply = await next(client, "reply to the 0x02 request");
      // RFC 18 FINAL, in the client's own (one-byte command) dialect.
      assert.deepEqual(reply.slice(0, 3), [enc("MDPC02"), Uint8Array.of(0x03), enc("test.echo")]);
      const error = JSON.parse(new TextDecoder().decode(reply[3]));
      assert.equal(error.success, false);
      assert.equal(error.mdp.code, "BAD_REQUEST");
      assert.match(error.error, /0x02/);
      await client.send(request);
      await next(client, "reply to the second 0x02 request");
      assert.equal(await dropped(registry, "unknown client command"), 2);
      const warned = warnings(lines, "unknown client command");
      assert.equal(warned.length, 1, "one line per peer and reason per window");
      assert.equal(warned[0]!.fields.peer, encodeHex(enc("bad-client")));
      assert.match(String(warned[0]!.fields.address), /^tcp:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(warned[0]!.fields.answered, "error reply");
      assert.match(String(warned[0]!.fields.detail), /0x02/);
    } finally {
      await client.close();
    }
  });
});

for (
  const [dialect, ready, disconnect] of [
    ["RFC 7", [enc("MDPW01"), Uint8Array.of(0x01)], [EMPTY, enc("MDPW01"), Uint8Array.of(0x05)]],
    ["plantd", [enc("MDPW02"), enc("READY")], [enc("MDPW02"), enc("DISCONNECT")]],
  ] as const
) {
  Deno.test(`a ${dialect} worker whose READY starts with two empty frames gets DISCONNECT and is not registered; counted and warned`, async () => {
    await withObservedBroker(async (server, registry, lines) => {
      const worker = await PyZmq.start("DEALER", { routing_id: "bad-worker" });
      const client = new MdpClient(server.endpoint, { timeoutMs: 3000 });
      try {
        await worker.connect(server.endpoint);
        await worker.send([EMPTY, EMPTY, ...ready, enc("py.extra")]);
        assert.deepEqual(await next(worker, "DISCONNECT"), disconnect);
        assert.equal(server.broker.services().find((s) => s.name === "py.extra"), undefined);
        const [known] = await client.request("mmi.service", ["py.extra"]);
        assert.equal(new TextDecoder().decode(known), "404");
        const reason = "worker message with extra empty frames";
        assert.equal(await dropped(registry, reason), 1);
        const warned = warnings(lines, reason);
        assert.equal(warned.length, 1);
        assert.equal(warned[0]!.fields.peer, encodeHex(enc("bad-worker")));
        assert.equal(warned[0]!.fields.answered, "DISCONNECT");
      } finally {
        await client.close();
        await worker.close();
      }
    });
  });
}

Deno.test("a worker that registers in RFC 7 and then speaks RFC 18 gets DISCONNECT and is removed", async () => {
  await withObservedBroker(async (server, registry, lines) => {
    const worker = await PyZmq.start("DEALER", { routing_id: "two-faced" });
    try {
      await worker.connect(server.endpoint);
      await worker.send([EMPTY, enc("MDPW01"), Uint8Array.of(0x01), enc("py.two")]);
      await waitFor(() => server.broker.services().some((s) => s.name === "py.two"), {
        what: "the RFC 7 worker registered",
      });
      // 0x05 is HEARTBEAT in RFC 18 (DISCONNECT in RFC 7 would be 0x05 under MDPW01).
      await worker.send([enc("MDPW02"), Uint8Array.of(0x05)]);
      assert.deepEqual(await next(worker, "DISCONNECT"), [enc("MDPW02"), Uint8Array.of(0x06)]);
      assert.equal(server.broker.services().find((s) => s.name === "py.two"), undefined);
      assert.equal(await dropped(registry, "worker changed dialect"), 1);
      assert.match(String(warnings(lines, "worker changed dialect")[0]?.fields.detail), /mdp01/);
    } finally {
      await worker.close();
    }
  });
});

Deno.test("a worker whose READY announces a bad capacity gets DISCONNECT rather than silence", async () => {
  await withObservedBroker(async (server, registry) => {
    const worker = await PyZmq.start("DEALER", { routing_id: "bad-capacity" });
    try {
      await worker.connect(server.endpoint);
      await worker.send([EMPTY, enc("MDPW02"), enc("READY"), enc("py.cap"), enc("lots")]);
      assert.deepEqual(await next(worker, "DISCONNECT"), [enc("MDPW02"), enc("DISCONNECT")]);
      assert.equal(server.broker.workerCount, 0);
      assert.equal(await dropped(registry, "READY with a bad capacity"), 1);
    } finally {
      await worker.close();
    }
  });
});

Deno.test("an RFC 18 worker whose READY starts with an empty frame gets one in front of its requests and heartbeats", async () => {
  await withBroker(
    { tickMs: 20, heartbeatIntervalMs: 100, heartbeatLiveness: 50 },
    async (server) => {
      const worker = await PyZmq.start("DEALER", { routing_id: "framed-rfc18" });
      const client = new MdpClient(server.endpoint, { dialect: "mdp02", timeoutMs: 3000 });
      try {
        await worker.connect(server.endpoint);
        await worker.send([EMPTY, enc("MDPW02"), Uint8Array.of(0x01), enc("py.framed")]);
        assert.deepEqual(await next(worker, "HEARTBEAT"), [
          EMPTY,
          enc("MDPW02"),
          Uint8Array.of(0x05),
        ]);
        const reply = client.request("py.framed", ["ping"]);
        const request = await next(worker, "REQUEST");
        assert.deepEqual(request.slice(0, 3), [EMPTY, enc("MDPW02"), Uint8Array.of(0x02)]);
        assert.deepEqual(request.slice(4), [EMPTY, enc("ping")]);
        // Its replies keep its framing too; the broker reads them.
        await worker.send([
          EMPTY,
          enc("MDPW02"),
          Uint8Array.of(0x04),
          request[3]!,
          EMPTY,
          enc("pong"),
        ]);
        assert.deepEqual((await reply).map((f) => new TextDecoder().decode(f)), ["pong"]);
      } finally {
        await client.close();
        await worker.close();
      }
    },
  );
});
