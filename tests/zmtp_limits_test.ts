/**
 * Limits of the ZMTP sockets (issue #17, finding 5): the largest message a
 * DEALER takes, checked on a frame's header before anything is allocated.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { brokerConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { connectDealer, type MessageSocket } from "../transport/message_socket.ts";
import { greeting, readyCommand } from "../transport/zmtp/codec.ts";
import { ZmtpDealer } from "../transport/zmtp/dealer.ts";
import { ZmtpRouter } from "../transport/zmtp/router.ts";
import { waitFor } from "./_helpers.ts";

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** A long message-frame header declaring `size` bytes. */
function longHeader(size: number | bigint): Uint8Array {
  const header = new Uint8Array(9);
  header[0] = 2;
  new DataView(header.buffer).setBigUint64(1, BigInt(size));
  return header;
}

/**
 * A raw TCP "ROUTER": handshakes with the one DEALER that connects, sends
 * `bytes`, and returns everything the DEALER sent after its greeting until it
 * closed the connection (or `timeoutMs` passed: then `closed` is false).
 */
async function rawRouter(
  connect: (endpoint: string) => MessageSocket,
  bytes: Uint8Array,
  timeoutMs = 5000,
): Promise<{ received: string; closed: boolean; socket: MessageSocket }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const socket = connect(`tcp://127.0.0.1:${listener.addr.port}`);
  const conn = await listener.accept();
  listener.close();
  try {
    await conn.write(greeting());
    await conn.write(readyCommand({ "Socket-Type": encoder.encode("ROUTER") }));
    await conn.write(bytes);
    let received = "";
    const buffer = new Uint8Array(4096);
    const deadline = setTimeout(() => conn.close(), timeoutMs);
    let closed = false;
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) {
          closed = true;
          break;
        }
        received += latin1.decode(buffer.subarray(0, n));
      }
    } catch {
      // closed by the deadline
    } finally {
      clearTimeout(deadline);
    }
    return { received, closed, socket };
  } finally {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }
}

Deno.test("ZMTP DEALER: a frame header declaring 2^40 bytes closes the connection with ERROR, nothing allocated", async () => {
  const { received, closed, socket } = await rawRouter(
    (endpoint) => connectDealer(endpoint),
    longHeader(2n ** 40n),
  );
  socket.close();
  assert.ok(closed, "the DEALER closed the connection");
  // Refused on the header (ERROR names the limit), not by a failed 1 TiB allocation.
  assert.match(received, /ERROR.*frame over the limit of 67108864 bytes/s);
});

Deno.test("ZMTP DEALER: the default limit holds on connectDealer sockets: 64 MiB + 1 declared is refused", async () => {
  const { received, closed, socket } = await rawRouter(
    (endpoint) => connectDealer(endpoint),
    longHeader(64 * 1024 * 1024 + 1),
  );
  socket.close();
  assert.ok(closed, "the DEALER closed the connection");
  assert.match(received, /frame over the limit of 67108864 bytes/);
});

Deno.test("ZMTP DEALER: a frame one byte over maxMessageSize is refused, one at it is read", async () => {
  // A frame at the limit passes the header check (the message, with its per-frame
  // overhead, is then over it and discarded as it comes in, without closing).
  const atLimit = new Uint8Array(9 + 1000);
  atLimit.set(longHeader(1000));
  const kept = await rawRouter(
    (endpoint) => {
      const socket = new ZmtpDealer({ maxMessageSize: 1000 });
      socket.connect(endpoint);
      return socket;
    },
    atLimit,
    300,
  );
  kept.socket.close();
  assert.ok(!kept.closed, "a frame at the limit keeps the connection");
  assert.doesNotMatch(kept.received, /ERROR/);

  const over = await rawRouter((endpoint) => {
    const socket = new ZmtpDealer({ maxMessageSize: 1000 });
    socket.connect(endpoint);
    return socket;
  }, longHeader(1001));
  over.socket.close();
  assert.ok(over.closed);
  assert.match(over.received, /frame over the limit of 1000 bytes/);
});

