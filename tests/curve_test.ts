/**
 * CURVE on the broker and bus endpoints (issue #7): a client with an allowed
 * key is served; a client with a key not on the allow-list, one with the
 * wrong server key and one without CURVE are refused, and the refusal is
 * counted. "Gets nothing" is never a timed assertion: the test waits for the
 * refusal counter, then shows that traffic sent afterwards reaches only the
 * good peer. Also: frames over an endpoint's size limit are dropped (the
 * sender is disconnected, counted) and the endpoint keeps working.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { BrokerServer } from "../broker/server.ts";
import { Bus } from "../bus/bus.ts";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { receiveN, scope, text, untilConnected } from "../bus/_testing.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpClosedError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { endpointObserver } from "../telemetry/endpoint_metrics.ts";
import { logger } from "../telemetry/log.ts";
import {
  checkKey,
  curveAvailable,
  CurveKeyError,
  curveKeyPair,
  curvePublicKey,
  z85Decode,
  z85Encode,
} from "../transport/curve.ts";
import { ZMQ_DEALER } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { zapHandlerBound } from "../transport/zap.ts";
import { settleTransport, waitFor } from "./_helpers.ts";

const decoder = new TextDecoder();

/** Counters of a registry fed by {@link endpointObserver}. */
async function counters(registry: Registry) {
  const metrics = await registry.getMetricsAsJSON();
  const values = (name: string) =>
    (metrics.find((m) => m.name === name)?.values ?? []) as Array<{
      labels: Record<string, string>;
      value: number;
    }>;
  return {
    refused(endpoint: string, reason?: string): number {
      return values("plantd_curve_refused_total")
        .filter((v) =>
          v.labels.endpoint === endpoint && (reason === undefined || v.labels.reason === reason)
        )
        .reduce((n, v) => n + v.value, 0);
    },
    disconnects(endpoint: string): number {
      return values("plantd_endpoint_disconnects_total")
        .filter((v) => v.labels.endpoint === endpoint)
        .reduce((n, v) => n + v.value, 0);
    },
  };
}

const NOT_ALLOWED = "key not allowed";
const NO_CURVE = "no CURVE (plaintext or other mechanism)";
const BAD_HANDSHAKE = "bad CURVE handshake (wrong server key?)";

Deno.test("CURVE keys: libzmq key pairs, public key from secret, Z85 both ways, bad keys refused", () => {
  assert.ok(curveAvailable());
  const pair = curveKeyPair();
  assert.deepEqual(checkKey(pair.publicKey), pair.publicKey);
  assert.deepEqual(checkKey(pair.secretKey), pair.secretKey);
  assert.deepEqual(curvePublicKey(pair.secretKey), pair.publicKey);
  const bytes = z85Decode(pair.publicKey);
  assert.deepEqual(bytes.length, 32);
  assert.deepEqual(z85Encode(bytes), pair.publicKey);
  // RFC 32's test vector.
  assert.deepEqual(
    z85Encode(Uint8Array.of(0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b)),
    "HelloWorld",
  );
  assert.throws(() => checkKey(pair.publicKey.slice(1)), CurveKeyError);
  assert.throws(() => checkKey(pair.publicKey.slice(1) + " "), CurveKeyError);
  assert.throws(() => checkKey("#".repeat(40)), CurveKeyError); // overflows 32 bits
});

