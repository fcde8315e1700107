/**
 * The TypeScript ZMTP sockets against libzmq's (the Go, Python and C peers
 * of the field) and against each other: handshakes, routing ids, frame sizes
 * on both sides of every header and buffer boundary, limits, refusals,
 * reconnection and linger.
 */
import assert from "node:assert/strict";
import { curveKeyPair } from "../curve.ts";
import { sharedPoller } from "../fd_poller.ts";
import type { Frames } from "../frames.ts";
import { ZMQ_DEALER, ZMQ_ROUTER } from "../libzmq.ts";
import { NativeSocket } from "../native_socket.ts";
import {
  checkGreeting,
  command,
  errorCommand,
  greeting,
  parseCommand,
  parseProperties,
  readFrameHead,
  readyCommand,
  writeHeader,
} from "./codec.ts";
import { ZmtpDealer } from "./dealer.ts";
import { parseTcpEndpoint } from "./endpoint.ts";
import { ZmtpRouter } from "./router.ts";
import { sleep, waitFor } from "../../tests/_helpers.ts";
import { Collector, writeAll } from "../../tests/_zmtp.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const text = (frames: Frames) => frames.map((f) => dec.decode(f));

Deno.test("codec: frame headers round-trip on both sides of the short/long boundary", () => {
  for (const size of [0, 1, 255, 256, 70_000, 5_000_000_000]) {
    const out = new Uint8Array(9);
    const end = writeHeader(out, 0, size, size % 2 === 0);
    assert.equal(end, size <= 255 ? 2 : 9);
    const head = readFrameHead(out, 0, end);
    assert.ok(head);
    assert.equal(head.size, size);
    assert.equal(head.start, end);
    assert.equal(head.more, size % 2 === 0);
    assert.equal(head.command, false);
    assert.equal(readFrameHead(out, 0, end - 1), undefined, `incomplete header of ${size}`);
  }
});

Deno.test("codec: greetings, commands and READY metadata", () => {
  assert.deepEqual(checkGreeting(greeting()), { ok: true, minor: 1 });
  const curve = greeting();
  curve.set(enc.encode("CURVE"), 12);
  assert.equal(checkGreeting(curve).ok, false);
  const old = greeting();
  old[10] = 2;
  assert.match((checkGreeting(old) as { reason: string }).reason, /ZMTP 2/);
  const ready = readyCommand({ "Socket-Type": enc.encode("DEALER"), Identity: enc.encode("w1") });
  const head = readFrameHead(ready, 0, ready.length)!;
  assert.equal(head.command, true);
  const parsed = parseCommand(ready.subarray(head.start))!;
  assert.equal(parsed.name, "READY");
  const properties = parseProperties(parsed.body)!;
  assert.equal(dec.decode(properties.get("socket-type")), "DEALER");
  assert.equal(dec.decode(properties.get("identity")), "w1");
  assert.equal(parseProperties(Uint8Array.of(5, 65, 66)), undefined, "truncated metadata");
  assert.equal(parseCommand(new Uint8Array(0)), undefined);
  assert.equal(parseCommand(command("PING").subarray(2, 4)), undefined, "name longer than body");
  assert.deepEqual(parseTcpEndpoint("tcp://*:0"), { hostname: "0.0.0.0", port: 0 });
  assert.deepEqual(parseTcpEndpoint("tcp://[::1]:9797"), { hostname: "::1", port: 9797 });
  assert.equal(parseTcpEndpoint("ipc:///tmp/x"), undefined);
  assert.equal(parseTcpEndpoint("tcp://host:99999"), undefined);
});

