/**
 * Regression tests of the Deno receive defect (denoland/deno#36317): peers that
 * connect after a receive is already pending, wait, then send. Plain zeromq.js
 * receives hang here; the transport must deliver.
 */
import assert from "node:assert/strict";
import * as zmq from "zeromq";
import { ZmqSocket } from "./socket.ts";
import { sharedPoller } from "./fd_poller.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function bound<S extends zmq.Socket>(raw: S): Promise<ZmqSocket<S>> {
  await raw.bind("tcp://127.0.0.1:*");
  return new ZmqSocket(raw);
}

Deno.test("ROUTER with a pending receive gets messages from DEALERs that connect later", async () => {
  const router = await bound(new zmq.Router());
  const pending = router.receive();
  const dealers = [new ZmqSocket(new zmq.Dealer()), new ZmqSocket(new zmq.Dealer())];
  try {
    for (const d of dealers) d.raw.connect(router.raw.lastEndpoint!);
    await sleep(300);
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

Deno.test("DEALER with a pending receive gets a reply from a ROUTER it connected to before", async () => {
  const router = await bound(new zmq.Router());
  const dealer = new ZmqSocket(new zmq.Dealer({ routingId: "d1" }));
  try {
    dealer.raw.connect(router.raw.lastEndpoint!);
    const pending = dealer.receive();
    await sleep(300);
    await dealer.send([enc.encode("hello")]);
    const [id, body] = await router.receive();
    assert.equal(dec.decode(id), "d1");
    await sleep(300);
    await router.send([id!, body!]);
    assert.equal(dec.decode((await pending)[0]), "hello");
  } finally {
    dealer.close();
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("SUB with a pending receive gets messages from a PUB that binds later", async () => {
  const sub = new ZmqSocket(new zmq.Subscriber());
  const pub = new ZmqSocket(new zmq.Publisher());
  try {
    sub.raw.subscribe("t");
    const pending = sub.receive();
    await pub.raw.bind("tcp://127.0.0.1:*");
    sub.raw.connect(pub.raw.lastEndpoint!);
    await sleep(300);
    await pub.send([enc.encode("topic"), enc.encode("x")]);
    const [topic] = await pending;
    assert.equal(dec.decode(topic), "topic");
  } finally {
    sub.close();
    pub.close();
    await sharedPoller().idle();
  }
});

Deno.test("XSUB with a pending receive sees a subscription from an XPUB peer that connects later", async () => {
  const xsub = await bound(new zmq.XSubscriber());
  const pub = new ZmqSocket(new zmq.Publisher());
  const xpub = new ZmqSocket(new zmq.XPublisher());
  try {
    // XSUB receives messages published by a PUB that connects later.
    const pending = xsub.receive();
    pub.raw.connect(xsub.raw.lastEndpoint!);
    await xsub.send([Uint8Array.of(1, ...enc.encode("m"))]); // subscribe upstream to "m"
    await sleep(300);
    await pub.send([enc.encode("metric"), enc.encode("1.5")]);
    const [topic, value] = await pending;
    assert.equal(dec.decode(topic), "metric");
    assert.equal(dec.decode(value), "1.5");
    // XPUB with a pending receive sees a SUB's subscription made after it waited.
    await xpub.raw.bind("tcp://127.0.0.1:*");
    const subscription = xpub.receive();
    const sub = new ZmqSocket(new zmq.Subscriber());
    try {
      sub.raw.connect(xpub.raw.lastEndpoint!);
      await sleep(300);
      sub.raw.subscribe("state");
      const [event] = await subscription;
      assert.equal(event![0], 1);
      assert.equal(dec.decode(event!.subarray(1)), "state");
    } finally {
      sub.close();
    }
  } finally {
    xsub.close();
    pub.close();
    xpub.close();
    await sharedPoller().idle();
  }
});

Deno.test("many messages in a burst all arrive (past zeromq.js's 512 synchronous receives)", async () => {
  const router = await bound(new zmq.Router());
  const dealer = new ZmqSocket(new zmq.Dealer());
  try {
    dealer.raw.connect(router.raw.lastEndpoint!);
    const total = 5000;
    for (let i = 0; i < total; i++) dealer.send([enc.encode(String(i))]);
    let seen = 0;
    while (seen < total) {
      const [, body] = await router.receive();
      assert.equal(dec.decode(body), String(seen));
      seen++;
    }
  } finally {
    dealer.close();
    router.close();
    await sharedPoller().idle();
  }
});

Deno.test("closing a socket ends a pending receive and its async iteration", async () => {
  const router = await bound(new zmq.Router());
  const seen: number[] = [];
  const loop = (async () => {
    for await (const m of router) seen.push(m.length);
  })();
  await sleep(50);
  router.close();
  await loop;
  assert.deepEqual(seen, []);
  await sharedPoller().idle();
});
