/**
 * Buses end to end over real sockets on random loopback ports: both message
 * forms, Go plantd single-frame messages, prefix filters, late joiners, many
 * topics, subscribers leaving and returning, capture counts, a slow
 * subscriber, bind failures. No sleeps stand in for synchronisation:
 * subscriptions are confirmed with probe messages, and sends are paced by
 * what subscribers have read, so counts are exact.
 */
import assert from "node:assert/strict";
import { BindError } from "../transport/bind.ts";
import { ZMQ_PUB } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { Bus, type BusOptions, BusSet } from "./bus.ts";
import { Publisher } from "./publisher.ts";
import { Subscriber } from "./subscriber.ts";
import { drain, eventually, receiveN, scope, text, untilConnected } from "./_testing.ts";

const LOOPBACK = "tcp://127.0.0.1:*";
const METRIC_JSON = '{"time":"2024-01-01T00:00:00Z","device":"d","channel":"c","value":1.5}';

function startBus(options: Partial<BusOptions> = {}): Bus {
  return Bus.start({ name: "test", frontend: LOOPBACK, backend: LOOPBACK, ...options });
}

Deno.test("a subscriber reads both message forms through a bus", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const subscriber = track(new Subscriber(bus.backend, { bus: "test", topics: ["org.plantd."] }));
    const single = track(new Publisher(bus.frontend, { form: "single" }));
    const frames = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([single, frames], [subscriber]);

    single.publish("org.plantd.Metric", METRIC_JSON);
    await receiveN(subscriber, 1).then(([m]) => {
      // Without a known envelope the single frame splits at the subscription.
      assert.equal(m!.form, "single");
      assert.equal(m!.topic, "org.plantd.");
      assert.equal(text(m!.payload), `Metric${METRIC_JSON}`);
    });
    frames.publish("org.plantd.Metric", Uint8Array.of(0, 1, 2, 255));
    await receiveN(subscriber, 1).then(([m]) => {
      assert.equal(m!.form, "frames");
      assert.equal(m!.bus, "test");
      assert.equal(m!.topic, "org.plantd.Metric");
      assert.deepEqual([...m!.payload], [0, 1, 2, 255]);
    });
  });
});

Deno.test("a Go plantd single-frame metric splits at the longest known envelope", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const subscriber = track(
      new Subscriber(bus.backend, {
        bus: "metric",
        topics: ["org.plantd."],
        envelopes: ["org.plantd.Metric", "org.plantd.Event"],
      }),
    );
    // What a Go plantd bus.Source puts on the wire: one frame, envelope then JSON.
    const goSource = track(new NativeSocket(ZMQ_PUB, { linger: 0 }));
    goSource.connect(bus.frontend);
    const probe = track(new Publisher(bus.frontend));
    await untilConnected([probe], [subscriber]);
    // The Go source connected before the probe: its subscriptions arrive as reliably,
    // but the two are separate connections, so keep sending until one arrives.
    const frame = new TextEncoder().encode(`org.plantd.Metric${METRIC_JSON}`);
    let message;
    for (let i = 0; i < 500 && !message; i++) {
      goSource.trySend([frame]);
      message = await receiveN(subscriber, 1, 20).then(([m]) => m).catch(() => undefined);
    }
    assert.ok(message, "no message from the Go-style publisher");
    assert.equal(message.topic, "org.plantd.Metric");
    assert.deepEqual(JSON.parse(text(message.payload)), {
      time: "2024-01-01T00:00:00Z",
      device: "d",
      channel: "c",
      value: 1.5,
    });
  });
});