/** A raw TCP DEALER that handshakes as `identity` and then never reads. */
async function slowReader(endpoint: string, identity: string): Promise<Deno.TcpConn> {
  const port = Number(endpoint.split(":").pop());
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(greeting());
  await conn.write(
    readyCommand({ "Socket-Type": encoder.encode("DEALER"), Identity: encoder.encode(identity) }),
  );
  return conn;
}

Deno.test("ZMTP ROUTER: connections beyond maxConnections are closed at accept and counted", async () => {
  const limits: string[] = [];
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    maxConnections: 3,
    onLimit: (limit) => limits.push(limit),
  });
  const port = Number(router.endpoint.split(":").pop());
  const conns: Deno.TcpConn[] = [];
  try {
    // Handshaking or not, a connection counts.
    for (let i = 0; i < 3; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await conns[0]!.write(greeting());
    await waitFor(async () => {
      const buffer = new Uint8Array(64);
      return (await conns[0]!.read(buffer)) !== null;
    }, { what: "the router's greeting on a connection within the limit" });
    const extra = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(extra);
    assert.equal(await extra.read(new Uint8Array(64)), null, "the fourth is closed at once");
    assert.equal(router.refusedConnections, 1);
    assert.deepEqual(limits, ["connections"]);
  } finally {
    for (const conn of conns) conn.close();
    router.close();
    await router.drain(() => {});
  }
});

Deno.test("ZMTP ROUTER: output queued across slow readers stays within maxBufferedOutputBytes", async () => {
  const budget = 4 * 1024 * 1024;
  const limits: string[] = [];
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    maxBufferedOutputBytes: budget,
    onLimit: (limit) => limits.push(limit),
  });
  const readers = [
    await slowReader(router.endpoint, "slow-1"),
    await slowReader(router.endpoint, "slow-2"),
  ];
  try {
    await waitFor(() => router.peers === 2, { what: "both slow readers" });
    const rssBefore = Deno.memoryUsage().rss;
    const payload = new Uint8Array(1024 * 1024);
    let sent = 0;
    let peak = 0;
    // 64 MiB offered to each: each peer's own limit (64 MiB) would take it all.
    for (let i = 0; i < 64; i++) {
      for (const id of ["slow-1", "slow-2"]) {
        if (router.trySend([encoder.encode(id), payload])) sent++;
        peak = Math.max(peak, router.bufferedOutputBytes);
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.ok(peak <= budget, `peak ${peak} B queued over the ${budget} B budget`);
    assert.ok(sent >= 2, "messages within the budget were taken");
    assert.ok(router.overBudget > 0 && limits.includes("output"), "drops were counted");
    assert.equal(router.overBudget, 128 - sent);
    const grown = Deno.memoryUsage().rss - rssBefore;
    assert.ok(grown < 40e6, `RSS grew by ${(grown / 1e6).toFixed(1)} MB`);
  } finally {
    for (const conn of readers) conn.close();
    router.close();
    await router.drain(() => {});
  }
  // Bytes of closed connections leave the budget with them.
  await waitFor(() => router.bufferedOutputBytes === 0, { what: "budget released" });
});

Deno.test("broker role: max_connections refusals are counted on /metrics", async () => {
  const registry = new Registry();
  const broker = await startBroker(
    loadConfig(brokerConfig, {
      args: [
        "--endpoint",
        "tcp://127.0.0.1:0",
        "--health-port",
        "0",
        "--buses",
        "[]",
        "--max-connections",
        "2",
        "--log-level",
        "error",
      ],
      env: {},
    }),
    registry,
  );
  const port = Number(broker.server.endpoint.split(":").pop());
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    // The router greets the two it took: both are in before the third is refused.
    for (const conn of conns) assert.notEqual(await conn.read(new Uint8Array(64)), null);
    const extra = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(extra);
    assert.equal(await extra.read(new Uint8Array(64)), null);
    assert.match(
      await registry.metrics(),
      /plantd_endpoint_limit_refusals_total\{endpoint="broker",limit="connections"\} 1\n/,
    );
  } finally {
    for (const conn of conns) conn.close();
    await broker.close();
  }
});