Deno.test("broker with CURVE: allowed client and worker are served; wrong key, wrong server key and no key are refused and counted", async () => {
  const server = curveKeyPair();
  const good = curveKeyPair();
  const worker = curveKeyPair();
  const stranger = curveKeyPair();
  const registry = new Registry();
  const requests: string[] = [];
  const broker = await BrokerServer.start({
    endpoint: "tcp://127.0.0.1:*",
    curve: { secretKey: server.secretKey, allowedKeys: [good.publicKey, worker.publicKey] },
    onListenerEvent: endpointObserver(registry, logger("test")),
  }, { request: (service) => requests.push(service) });
  const closables: Array<{ close(): unknown }> = [];
  const track = <T extends { close(): unknown }>(closable: T): T => {
    closables.push(closable);
    return closable;
  };
  try {
    assert.ok(zapHandlerBound());
    track(
      new MdpWorker(broker.endpoint, "echo", (body) => body, {
        curve: { serverKey: server.publicKey, secretKey: worker.secretKey },
      }),
    );
    const client = track(
      new MdpClient(broker.endpoint, {
        timeoutMs: 10_000,
        curve: { serverKey: server.publicKey, secretKey: good.secretKey },
      }),
    );
    assert.deepEqual((await client.request("echo", ["one"])).map((f) => decoder.decode(f)), [
      "one",
    ]);

    // Three peers that must not get in, each sending a request at once.
    const wrongKey = track(
      new MdpClient(broker.endpoint, {
        timeoutMs: 60_000,
        curve: { serverKey: server.publicKey, secretKey: stranger.secretKey },
      }),
    );
    const wrongServer = track(
      new MdpClient(broker.endpoint, {
        timeoutMs: 60_000,
        curve: { serverKey: stranger.publicKey, secretKey: good.secretKey },
      }),
    );
    const plaintext = track(new MdpClient(broker.endpoint, { timeoutMs: 60_000 }));
    const refusedRequests = [wrongKey, wrongServer, plaintext].map((c) =>
      c.request("echo", ["intruder"])
    );
    const stats = () => counters(registry);
    await waitFor(async () => (await stats()).refused("broker", NOT_ALLOWED) >= 1, {
      what: "refusal of the key not allowed",
    });
    await waitFor(async () => (await stats()).refused("broker", NO_CURVE) >= 1, {
      what: "refusal of the plaintext client",
    });
    await waitFor(async () => (await stats()).refused("broker", BAD_HANDSHAKE) >= 1, {
      what: "refusal of the client with the wrong server key",
    });

    // After the refusals: the allowed client is still served, and the broker
    // has seen exactly the two requests of the allowed client.
    assert.deepEqual((await client.request("echo", ["two"])).map((f) => decoder.decode(f)), [
      "two",
    ]);
    assert.deepEqual(requests, ["echo", "echo"]);
    for (const c of [wrongKey, wrongServer, plaintext]) await c.close();
    for (const pending of refusedRequests) await assert.rejects(pending, MdpClosedError);
  } finally {
    for (const closable of closables.reverse()) await closable.close();
    await broker.close();
    await settleTransport();
  }
  assert.ok(!zapHandlerBound(), "the ZAP handler goes with the last CURVE endpoint");
});

Deno.test("broker: a frame over max_message_bytes disconnects the sender, is counted, and the broker keeps serving", async () => {
  const registry = new Registry();
  const requests: string[] = [];
  const broker = await BrokerServer.start({
    endpoint: "tcp://127.0.0.1:*",
    maxMessageBytes: 2048,
    onListenerEvent: endpointObserver(registry, logger("test")),
  }, { request: (service) => requests.push(service) });
  const worker = new MdpWorker(broker.endpoint, "echo", (body) => body);
  const client = new MdpClient(broker.endpoint, { timeoutMs: 10_000 });
  const big = new NativeSocket(ZMQ_DEALER, { linger: 0 });
  try {
    assert.deepEqual((await client.request("echo", ["small"])).length, 1);
    big.connect(broker.endpoint);
    await big.send([
      new Uint8Array(0),
      new TextEncoder().encode("MDPC02"),
      Uint8Array.of(1),
      new TextEncoder().encode("echo"),
      new Uint8Array(4096),
    ]);
    await waitFor(async () => (await counters(registry)).disconnects("broker") >= 1, {
      what: "the oversized sender's disconnect",
    });
    assert.deepEqual((await client.request("echo", ["after"])).map((f) => decoder.decode(f)), [
      "after",
    ]);
    assert.deepEqual(requests, ["echo", "echo"], "the oversized request never reached the broker");
  } finally {
    big.close();
    await client.close();
    await worker.close();
    await broker.close();
    await settleTransport();
  }
});