Deno.test("prefix filters select topics and change at run time", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const subscriber = track(new Subscriber(bus.backend, { topics: ["a.", "b."] }));
    const publisher = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([publisher], [subscriber]);
    for (const topic of ["a.1", "b.1", "c.1", "ab", "a.2"]) publisher.publish(topic, topic);
    const first = await receiveN(subscriber, 3);
    assert.deepEqual(first.map((m) => m.topic), ["a.1", "b.1", "a.2"]);

    subscriber.unsubscribe("a.");
    subscriber.subscribe("c.");
    await untilConnected([publisher], [subscriber]);
    for (const topic of ["a.3", "b.3", "c.3"]) publisher.publish(topic, topic);
    const second = await receiveN(subscriber, 2);
    assert.deepEqual(second.map((m) => m.topic), ["b.3", "c.3"]);
    assert.deepEqual(await drain(subscriber), []);
    assert.deepEqual(subscriber.subscriptions.sort(), ["b.", "c."]);
  });
});

Deno.test("publishers and subscribers that join late get everything after they are through", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const early = track(new Subscriber(bus.backend, { topics: ["t"] }));
    const first = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([first], [early]);
    first.publish("t", "1");
    assert.equal(text((await receiveN(early, 1))[0]!.payload), "1");

    // A publisher connecting now learns the existing subscriptions from the bus.
    const late = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([late], [early]);
    late.publish("t", "2");
    assert.equal(text((await receiveN(early, 1))[0]!.payload), "2");

    // A subscriber connecting now gets what is published from then on.
    const lateSub = track(new Subscriber(bus.backend, { topics: ["t"] }));
    await untilConnected([first, late], [early, lateSub]);
    first.publish("t", "3");
    late.publish("t", "4");
    for (const subscriber of [early, lateSub]) {
      const payloads = (await receiveN(subscriber, 2)).map((m) => text(m.payload)).sort();
      assert.deepEqual(payloads, ["3", "4"]);
    }
  });
});

Deno.test("many topics: each subscriber gets exactly its topics, in order per publisher", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const topics = Array.from({ length: 200 }, (_, i) => `org.plantd.device${i}.`);
    const even = track(
      new Subscriber(bus.backend, { topics: topics.filter((_, i) => i % 2 === 0) }),
    );
    const all = track(new Subscriber(bus.backend, { topics: ["org.plantd."] }));
    const publisher = track(new Publisher(bus.frontend));
    await untilConnected([publisher], [even, all]);
    const rounds = 5;
    for (let round = 0; round < rounds; round++) {
      // 200 messages a round stays under the high-water marks (1000); wait for the round.
      topics.forEach((topic, i) => publisher.publish(topic, `${round}:${i}`));
      await receiveN(all, topics.length).then((got) =>
        assert.deepEqual(
          got.map((m) => text(m.payload)),
          topics.map((_, i) => `device${i}.${round}:${i}`),
        )
      );
      const got = await receiveN(even, topics.length / 2);
      assert.deepEqual(
        got.map((m) => `${m.topic}|${text(m.payload)}`),
        topics.filter((_, i) => i % 2 === 0).map((t, j) => `${t}|${round}:${j * 2}`),
      );
    }
    assert.deepEqual(await drain(even), []);
  });
});

Deno.test("a subscriber that goes away and comes back gets messages again", async () => {
  await scope(async (track) => {
    const bus = track(startBus());
    const publisher = track(new Publisher(bus.frontend, { form: "frames" }));
    const stays = track(new Subscriber(bus.backend, { topics: ["x"] }));
    let leaves = new Subscriber(bus.backend, { topics: ["x"] });
    try {
      await untilConnected([publisher], [stays, leaves]);
      publisher.publish("x", "before");
      assert.equal(text((await receiveN(leaves, 1))[0]!.payload), "before");
      await leaves.close();

      for (let i = 0; i < 10; i++) publisher.publish("x", `while-away-${i}`);
      assert.equal((await receiveN(stays, 11)).length, 11);

      leaves = new Subscriber(bus.backend, { topics: ["x"] });
      await untilConnected([publisher], [stays, leaves]);
      publisher.publish("x", "after");
      assert.equal(text((await receiveN(leaves, 1))[0]!.payload), "after");
      assert.equal(text((await receiveN(stays, 1))[0]!.payload), "after");
      assert.deepEqual(await drain(leaves), []);
    } finally {
      await leaves.close();
    }
  });
});

