/**
 * Regression tests of the Deno receive defect (denoland/deno#36317): a
 * receive is already pending when peers connect, the peers wait, then send.
 * A pending zeromq.js receive misses these messages under Deno; the
 * transport must deliver them, and must not rely on the defect either way.
 */
import assert from "node:assert/strict";
import {
  ZMQ_DEALER,
  ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
  ZMQ_PUB,
  ZMQ_ROUTER,
  ZMQ_SUB,
  ZMQ_XPUB,
  ZMQ_XSUB,
} from "./libzmq.ts";
import { NativeSocket } from "./native_socket.ts";
import { sharedPoller } from "./fd_poller.ts";
import { SocketMonitor } from "./monitor.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Resolves once `socket` has completed `count` ZMTP handshakes: the peers'
 * connection events, which used up the notification edge in the defect, have
 * all happened. Start it before the peers connect.
 */
function handshakes(socket: NativeSocket, count: number): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  let seen = 0;
  const monitor: SocketMonitor = new SocketMonitor(socket, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, () => {
    if (++seen === count) resolve();
  });
  return promise.then(() => monitor.close());
}

/**
 * Sends with `send` every 10 ms until `arrived` settles: a subscription
 * reaches a PUB some time after the handshake, and no event says when.
 */
async function sendUntil(arrived: Promise<unknown>, send: () => Promise<void>): Promise<void> {
  let done = false;
  arrived.then(() => done = true, () => done = true);
  while (!done) {
    await send();
    await new Promise((r) => setTimeout(r, 10));
  }
}

function bound(type: number): { socket: NativeSocket; endpoint: string } {
  const socket = new NativeSocket(type);
  return { socket, endpoint: socket.bind("tcp://127.0.0.1:*", "test") };
}

Deno.test("ROUTER with a pending receive gets messages from DEALERs that connect later", async () => {
  const { socket: router, endpoint } = bound(ZMQ_ROUTER);
  const dealers = [new NativeSocket(ZMQ_DEALER), new NativeSocket(ZMQ_DEALER)];
  try {
    const pending = router.receive();
    const connected = handshakes(router, dealers.length);
    for (const d of dealers) d.connect(endpoint);
    await connected;
    await dealers[0]!.send([enc.encode("one")]);
    await dealers[1]!.send([enc.encode("two")]);
    const first = await pending;
    const second = await router.receive();
    assert.deepEqual([dec.decode(first[1]), dec.decode(second[1])].sort(), ["one", "two"]);
  } finally {
    for (const d of dealers) d.close();
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("DEALER with a pending receive gets a reply sent after a wait", async () => {
  const { socket: router, endpoint } = bound(ZMQ_ROUTER);
  const dealer = new NativeSocket(ZMQ_DEALER, { routingId: "d1" });
  try {
    const connected = handshakes(dealer, 1);
    dealer.connect(endpoint);
    const pending = dealer.receive();
    await connected;
    await dealer.send([enc.encode("hello")]);
    const [id, body] = await router.receive();
    assert.equal(dec.decode(id), "d1");
    await router.send([id!, body!]);
    assert.equal(dec.decode((await pending)[0]), "hello");
  } finally {
    dealer.close();
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("SUB with a pending receive gets messages from a PUB that binds after it waited", async () => {
  const sub = new NativeSocket(ZMQ_SUB);
  let pub: NativeSocket | undefined;
  try {
    sub.subscribe(enc.encode("t"));
    const pending = sub.receive();
    const made = bound(ZMQ_PUB);
    pub = made.socket;
    const connected = handshakes(sub, 1);
    sub.connect(made.endpoint);
    await connected;
    const publisher = pub;
    await sendUntil(pending, () => publisher.send([enc.encode("topic"), enc.encode("x")]));
    assert.equal(dec.decode((await pending)[0]), "topic");
  } finally {
    sub.close();
    pub?.close();
    await sharedPoller().idle();
  }
});

Deno.test("XSUB and XPUB with pending receives see a late PUB's messages and a late SUB's subscription", async () => {
  const { socket: xsub, endpoint: xsubEndpoint } = bound(ZMQ_XSUB);
  const { socket: xpub, endpoint: xpubEndpoint } = bound(ZMQ_XPUB);
  const pub = new NativeSocket(ZMQ_PUB);
  const sub = new NativeSocket(ZMQ_SUB);
  try {
    const message = xsub.receive();
    await xsub.send([Uint8Array.of(1, ...enc.encode("m"))]); // subscribe upstream to "m"
    const upstream = handshakes(xsub, 1);
    pub.connect(xsubEndpoint);
    await upstream;
    await sendUntil(message, () => pub.send([enc.encode("metric"), enc.encode("1.5")]));
    const [topic, value] = await message;
    assert.deepEqual([dec.decode(topic), dec.decode(value)], ["metric", "1.5"]);

    const subscription = xpub.receive();
    const downstream = handshakes(xpub, 1);
    sub.connect(xpubEndpoint);
    await downstream;
    sub.subscribe(enc.encode("state"));
    const [event] = await subscription;
    assert.equal(event![0], 1);
    assert.equal(dec.decode(event!.subarray(1)), "state");
  } finally {
    for (const s of [xsub, xpub, pub, sub]) s.close();
    await sharedPoller().idle();
  }
});

Deno.test("a burst of 5,000 messages all arrive in order", async () => {
  const { socket: router, endpoint } = bound(ZMQ_ROUTER);
  const dealer = new NativeSocket(ZMQ_DEALER, { sendHighWaterMark: 0 });
  try {
    dealer.connect(endpoint);
    for (let i = 0; i < 5000; i++) await dealer.send([enc.encode(String(i))]);
    for (let seen = 0; seen < 5000; seen++) {
      const [, body] = await router.receive();
      assert.equal(dec.decode(body), String(seen));
    }
  } finally {
    dealer.close();
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("closing a socket ends its async iteration", async () => {
  const { socket: router } = bound(ZMQ_ROUTER);
  const seen: number[] = [];
  const loop = (async () => {
    for await (const m of router) seen.push(m.length);
  })();
  await Promise.resolve(); // the loop's first receive is pending
  router.close();
  await loop;
  assert.deepEqual(seen, []);
  await sharedPoller().idle();
});