Deno.test("ZMTP ROUTER draining before libzmq DEALERs connect gets their messages and routes replies", async () => {
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const inbox = new Collector(router);
  const named = new NativeSocket(ZMQ_DEALER, { routingId: "d1", linger: 0 });
  const anonymous = new NativeSocket(ZMQ_DEALER, { linger: 0 });
  try {
    named.connect(router.endpoint);
    anonymous.connect(router.endpoint);
    await waitFor(() => router.peers === 2, { what: "both handshakes" });
    await named.send([enc.encode("one"), enc.encode("")]);
    await anonymous.send([enc.encode("two")]);
    const got = [await inbox.next(), await inbox.next()];
    const fromNamed = got.find((m) => dec.decode(m[1]) === "one")!;
    const fromAnonymous = got.find((m) => dec.decode(m[1]) === "two")!;
    assert.deepEqual(text(fromNamed), ["d1", "one", ""]);
    assert.equal(fromAnonymous[0]!.length, 5, "a made-up routing id has 5 bytes");
    assert.equal(fromAnonymous[0]![0], 0, "and starts with a zero byte");
    assert.ok(router.trySendAfter(fromAnonymous[0]!, [enc.encode("to anonymous")]));
    assert.ok(router.trySend([enc.encode("d1"), enc.encode("to d1"), new Uint8Array(300)]));
    assert.deepEqual(text(await anonymous.receive()), ["to anonymous"]);
    const reply = await named.receive();
    assert.equal(dec.decode(reply[0]), "to d1");
    assert.equal(reply[1]!.length, 300);
    assert.ok(router.trySendAfter(enc.encode("nobody"), [enc.encode("lost")]));
    assert.equal(router.unroutable, 1);
  } finally {
    named.close();
    anonymous.close();
    router.close();
    await inbox.done;
    await sharedPoller().idle();
  }
});

Deno.test("ZMTP DEALER queues while libzmq's ROUTER is not there, then delivers in order", async () => {
  const probe = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const endpoint = probe.endpoint;
  probe.close();
  await probe.drain(() => {});
  const dealer = new ZmtpDealer({ routingId: "zd" });
  const replies = new Collector(dealer);
  const router = new NativeSocket(ZMQ_ROUTER, { linger: 0 });
  try {
    dealer.connect(endpoint);
    for (let i = 0; i < 5; i++) assert.ok(dealer.trySend([enc.encode(`early ${i}`)]));
    await sleep(250);
    router.bind(endpoint, "test");
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(text(await router.receive()), ["zd", `early ${i}`]);
    }
    await router.send([enc.encode("zd"), enc.encode("back"), new Uint8Array(100_000).fill(7)]);
    const reply = await replies.next();
    assert.equal(dec.decode(reply[0]), "back");
    assert.equal(reply[1]!.length, 100_000);
    assert.ok(reply[1]!.every((b) => b === 7));
  } finally {
    dealer.close();
    await replies.done;
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("ZMTP DEALER to ZMTP ROUTER: sizes across header and buffer boundaries, order kept", async () => {
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const inbox = new Collector(router);
  const dealer = new ZmtpDealer();
  const replies = new Collector(dealer);
  try {
    dealer.connect(router.endpoint);
    const sizes = [0, 1, 255, 256, 8191, 65_535, 65_536, 200_000, 3_000_000];
    for (const size of sizes) {
      await dealer.send([enc.encode(String(size)), new Uint8Array(size).fill(size % 251)]);
    }
    for (const size of sizes) {
      const [id, label, body] = await inbox.next();
      assert.equal(dec.decode(label), String(size));
      assert.equal(body!.length, size);
      assert.ok(body!.every((b) => b === size % 251), `body of ${size} bytes intact`);
      router.trySendAfter(id!, [label!]);
    }
    for (const size of sizes) assert.equal(dec.decode((await replies.next())[0]), String(size));
    // Pipelined small messages arrive many per read; every one, in order.
    for (let i = 0; i < 10_000; i++) assert.ok(dealer.trySend([enc.encode(String(i))]));
    for (let i = 0; i < 10_000; i++) assert.equal(dec.decode((await inbox.next())[1]), String(i));
  } finally {
    dealer.close();
    router.close();
    await Promise.all([inbox.done, replies.done]);
  }
});

Deno.test("ZMTP ROUTER keeps a second peer with a routing id in use connected but unrouted, and the first routed", async () => {
  const ends: string[] = [];
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    onConnectionEnd: (end) => ends.push(`${end.refused ? "refused" : "ended"}: ${end.reason}`),
  });
  const inbox = new Collector(router);
  const first = new ZmtpDealer({ routingId: "same" });
  const second = new ZmtpDealer({ routingId: "same", reconnectMs: 60_000 });
  try {
    first.connect(router.endpoint);
    await first.send([enc.encode("first")]);
    assert.deepEqual(text(await inbox.next()), ["same", "first"]);
    second.connect(router.endpoint);
    await waitFor(() => second.connected, { what: "the second handshake" });
    // As libzmq's ROUTER without ZMQ_ROUTER_HANDOVER (tests/zmtp_liveness_test.ts).
    await second.send([enc.encode("ignored")]);
    await waitFor(() => router.duplicateDropped === 1, { what: "the second's message dropped" });
    assert.deepEqual(ends, []);
    await first.send([enc.encode("still here")]);
    assert.deepEqual(text(await inbox.next()), ["same", "still here"]);
  } finally {
    first.close();
    second.close();
    router.close();
    await inbox.done;
  }
});