Deno.test("capture counts per topic match what was sent, exactly", async () => {
  await scope(async (track) => {
    const bus = track(startBus({
      capture: "inproc://bus-test-capture",
      topics: ["org.plantd.Metric", "org.plantd.Event"],
    }));
    const subscriber = track(new Subscriber(bus.backend, { topics: [""] }));
    const single = track(new Publisher(bus.frontend));
    const frames = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([single, frames], [subscriber]);
    const before = await bus.snapshot();

    const sent = new Map<string, { messages: number; bytes: number }>();
    const note = (label: string, bytes: number) => {
      const count = sent.get(label) ?? { messages: 0, bytes: 0 };
      count.messages++;
      count.bytes += bytes;
      sent.set(label, count);
    };
    let frameCount = 0;
    for (let batch = 0; batch < 20; batch++) {
      for (let i = 0; i < 50; i++) {
        const value = `{"device":"d${i}","value":${batch * i}}`;
        single.publish("org.plantd.Metric", value);
        note("org.plantd.Metric", "org.plantd.Metric".length + value.length);
        frames.publish("org.plantd.Event", value);
        note("org.plantd.Event", "org.plantd.Event".length + value.length);
        single.publish("site.a.temperature", value);
        note("site.a.temperature", "site.a.temperature".length + value.length);
      }
      frameCount += 50 * 4; // the two-frame form is two frames
      await receiveN(subscriber, 150);
    }

    await eventually(async () => {
      const s = await bus.snapshot();
      return s.statistics.frontend.framesIn - before.statistics.frontend.framesIn === frameCount &&
        s.capture!.missedFrames === 0;
    }, "capture to catch up");
    const after = await bus.snapshot();
    const topics = after.capture!.topics;
    // Per topic: exact messages and bytes. "other" holds the probes.
    for (const [label, count] of sent) assert.deepEqual(topics.get(label), count, label);
    assert.deepEqual([...topics.keys()].sort(), [...sent.keys(), "other"].sort());
    assert.equal(after.statistics.backend.framesOut, after.statistics.frontend.framesIn);
    assert.equal(after.statistics.backend.bytesOut, after.statistics.frontend.bytesIn);
    // Everything captured is accounted for: publications per label plus subscriptions.
    const totals = after.capture!.totals;
    let captured = totals.subscriptions;
    for (const count of topics.values()) captured += count.messages;
    assert.equal(captured, totals.messages);
    assert.equal(totals.subscriptions, after.statistics.backend.framesIn);
    assert.equal(
      totals.frames,
      after.statistics.frontend.framesIn + after.statistics.backend.framesIn,
    );
    assert.equal(
      totals.bytes,
      after.statistics.frontend.bytesIn + after.statistics.backend.bytesIn,
    );
  });
});

