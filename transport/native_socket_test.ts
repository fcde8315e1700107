/**
 * The FFI socket layer: messages in and out byte for byte, waits that end
 * when a peer connects later (the Deno defect must not apply), endpoint
 * prefixes, and bind failures that name the endpoint.
 */
import assert from "node:assert/strict";
import { BindError } from "./bind.ts";
import { sharedPoller } from "./fd_poller.ts";
import { ZMQ_PAIR, ZMQ_PUB, ZMQ_PULL, ZMQ_PUSH, ZMQ_SUB, zmqVersion } from "./libzmq.ts";
import {
  msgLayoutVerified,
  NativeSocket,
  NativeSocketClosedError,
  splitEndpoint,
} from "./native_socket.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withSockets(
  body: (make: (type: number) => NativeSocket) => Promise<void>,
): Promise<void> {
  const sockets: NativeSocket[] = [];
  try {
    await body((type) => {
      const socket = new NativeSocket(type);
      sockets.push(socket);
      return socket;
    });
  } finally {
    for (const socket of sockets) socket.close();
    await sharedPoller().idle();
  }
}

Deno.test("libzmq is zeromq.js's own 4.3.x", () => {
  assert.match(zmqVersion(), /^4\.3\.\d+$/);
});

Deno.test("splitEndpoint() reads czmq's @ and > prefixes", () => {
  assert.deepEqual(splitEndpoint("@tcp://*:1", "connect"), { mode: "bind", address: "tcp://*:1" });
  assert.deepEqual(splitEndpoint(">tcp://h:1", "bind"), { mode: "connect", address: "tcp://h:1" });
  assert.deepEqual(splitEndpoint("ipc:///x", "bind"), { mode: "bind", address: "ipc:///x" });
});

Deno.test("NativeSocket carries multipart messages byte for byte, large frames included", async () => {
  await withSockets(async (make) => {
    const pull = make(ZMQ_PULL);
    const push = make(ZMQ_PUSH);
    const endpoint = pull.attach("tcp://127.0.0.1:*", "bind", "test");
    push.attach(endpoint, "connect", "test");
    const big = new Uint8Array(200_000).map((_, i) => i % 251);
    const binary = Uint8Array.of(0, 255, 1, 0);
    await push.send([enc.encode("head"), new Uint8Array(0), binary, big]);
    const frames = await pull.receive();
    assert.equal(frames.length, 4);
    assert.equal(dec.decode(frames[0]), "head");
    assert.equal(frames[1]!.length, 0);
    assert.deepEqual([...frames[2]!], [0, 255, 1, 0]);
    assert.deepEqual(frames[3], big);
    assert.equal(pull.tryReceive(), undefined);
  });
});

Deno.test("a pending NativeSocket receive gets messages from a PUB that binds later", async () => {
  await withSockets(async (make) => {
    const sub = make(ZMQ_SUB);
    sub.subscribe(enc.encode("t"));
    const pending = sub.receive();
    const pub = make(ZMQ_PUB);
    const endpoint = pub.bind("tcp://127.0.0.1:*", "test");
    sub.connect(endpoint);
    // Publish until the subscription is through; the receive stays pending meanwhile.
    let received: Uint8Array[] | undefined;
    pending.then((frames) => received = frames);
    for (let i = 0; i < 500 && !received; i++) {
      pub.trySend([enc.encode("topic"), enc.encode(String(i))]);
      await sleep(10);
    }
    assert.ok(received, "the pending receive never completed");
    assert.equal(dec.decode(received[0]), "topic");
  });
});

Deno.test("NativeSocket.receive() ends with NativeSocketClosedError when the socket closes", async () => {
  const pair = new NativeSocket(ZMQ_PAIR);
  pair.bind("inproc://native-close-test", "test");
  const pending = pair.receive();
  await Promise.resolve(); // the receive is waiting in the poller
  pair.close();
  await assert.rejects(pending, NativeSocketClosedError);
  await sharedPoller().idle();
});

Deno.test("NativeSocket.bind() on a port in use is a BindError naming the endpoint", async () => {
  await withSockets((make) => {
    const first = make(ZMQ_PUB);
    const endpoint = first.bind("tcp://127.0.0.1:*", "test");
    const second = make(ZMQ_PUB);
    assert.throws(
      () => second.attach(`@${endpoint}`, "connect", "bus 'x'"),
      (error: Error) =>
        error instanceof BindError && error.endpoint === endpoint &&
        error.message === `bus 'x': cannot bind ${endpoint}: address already in use`,
    );
    assert.throws(
      () => second.bind("tcp://127.0.0.1:notaport", "bus 'x'"),
      (error: Error) => error instanceof BindError && error.message.includes("invalid endpoint"),
    );
    return Promise.resolve();
  });
});

Deno.test("zmq_msg_t is laid out as the inline small-frame read expects", () => {
  // If this fails the FFI calls are used instead: slower, still correct.
  assert.equal(msgLayoutVerified(), true);
});

Deno.test("frames of every size around the inline limit arrive intact", async () => {
  await withSockets(async (make) => {
    const pull = make(ZMQ_PULL);
    const push = make(ZMQ_PUSH);
    push.connect(pull.bind("inproc://native-sizes-test", "test"));
    for (let size = 0; size <= 70; size++) {
      const frame = new Uint8Array(size).map((_, i) => (i * 7 + size) % 256);
      await push.send([frame, Uint8Array.of(size), frame]);
      const [a, b, c] = await pull.receive();
      assert.deepEqual(a, frame);
      assert.deepEqual([...b!], [size]);
      assert.deepEqual(c, frame);
    }
  });
});