Deno.test("ZMTP ROUTER limits: a frame too big ends the connection, a message too big is discarded", async () => {
  const ends: string[] = [];
  let oversized = 0;
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    maxMessageSize: 1000,
    onOversized: () => oversized++,
    onConnectionEnd: (end) => ends.push(end.reason),
  });
  const inbox = new Collector(router);
  const native = new NativeSocket(ZMQ_DEALER, { linger: 0 });
  const dealer = new ZmtpDealer({ reconnectMs: 60_000 });
  try {
    native.connect(router.endpoint);
    await native.send(Array.from({ length: 20 }, () => new Uint8Array(100)));
    await native.send([enc.encode("after")]);
    assert.deepEqual(text(await inbox.next()).slice(1), ["after"], "connection kept");
    assert.equal(oversized, 1);
    dealer.connect(router.endpoint);
    await dealer.send([new Uint8Array(1001)]);
    await waitFor(() => ends.length > 0, { what: "the disconnect" });
    assert.match(ends[0]!, /frame over the limit of 1000 bytes/);
    assert.equal(inbox.size, 0);
  } finally {
    native.close();
    dealer.close();
    router.close();
    await inbox.done;
    await sharedPoller().idle();
  }
});

Deno.test("ZMTP ROUTER refuses raw bytes (telling them why) and CURVE clients", async () => {
  const ends: string[] = [];
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    onConnectionEnd: (end) => ends.push(end.reason),
  });
  const inbox = new Collector(router);
  const keys = curveKeyPair();
  const client = curveKeyPair();
  const curve = new NativeSocket(ZMQ_DEALER, {
    linger: 0,
    curveClient: { serverKey: keys.publicKey, secretKey: client.secretKey },
  });
  try {
    const conn = await Deno.connect(parseTcpEndpoint(router.endpoint)!);
    await conn.write(enc.encode("GET / HTTP/1.1\r\n\r\n"));
    const reply = new Uint8Array(256);
    const n = await conn.read(reply);
    conn.close();
    assert.ok(n !== null && dec.decode(reply.subarray(0, n)).includes("not a ZMTP peer"));
    curve.connect(router.endpoint);
    await waitFor(() => ends.some((r) => r.startsWith("handshake not completed")), {
      what: () => `the CURVE refusal in ${ends}`,
    });
    assert.ok(ends.includes("not a ZMTP peer"), ends.join("; "));
    assert.equal(router.peers, 0);
  } finally {
    curve.close();
    router.close();
    await inbox.done;
    await sharedPoller().idle();
  }
});

Deno.test("ZMTP DEALER reconnects to a ROUTER restarted on the same port", async () => {
  let router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const endpoint = router.endpoint;
  let inbox = new Collector(router);
  const dealer = new ZmtpDealer({ routingId: "r1" });
  try {
    dealer.connect(endpoint);
    await dealer.send([enc.encode("before")]);
    assert.deepEqual(text(await inbox.next()), ["r1", "before"]);
    router.close();
    await inbox.done;
    await waitFor(() => !dealer.connected, { what: "the dealer to notice" });
    router = ZmtpRouter.bind(endpoint, "test");
    inbox = new Collector(router);
    await dealer.send([enc.encode("after")]);
    assert.deepEqual(text(await inbox.next()), ["r1", "after"]);
  } finally {
    dealer.close();
    router.close();
    await inbox.done;
  }
});