Deno.test("an external tap on the capture endpoint sees every message", async () => {
  await scope(async (track) => {
    const bus = track(startBus({ capture: LOOPBACK }));
    assert.match(bus.capture!, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    const tap = track(new Subscriber(bus.capture!, { topics: ["m"] }));
    const subscriber = track(new Subscriber(bus.backend, { topics: ["m"] }));
    const publisher = track(new Publisher(bus.frontend, { form: "frames" }));
    // Probes through the bus reach the tap too once it is connected.
    await untilConnected([publisher], [subscriber, tap]);
    for (let i = 0; i < 300; i++) publisher.publish("m", String(i));
    const seen = await receiveN(tap, 300);
    assert.deepEqual(
      seen.map((m) => text(m.payload)),
      Array.from({ length: 300 }, (_, i) => String(i)),
    );
    await receiveN(subscriber, 300);
  });
});

Deno.test("a slow subscriber loses messages and does not hold back the others", async () => {
  await scope(async (track) => {
    const bus = track(startBus({ sendHighWaterMark: 20 }));
    const fast = track(new Subscriber(bus.backend, { topics: ["big"] }));
    const slow = track(new Subscriber(bus.backend, { topics: ["big"], receiveHighWaterMark: 10 }));
    const publisher = track(new Publisher(bus.frontend, { form: "frames" }));
    await untilConnected([publisher], [fast, slow]);
    // 96 MiB in 64 KiB messages: more than the kernel can buffer for the slow
    // subscriber (at most ~36 MiB on Linux), so its share must overflow.
    const payload = new Uint8Array(64 * 1024);
    const count = 1536;
    const before = fast.received;
    for (let sent = 0; sent < count; sent += 4) {
      for (let i = 0; i < 4; i++) publisher.publish("big", payload);
      await receiveN(fast, 4);
    }
    // Every message reached the fast one, no more: counted from after the
    // probing, which sends it a probe per round until the slow one has one
    // too (several on a loaded machine); late probes are not counted by drain.
    assert.deepEqual(await drain(fast), []);
    assert.ok(fast.received - before >= count, `${fast.received - before} of ${count}`);
    const stats = await bus.statistics();
    assert.ok(stats.backend.framesOut >= 2 * count);
    const late = await drain(slow, 100);
    assert.ok(late.length < count, `the slow subscriber got all ${late.length} messages`);
    assert.ok(late.length > 0);
  });
});

Deno.test("a bus whose frontend connects ('>') reaches a publisher that binds", async () => {
  await scope(async (track) => {
    const publisher = track(new Publisher(`@${LOOPBACK}`, { form: "frames" }));
    assert.match(publisher.endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    const bus = track(startBus({ frontend: `>${publisher.endpoint}` }));
    assert.equal(bus.frontend, publisher.endpoint);
    const subscriber = track(new Subscriber(bus.backend, { topics: ["k"] }));
    await untilConnected([publisher], [subscriber]);
    publisher.publish("k", "v");
    assert.equal(text((await receiveN(subscriber, 1))[0]!.payload), "v");
  });
});

Deno.test("a bus on a port in use fails with a BindError and leaves nothing bound", async () => {
  await scope(async (track) => {
    const taken = track(startBus({ name: "taken" }));
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const free = `tcp://127.0.0.1:${listener.addr.port}`;
    listener.close();
    assert.throws(
      () => Bus.start({ name: "second", frontend: free, backend: taken.backend }),
      (error: Error) =>
        error instanceof BindError &&
        error.message === `bus 'second': cannot bind ${taken.backend}: address already in use`,
    );
    // The frontend bound before the failure was let go. ZeroMQ releases a port
    // on its I/O thread, so the port may take a moment to be free again.
    let third: Bus | undefined;
    for (let attempt = 0; !third; attempt++) {
      try {
        third = track(Bus.start({ name: "third", frontend: free, backend: LOOPBACK }));
      } catch (error) {
        if (!(error instanceof BindError) || attempt >= 40) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }

    await assert.rejects(
      () =>
        BusSet.start([
          { name: "ok", frontend: LOOPBACK, backend: LOOPBACK },
          { name: "clash", frontend: taken.frontend, backend: LOOPBACK },
        ]),
      (error: Error) => error instanceof BindError && error.message.includes(taken.frontend),
    );
  });
});

Deno.test("main.ts bus exits non-zero naming the endpoint when a port is in use", async () => {
  await scope(async (track) => {
    const taken = track(startBus({ name: "taken" }));
    const buses = JSON.stringify([{ name: "metric", frontend: taken.frontend, backend: LOOPBACK }]);
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../main.ts", import.meta.url).pathname,
        "bus",
        "--buses",
        buses,
        "--health-port",
        "0",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 1);
    assert.match(
      new TextDecoder().decode(output.stderr),
      new RegExp(`bus 'metric': cannot bind ${taken.frontend}: address already in use`),
    );
  });
});
