/**
 * How MdpClient learns what its broker reads beyond plain Majordomo
 * (mdp/negotiation.ts) and how it speaks plain Majordomo when the broker
 * reads nothing more (mdp/plain_lanes.ts). Against our broker, a raw libzmq
 * ROUTER in a Python process (tests/_pyzmq.ts), and canned answers.
 */
import assert from "node:assert/strict";
import { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpTimeoutError } from "../mdp/errors.ts";
import { BROKER_EXTENSIONS, featuresOfAnswer, PROBE_SERVICE } from "../mdp/negotiation.ts";
import { frame, text } from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { freePort, settleTransport, waitFor, withBroker } from "./_helpers.ts";
import { hexBytes, PyZmq } from "./_pyzmq.ts";

const answer = (body: string[]) => ({
  kind: "reply" as const,
  stack: [],
  final: true,
  service: PROBE_SERVICE,
  body: body.map(frame),
});

Deno.test("negotiation reads each broker's mmi.broker answer: ours lists extensions, an older plantd-ts one is JSON without the list, Go plantd and MMI brokers answer otherwise", () => {
  const ours = featuresOfAnswer(answer([JSON.stringify({
    version: "1",
    uptime_s: 1,
    services: 0,
    workers: 0,
    extensions: BROKER_EXTENSIONS,
  })]));
  assert.equal(ours?.framing, "extended");
  assert.deepEqual([...ours!.extensions], BROKER_EXTENSIONS);
  const older = featuresOfAnswer(answer([
    JSON.stringify({ version: "0.1.0", uptime_s: 3, services: 1, workers: 1 }),
  ]));
  assert.equal(older?.framing, "extended");
  assert.ok(older?.extensions.has("org.plantd.Broker"));
  // Go plantd: the code then key=value frames; the Guide's and RFC 8 brokers: 501.
  for (const body of [["200", "version=MDPC02/MDPW02", "uptime=1"], ["501"], ['{"a":1}']]) {
    const plain = featuresOfAnswer(answer(body));
    assert.equal(plain?.framing, "plain", body.join("|"));
    assert.equal(plain?.mmi, true);
    assert.equal(plain?.extensions.size, 0);
  }
  // Not an answer to the probe at all.
  assert.equal(featuresOfAnswer({ ...answer(["501"]), service: "mmi.service" }), undefined);
  assert.equal(featuresOfAnswer({ ...answer(["501"]), final: false }), undefined);
});

Deno.test("our client learns our broker's extensions and sends request ids: replies out of order are matched", async () => {
  await withBroker({}, async (server, track) => {
    const gates = new Map<string, () => void>();
    track(
      new MdpWorker(server.endpoint, "svc", async (body) => {
        const name = text(body[0]!);
        await new Promise<void>((resolve) => gates.set(name, resolve));
        return body;
      }, { capacity: 2 }),
    );
    await waitFor(() => server.broker.workerCount === 1, { what: "the worker" });
    const client = track(new MdpClient(server.endpoint, { plainConnections: 1 }));
    const features = await client.features();
    assert.equal(features.framing, "extended", features.summary);
    assert.deepEqual([...features.extensions], BROKER_EXTENSIONS);
    // Two requests on one connection at once, answered in reverse: only ids tell them apart.
    const first = client.request("svc", ["first"]);
    const second = client.request("svc", ["second"]);
    await waitFor(() => gates.size === 2, { what: "both requests at the worker" });
    gates.get("second")!();
    assert.deepEqual((await second).map(text), ["second"]);
    gates.get("first")!();
    assert.deepEqual((await first).map(text), ["first"]);
  });
});

Deno.test("with extensions off our client speaks plain MDP, also to our broker: one request per connection, up to plainConnections, every reply matched", async () => {
  await withBroker({}, async (server, track) => {
    track(new MdpWorker(server.endpoint, "svc", (body) => body, { concurrency: 4 }));
    await waitFor(() => server.broker.workerCount === 4, { what: "the workers" });
    const client = track(
      new MdpClient(server.endpoint, { extensions: "off", plainConnections: 3, timeoutMs: 5000 }),
    );
    assert.equal((await client.features()).framing, "plain");
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.request("svc", [`r${i}`])),
    );
    replies.forEach((reply, i) => assert.deepEqual(reply.map(text), [`r${i}`]));
    // The broker saw three client connections at most, besides the worker ones.
    assert.equal(client.inFlight, 0);
  });
});

Deno.test("plain MDP: the late reply of a request that timed out is not taken for the next request's (its connection is replaced)", async () => {
  await withBroker({}, async (server, track) => {
    let release: (() => void) | undefined;
    track(
      new MdpWorker(server.endpoint, "svc", async (body) => {
        if (text(body[0]!) === "slow") await new Promise<void>((r) => release = r);
        return body;
      }, { capacity: 2 }),
    );
    await waitFor(() => server.broker.workerCount === 1, { what: "the worker" });
    const client = track(
      new MdpClient(server.endpoint, { extensions: "off", plainConnections: 1 }),
    );
    await assert.rejects(client.request("svc", ["slow"], { timeoutMs: 200 }), MdpTimeoutError);
    const next = client.request("svc", ["next"], { timeoutMs: 5000 });
    // The slow reply goes out now, to the connection its request came on.
    await waitFor(() => release !== undefined, { what: "the slow request at the worker" });
    release!();
    assert.deepEqual((await next).map(text), ["next"]);
  });
});

Deno.test("a probe lost with its connection (the broker restarted) is asked again on the next one, so a plantd-ts broker is not taken for a plain one", async () => {
  const port = freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const router = await PyZmq.start("ROUTER");
  let server: BrokerServer | undefined;
  const client = new MdpClient(endpoint, { probeTimeoutMs: 1500, timeoutMs: 10_000 });
  try {
    await router.bind(endpoint);
    // The first broker reads the probe and dies without answering.
    const probe = await router.receive(5000);
    assert.ok(probe, "the probe reached the first broker");
    assert.equal(new TextDecoder().decode(hexBytes(probe.at(-2)!.hex!)), PROBE_SERVICE);
    await router.close();
    server = await BrokerServer.start({ endpoint });
    const features = await client.features();
    assert.equal(features.framing, "extended", features.summary);
  } finally {
    await client.close();
    await server?.close();
    router.kill();
    await router.exited();
    await settleTransport();
  }
});