Deno.test("bus with CURVE: allowed publisher and subscriber talk; a wrong key, a wrong server key and no key are refused on both sides and get nothing", async () => {
  const server = curveKeyPair();
  const pub = curveKeyPair();
  const sub = curveKeyPair();
  const stranger = curveKeyPair();
  const registry = new Registry();
  await scope(async (track) => {
    const bus = track(Bus.start({
      name: "curve",
      frontend: "tcp://127.0.0.1:*",
      backend: "tcp://127.0.0.1:*",
      curve: { secretKey: server.secretKey, allowedKeys: [pub.publicKey, sub.publicKey] },
      onListenerEvent: endpointObserver(registry, logger("test")),
    }));
    const keys = (secretKey: string, serverKey = server.publicKey) => ({ serverKey, secretKey });
    const publisher = track(new Publisher(bus.frontend, { curve: keys(pub.secretKey) }));
    const subscriber = track(
      new Subscriber(bus.backend, {
        topics: [""],
        envelopes: ["org.plantd.Event"],
        curve: keys(sub.secretKey),
      }),
    );
    await untilConnected([publisher], [subscriber]);

    const outsiders = [
      track(new Subscriber(bus.backend, { topics: [""], curve: keys(stranger.secretKey) })),
      track(
        new Subscriber(bus.backend, {
          topics: [""],
          curve: keys(sub.secretKey, stranger.publicKey),
        }),
      ),
      track(new Subscriber(bus.backend, { topics: [""] })),
    ];
    const intruders = [
      track(new Publisher(bus.frontend, { curve: keys(stranger.secretKey) })),
      track(new Publisher(bus.frontend, { curve: keys(pub.secretKey, stranger.publicKey) })),
      track(new Publisher(bus.frontend)),
    ];
    for (const side of ["backend", "frontend"]) {
      for (const reason of [NOT_ALLOWED, BAD_HANDSHAKE, NO_CURVE]) {
        await waitFor(
          async () => (await counters(registry)).refused(`bus:curve:${side}`, reason) >= 1,
          {
            what: `${side}: ${reason}`,
          },
        );
      }
    }
    // Refused: whatever the intruders publish now goes nowhere, and what the
    // allowed publisher publishes reaches only the allowed subscriber.
    for (const intruder of intruders) intruder.publish("org.plantd.Event", "intruder");
    publisher.publish("org.plantd.Event", "after");
    const [message] = await receiveN(subscriber, 1);
    assert.deepEqual(text(message!.payload), "after");
    for (const outsider of outsiders) {
      assert.deepEqual(outsider.tryReceive(), undefined);
      assert.deepEqual(outsider.received, 0);
    }
    assert.deepEqual(subscriber.tryReceive(), undefined, "nothing from the intruders");
  });
  assert.ok(!zapHandlerBound());
});

Deno.test("bus: a frame over max_message_bytes disconnects the publisher, is counted, and the proxy keeps forwarding", async () => {
  const registry = new Registry();
  await scope(async (track) => {
    const bus = track(Bus.start({
      name: "limits",
      frontend: "tcp://127.0.0.1:*",
      backend: "tcp://127.0.0.1:*",
      maxMessageBytes: 1024,
      onListenerEvent: endpointObserver(registry, logger("test")),
    }));
    const publisher = track(new Publisher(bus.frontend));
    const subscriber = track(
      new Subscriber(bus.backend, { topics: [""], envelopes: ["org.plantd.Event"] }),
    );
    await untilConnected([publisher], [subscriber]);
    publisher.publish("org.plantd.Event", "x".repeat(4096));
    await waitFor(async () => (await counters(registry)).disconnects("bus:limits:frontend") >= 1, {
      what: "the oversized publisher's disconnect",
    });
    // The publisher reconnects by itself; the bus forwards again.
    await untilConnected([publisher], [subscriber]);
    publisher.publish("org.plantd.Event", "after");
    const [message] = await receiveN(subscriber, 1);
    assert.deepEqual(text(message!.payload), "after", "the oversized message was dropped");
    assert.ok(bus.running);
    const statistics = await bus.statistics();
    assert.ok(statistics.frontend.bytesIn < 4096, "the proxy never took the oversized frame");
  });
});
