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

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects a socket's messages; `next()` waits (bounded) for the next one. */
class Collector {
  #queue: Frames[] = [];
  #waiter: (() => void) | undefined;
  readonly done: Promise<void>;
  constructor(socket: { drain(onMessage: (frames: Frames) => void): Promise<void> }) {
    this.done = socket.drain((frames) => {
      this.#queue.push(frames.map((f) => f.slice()));
      this.#waiter?.();
    });
  }
  async next(ms = 5000): Promise<Frames> {
    const deadline = Date.now() + ms;
    while (this.#queue.length === 0) {
      if (Date.now() > deadline) throw new Error(`no message within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
    return this.#queue.shift()!;
  }
  get size(): number {
    return this.#queue.length;
  }
}

async function until(
  condition: () => boolean,
  what: string | (() => string),
  ms = 5000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    }
    await sleep(10);
  }
}

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
    await sleep(300);
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

Deno.test("ZMTP ROUTER refuses a second peer with a routing id in use and keeps the first", async () => {
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
    await until(() => ends.length > 0, "the refusal");
    assert.deepEqual(ends, ["refused: routing id already in use"]);
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
    await until(() => ends.length > 0, "the disconnect");
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
    await until(
      () => ends.some((r) => r.startsWith("handshake not completed")),
      () => `the CURVE refusal in ${ends}`,
    );
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
    await until(() => !dealer.connected, "the dealer to notice");
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
  const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", { linger: 500 });
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
    const got = await native.receive();
    assert.equal(got[0]!.length, big.length);
  } finally {
    native.close();
    router.close();
    await inbox.done;
    await sharedPoller().idle();
  }
});