Deno.test("ZMTP ROUTER close with linger still delivers what was queued; bind errors name the cause", async () => {
  // Linger bounds how long close keeps flushing (libzmq's meaning): long
  // enough here that a loaded machine still writes the 4 MB in time (500 ms
  // hung the suite under load: the message expired, the receive never ended).
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", { linger: 60_000 });
  const inbox = new Collector(router);
  const native = new NativeSocket(ZMQ_DEALER, { linger: 0 });
  try {
    assert.throws(
      () => ZmtpRouter.bind(router.endpoint, "broker"),
      /broker: cannot bind .*: address already in use/,
    );
    assert.throws(() => ZmtpRouter.bind("tcp://nonsense", "broker"), /invalid endpoint/);
    native.connect(router.endpoint);
    await native.send([enc.encode("hi")]);
    const [id] = await inbox.next();
    const big = new Uint8Array(4_000_000).fill(3);
    assert.ok(router.trySendAfter(id!, [big]));
    router.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const got = await Promise.race([
      native.receive(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("nothing delivered after close")), 90_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(got[0]!.length, big.length);
  } finally {
    native.close();
    router.close();
    await inbox.done;
    await sharedPoller().idle();
  }
});

/** A raw TCP peer that has done the DEALER side of the handshake. */
async function rawDealer(router: ZmtpRouter): Promise<Deno.TcpConn> {
  const conn = await Deno.connect(parseTcpEndpoint(router.endpoint)!);
  await writeAll(conn, greeting());
  await writeAll(conn, readyCommand({ "Socket-Type": enc.encode("DEALER") }));
  return conn;
}

Deno.test("ZMTP ROUTER: a flood of empty frames counts toward the message limit and is discarded", async () => {
  let oversized = 0;
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    maxMessageSize: 4096,
    onOversized: () => oversized++,
  });
  const inbox = new Collector(router);
  const conn = await rawDealer(router);
  try {
    // 100,000 empty frames with MORE, then a last one: no bytes of payload at all.
    const flood = new Uint8Array(200_002);
    for (let i = 0; i < flood.length - 2; i += 2) flood[i] = 1;
    await writeAll(conn, flood);
    await writeAll(conn, Uint8Array.of(0, 2, 104, 105)); // then a real message, "hi"
    const [, body] = await inbox.next();
    assert.equal(dec.decode(body), "hi", "the connection stays");
    assert.equal(oversized, 1);
  } finally {
    conn.close();
    router.close();
    await inbox.done;
  }
});

Deno.test("ZMTP ROUTER answers a PING flood from a peer that does not read with a bounded number of PONGs", async () => {
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const inbox = new Collector(router);
  const conn = await rawDealer(router);
  try {
    const ping = command("PING", Uint8Array.of(0, 0, 7));
    const pings = new Uint8Array(ping.length * 10_000);
    for (let i = 0; i < 10_000; i++) pings.set(ping, i * ping.length);
    await writeAll(conn, pings);
    // A message after the flood: once the router hands it over, every PING
    // before it was read and its PONG (if any) queued.
    await writeAll(conn, Uint8Array.of(0, 3, ...enc.encode("end")));
    await inbox.next();
    // Then PINGs with another context until one is answered: that PONG goes
    // out after every PONG the flood got (one is queued at a time).
    const pong = command("PONG", Uint8Array.of(7));
    const last = command("PONG", enc.encode("Z"));
    const count = (bytes: Uint8Array, pattern: Uint8Array) => {
      let n = 0;
      for (let i = 0; i + pattern.length <= bytes.length; i++) {
        if (pattern.every((b, j) => bytes[i + j] === b)) n++;
      }
      return n;
    };
    let received = new Uint8Array(0);
    const buffer = new Uint8Array(1 << 20);
    while (count(received, last) === 0) {
      await writeAll(conn, command("PING", Uint8Array.of(0, 0, ...enc.encode("Z"))));
      const n = await conn.read(buffer);
      assert.ok(n, "the connection stayed open");
      const grown = new Uint8Array(received.length + n);
      grown.set(received);
      grown.set(buffer.subarray(0, n), received.length);
      received = grown;
    }
    const pongs = count(received, pong);
    assert.ok(pongs >= 1, `at least one PONG (${received.length} bytes in)`);
    assert.ok(pongs < 1000, `${pongs} PONGs for 10,000 PINGs`);
  } finally {
    conn.close();
    router.close();
    await inbox.done;
  }
});

Deno.test("ZMTP DEALER and ROUTER hand nothing to drain once closed", async () => {
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test");
  const inbox = new Collector(router);
  const dealer = new ZmtpDealer({ routingId: "d" });
  let handled = 0;
  const drained = dealer.drain(() => {
    handled++;
    dealer.close();
  });
  try {
    dealer.connect(router.endpoint);
    await dealer.send([enc.encode("hello")]);
    await inbox.next();
    // Five replies in one write: the handler closes the dealer at the first.
    for (let i = 0; i < 5; i++) router.trySendAfter(enc.encode("d"), [enc.encode(`r${i}`)]);
    await drained;
    assert.equal(handled, 1);
  } finally {
    dealer.close();
    router.close();
    await inbox.done;
  }
  const second = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", { linger: 200 });
  let got = 0;
  const routed = second.drain(() => {
    got++;
    second.close();
  });
  const sender = new ZmtpDealer();
  try {
    sender.connect(second.endpoint);
    for (let i = 0; i < 100; i++) sender.trySend([enc.encode(`m${i}`)]);
    await routed;
    assert.equal(got, 1, "nothing after close(), though connections linger");
  } finally {
    sender.close();
    second.close();
  }
});

Deno.test("ZMTP ROUTER: a send waiting on a peer that does not read ends when the peer leaves", async () => {
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", { sendBufferBytes: 1024 });
  const inbox = new Collector(router);
  const quiet = await rawDealer(router);
  try {
    await writeAll(quiet, Uint8Array.of(0, 1, 113));
    const [id] = await inbox.next();
    const big = new Uint8Array(1 << 20);
    let blocked: Promise<void> | undefined;
    for (let i = 0; i < 256 && !blocked; i++) {
      const sending = router.send([id!, big]);
      const done = await Promise.race([sending.then(() => true), sleep(200).then(() => false)]);
      if (!done) blocked = sending;
    }
    assert.ok(blocked, "the peer's queue filled up");
    quiet.close();
    const ended = await Promise.race([
      blocked.then(() => true, () => true),
      sleep(5000).then(() => false),
    ]);
    assert.ok(ended, "the waiting send ended");
  } finally {
    try {
      quiet.close();
    } catch {
      // Closed by the test already.
    }
    router.close();
    await inbox.done;
  }
});

Deno.test("ZMTP DEALER close() ends at once while a connect is still pending", async () => {
  // A listener whose accept queue is full: the kernel drops further SYNs, so connect hangs.
  const python = new Deno.Command("python3", {
    args: [
      "-c",
      `
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
fill = []
for i in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(s.getsockname())
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.3)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`,
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = python.stdout.getReader();
  const port = Number(dec.decode((await reader.read()).value).trim());
  const dealer = new ZmtpDealer();
  try {
    dealer.connect(`tcp://127.0.0.1:${port}`);
    const drained = dealer.drain(() => {});
    await sleep(100);
    assert.equal(dealer.connected, false);
    dealer.close();
    const ended = await Promise.race([drained.then(() => true), sleep(3000).then(() => false)]);
    assert.ok(ended, "drain ended after close()");
  } finally {
    dealer.close();
    await python.stdin.close();
    reader.releaseLock();
    await python.stdout.cancel();
    await python.status;
  }
});

Deno.test("codec: an ERROR reason is cut to 255 bytes, not characters", () => {
  const frame = errorCommand("é".repeat(300));
  const head = readFrameHead(frame, 0, frame.length)!;
  const parsed = parseCommand(frame.subarray(head.start))!;
  assert.equal(parsed.name, "ERROR");
  assert.equal(parsed.body[0], 255);
  assert.equal(parsed.body.length, 256);
});
