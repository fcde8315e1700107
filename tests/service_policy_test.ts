/**
 * Who may serve what (issue #16, item 2): with CURVE, a peer whose key may
 * connect but is not granted an `org.plantd.*` service cannot register as it.
 * Its READY gets DISCONNECT, is counted, the service stays without a worker,
 * and requests for it go to a granted worker only. Patterns match whole
 * segments; a worker's routing id cannot be taken over by another key; the
 * policy file reloads when it changes, and a bad one keeps the old policy.
 * "Never routed to it" is shown without timed waits: a request queued while
 * the refused peer is connected is answered by the granted worker, and the
 * refused peer holds nothing but its DISCONNECT.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { Broker } from "../broker/broker.ts";
import { ServicePolicy } from "../broker/service_policy.ts";
import { patternCovers } from "../mdp/service_pattern.ts";
import { brokerConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { servicePolicyOf } from "../config/service_policy.ts";
import { MdpClient } from "../mdp/client.ts";
import {
  decodeBrokerToWorker,
  encodeWorkerReply,
  encodeWorkerSignal,
  text,
} from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { startBroker } from "../roles/broker.ts";
import { brokerMetrics } from "../broker/broker_metrics.ts";
import { type CurveKeyPair, curveKeyPair } from "../transport/curve.ts";
import type { Frames } from "../transport/frames.ts";
import { Peer, settleTransport, waitFor, withBroker } from "./_helpers.ts";

const STATE = "org.plantd.State";

/** The value of a counter series of `registry`, summed over series matching `labels`. */
async function counter(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as Array<{ labels: Record<string, string>; value: number }>;
  return values
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((n, v) => n + v.value, 0);
}

const kind = (frames: Frames) => decodeBrokerToWorker(frames).kind;

/** The next message to a worker peer other than a heartbeat (those come on the broker's clock). */
function nextCommand(peer: Peer): Promise<Frames> {
  return peer.next({ skip: (frames) => kind(frames) === "heartbeat" });
}

/** A raw worker peer with CURVE keys: sends READY by hand, sees exactly what the broker sends. */
function curvePeer(
  endpoint: string,
  server: CurveKeyPair,
  keys: CurveKeyPair,
  name: string,
  routingId?: string,
): Peer {
  return new Peer(endpoint, {
    name,
    ...(routingId ? { routingId } : {}),
    curveClient: { serverKey: server.publicKey, secretKey: keys.secretKey },
  });
}

function ready(peer: Peer, service: string): Promise<void> {
  return peer.socket.send(encodeWorkerSignal("plantd", "READY", service));
}

async function known(client: MdpClient, service: string): Promise<string> {
  return text((await client.request("mmi.service", [service]))[0]!);
}

Deno.test("service patterns: whole names, and a trailing '*' segment that covers deeper names but never a sibling or the parent", () => {
  assert.ok(patternCovers(STATE, STATE));
  assert.ok(!patternCovers(STATE, "org.plantd.StateX"));
  assert.ok(patternCovers("org.plantd.module.*", "org.plantd.module.Echo"));
  assert.ok(patternCovers("org.plantd.module.*", "org.plantd.module.a.b"));
  assert.ok(!patternCovers("org.plantd.module.*", "org.plantd.module"));
  assert.ok(!patternCovers("org.plantd.module.*", "org.plantd.moduleX.Echo"));
  assert.ok(!patternCovers("org.plantd.module.*", STATE));
  assert.ok(patternCovers("*", STATE));

  const module = curveKeyPair().publicKey;
  const state = curveKeyPair().publicKey;
  const policy = new ServicePolicy([
    { key: module, services: ["org.plantd.module.*"] },
    { key: state, services: [STATE] },
  ]);
  assert.ok(policy.allows(module, "org.plantd.module.Pump"));
  assert.ok(!policy.allows(module, STATE), "a module grant does not cover the state service");
  assert.ok(policy.allows(state, STATE));
  assert.ok(!policy.allows(state, "org.plantd.module.Pump"));
  // Outside org.plantd.*, any authenticated key; without a key (plaintext), nothing.
  assert.ok(policy.allows(curveKeyPair().publicKey, "acme.Pump"));
  assert.ok(!policy.allows(undefined, "acme.Pump"));
  assert.ok(!policy.allows(curveKeyPair().publicKey, STATE));
});

Deno.test("CURVE broker: a key allowed to connect but not granted org.plantd.State is refused (DISCONNECT, counted), gets no request; granted and pattern-granted keys serve", async () => {
  const server = curveKeyPair();
  const intruder = curveKeyPair();
  const stateKey = curveKeyPair();
  const moduleKey = curveKeyPair();
  const clientKey = curveKeyPair();
  const registry = new Registry();
  await withBroker({
    curve: { secretKey: server.secretKey },
    servicePolicy: new ServicePolicy([
      { key: stateKey.publicKey, services: [STATE] },
      { key: moduleKey.publicKey, services: ["org.plantd.module.*"] },
    ]),
  }, async (broker, track) => {
    const client = track(
      new MdpClient(broker.endpoint, {
        timeoutMs: 10_000,
        curve: { serverKey: server.publicKey, secretKey: clientKey.secretKey },
      }),
    );
    const refused = (reason: string) => counter(registry, "mdp_workers_refused_total", { reason });

    // The intruder claims the state service: DISCONNECT, counted, no worker.
    const fake = track(curvePeer(broker.endpoint, server, intruder, "fake state"));
    await ready(fake, STATE);
    assert.equal(kind(await nextCommand(fake)), "disconnect");
    assert.equal(await refused("not_granted"), 1);
    assert.equal(await known(client, STATE), "404");
    assert.deepEqual(broker.broker.services().map((s) => s.name), []);

    // A request for the state service waits for a worker; the granted one answers it.
    const pending = client.request(STATE, ["get"]);
    await waitFor(() => broker.broker.services().some((s) => s.name === STATE && s.queued === 1), {
      what: "the request queued",
    });
    track(
      new MdpWorker(broker.endpoint, STATE, () => ["from the granted worker"], {
        curve: { serverKey: server.publicKey, secretKey: stateKey.secretKey },
      }),
    );
    assert.deepEqual((await pending).map(text), ["from the granted worker"]);
    assert.deepEqual(fake.received, [], "the refused peer got nothing after its DISCONNECT");

    // A pattern grant: its services register, the state service does not.
    const module = track(curvePeer(broker.endpoint, server, moduleKey, "module"));
    await ready(module, "org.plantd.module.Pump");
    await waitFor(async () => (await known(client, "org.plantd.module.Pump")) === "200", {
      what: "the pattern-granted module registered",
    });
    const moduleAsState = track(curvePeer(broker.endpoint, server, moduleKey, "module as state"));
    await ready(moduleAsState, STATE);
    assert.equal(kind(await nextCommand(moduleAsState)), "disconnect");
    assert.equal(await refused("not_granted"), 2);

    // Outside org.plantd.*, any key that may connect serves.
    const other = track(curvePeer(broker.endpoint, server, intruder, "acme"));
    await ready(other, "acme.Pump");
    await waitFor(async () => (await known(client, "acme.Pump")) === "200", {
      what: "a non-system service registered by an ungranted key",
    });
    // Reserved names are refused and counted too.
    const reserved = track(curvePeer(broker.endpoint, server, intruder, "reserved"));
    await ready(reserved, "mmi.service");
    assert.equal(kind(await nextCommand(reserved)), "disconnect");
    assert.equal(await refused("reserved"), 1);
  }, brokerMetrics(registry, () => undefined));
});

Deno.test("CURVE broker: a peer with another key that takes over a gone worker's routing id is disconnected, and the worker's requests never reach it", async () => {
  const server = curveKeyPair();
  const stateKey = curveKeyPair();
  const intruder = curveKeyPair();
  const registry = new Registry();
  let disconnects = 0;
  await withBroker({
    curve: { secretKey: server.secretKey },
    servicePolicy: new ServicePolicy([{ key: stateKey.publicKey, services: [STATE] }]),
    onListenerEvent: (event) => {
      if (event.type === "disconnected") disconnects++;
    },
  }, async (broker, track) => {
    const client = track(
      new MdpClient(broker.endpoint, {
        timeoutMs: 10_000,
        curve: { serverKey: server.publicKey, secretKey: curveKeyPair().secretKey },
      }),
    );
    const real = curvePeer(broker.endpoint, server, stateKey, "real", "state-1");
    await ready(real, STATE);
    await waitFor(async () => (await known(client, STATE)) === "200", {
      what: "the granted worker registered",
    });
    // It goes away without a word; the closed connection ends its registration at once.
    await real.close();
    await waitFor(() => disconnects >= 1, {
      what: "the broker seeing the worker's connection end",
    });
    await waitFor(async () => (await known(client, STATE)) === "404", {
      what: "the gone worker's registration dropped",
    });

    const thief = track(curvePeer(broker.endpoint, server, intruder, "thief", "state-1"));
    await thief.socket.send(encodeWorkerSignal("plantd", "HEARTBEAT"));
    // An unknown worker now: the registration it aimed at is gone (key_changed: the test below).
    assert.equal(kind(await nextCommand(thief)), "disconnect");
    assert.equal(await known(client, STATE), "404", "the taken-over registration is gone");

    const pending = client.request(STATE, ["get"]);
    const granted = track(curvePeer(broker.endpoint, server, stateKey, "granted"));
    await ready(granted, STATE);
    const request = decodeBrokerToWorker(await nextCommand(granted));
    assert.equal(request.kind, "request");
    if (request.kind !== "request") return;
    await granted.socket.send(
      encodeWorkerReply("plantd", true, request.client, [new TextEncoder().encode("real")]),
    );
    assert.deepEqual((await pending).map(text), ["real"]);
    assert.deepEqual(thief.received, [], "the thief got nothing after its DISCONNECT");
  }, brokerMetrics(registry, () => undefined));
});

Deno.test("broker role: service_policy_file reloads when it changes (revoked workers are dropped, new grants serve); a bad file keeps the policy in force", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plantd-policy-" });
  const file = `${dir}/services.yaml`;
  const server = curveKeyPair();
  const first = curveKeyPair();
  const second = curveKeyPair();
  await Deno.writeTextFile(file, `- key: "${first.publicKey}"\n  services: [${STATE}]\n`);
  const registry = new Registry();
  const role = await startBroker(
    brokerConfig.schema.parse({
      endpoint: "tcp://127.0.0.1:*",
      health_port: 0,
      buses: [],
      curve_secret_key: server.secretKey,
      service_policy_file: file,
    }),
    registry,
  );
  const endpoint = role.server.endpoint;
  const peers: Peer[] = [];
  const client = new MdpClient(endpoint, {
    timeoutMs: 10_000,
    curve: { serverKey: server.publicKey, secretKey: curveKeyPair().secretKey },
  });
  const reloads = (outcome: string) =>
    counter(registry, "mdp_service_policy_reloads_total", { outcome });
  try {
    const a = curvePeer(endpoint, server, first, "first");
    const b = curvePeer(endpoint, server, second, "second");
    peers.push(a, b);
    await ready(b, STATE);
    assert.equal(kind(await nextCommand(b)), "disconnect", "second is not granted yet");
    await ready(a, STATE);
    await waitFor(async () => (await known(client, STATE)) === "200", {
      what: "first registered",
    });

    // The grant moves from first to second.
    await Deno.writeTextFile(file, `[{ key: "${second.publicKey}", services: ["${STATE}"] }]\n`);
    await waitFor(async () => (await reloads("ok")) >= 1, { what: "the policy reloaded" });
    assert.equal(kind(await nextCommand(a)), "disconnect", "first's registration is revoked");
    assert.equal(
      await counter(registry, "mdp_workers_refused_total", { reason: "revoked" }),
      1,
    );
    assert.equal(await known(client, STATE), "404");
    await ready(b, STATE);
    const pending = client.request(STATE, ["get"]);
    const request = decodeBrokerToWorker(await nextCommand(b));
    assert.equal(request.kind, "request", "second now serves the state service");
    if (request.kind !== "request") return;
    await b.socket.send(encodeWorkerReply("plantd", true, request.client, [request.body[0]!]));
    assert.deepEqual((await pending).map(text), ["get"]);

    // A bad file: logged, counted, and the policy in force stays.
    const failedBefore = await reloads("error");
    await Deno.writeTextFile(file, `- key: not-a-key\n  services: [${STATE}]\n`);
    await waitFor(async () => (await reloads("error")) > failedBefore, {
      what: "the failed reload",
    });
    assert.equal(await known(client, STATE), "200", "second is still registered");
    // The policy in force still lets second register again, and still refuses first.
    const fresh = curvePeer(endpoint, server, second, "second again");
    peers.push(fresh);
    await ready(fresh, STATE);
    await waitFor(async () => text((await client.request("mmi.workers", [STATE]))[0]!) === "2", {
      what: "second's new worker registered",
    });
    await ready(a, STATE);
    assert.equal(kind(await nextCommand(a)), "disconnect");
    assert.equal(
      await counter(registry, "mdp_workers_refused_total", { reason: "not_granted" }),
      2,
    );
  } finally {
    await client.close();
    for (const peer of peers) await peer.close();
    await role.close();
    await settleTransport();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("service policy config: grants need CURVE, a bad pattern or file stops the broker with the key named", async () => {
  const key = curveKeyPair().publicKey;
  assert.throws(
    () => servicePolicyOf({ service_policy: [{ key, services: [STATE] }] }, false),
    (e: unknown) => e instanceof ConfigError && e.message.includes("'service_policy'"),
  );
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: [],
        env: {
          PLANTD_BROKER_SERVICE_POLICY: JSON.stringify([{ key, services: ["org.*.State"] }]),
        },
      }),
    (e: unknown) => e instanceof ConfigError && e.message.includes("'service_policy.0.services"),
  );
  const files: Record<string, string> = {
    "/p/bad.yaml": "- key: [unclosed",
    "/p/wrong.json": JSON.stringify([{ key, services: [] }]),
  };
  for (const path of Object.keys(files)) {
    assert.throws(
      () => servicePolicyOf({ service_policy_file: path }, true, (p) => files[p]!),
      (e: unknown) =>
        e instanceof ConfigError && e.message.includes(`'service_policy_file' ${path}`),
    );
  }
  const server = curveKeyPair();
  await assert.rejects(
    startBroker(brokerConfig.schema.parse({
      endpoint: "tcp://127.0.0.1:*",
      health_port: 0,
      buses: [],
      curve_secret_key: server.secretKey,
      service_policy_file: "/nonexistent/services.yaml",
    })),
    (e: unknown) => e instanceof ConfigError && e.message.includes("service_policy_file"),
  );
});

Deno.test("broker: a message from a registered worker's routing id with another CURVE key ends that registration (key_changed) and gets DISCONNECT", () => {
  // As when a peer takes over a routing id whose connection the broker has not yet seen close.
  const stateKey = curveKeyPair();
  const intruder = curveKeyPair();
  const sent: Frames[] = [];
  const refused: string[] = [];
  const broker = new Broker(
    (identity, frames) => sent.push([identity, ...frames]),
    { servicePolicy: new ServicePolicy([{ key: stateKey.publicKey, services: [STATE] }]) },
    { workerRefused: (_service, reason) => refused.push(reason) },
  );
  const id = new TextEncoder().encode("state-1");
  broker.handle([id, ...encodeWorkerSignal("plantd", "READY", STATE)], stateKey.publicKey);
  assert.equal(broker.workerCount, 1);
  broker.handle([id, ...encodeWorkerSignal("plantd", "HEARTBEAT")], intruder.publicKey);
  assert.deepEqual(refused, ["key_changed"]);
  assert.equal(broker.workerCount, 0);
  const last = sent.at(-1)!;
  assert.deepEqual(last[0], id);
  assert.equal(kind(last.slice(1)), "disconnect");
});

Deno.test("CURVE broker: dead-letter changes need a key in admin_keys (FORBIDDEN and counted otherwise); reads are open to allowed keys", async () => {
  const server = curveKeyPair();
  const admin = curveKeyPair();
  const other = curveKeyPair();
  const refusedOps: string[] = [];
  await withBroker({
    curve: { secretKey: server.secretKey },
    adminKeys: new Set([admin.publicKey]),
  }, async (broker, track) => {
    const clientOf = (key: CurveKeyPair) =>
      track(
        new MdpClient(broker.endpoint, {
          timeoutMs: 10_000,
          curve: { serverKey: server.publicKey, secretKey: key.secretKey },
        }),
      );
    const op = async (client: MdpClient, operation: string) => {
      const [reply] = await client.request("org.plantd.Broker", [operation, "{}"]);
      return JSON.parse(new TextDecoder().decode(reply));
    };
    const mine = clientOf(admin);
    const theirs = clientOf(other);
    for (const operation of ["dlq-purge", "dlq-delete", "dlq-replay"]) {
      const refused = await op(theirs, operation);
      assert.equal(refused.code, "FORBIDDEN", JSON.stringify(refused));
      assert.match(refused.error, /admin_keys/);
      // The admin key gets past the check (this broker has no durable services).
      assert.notEqual((await op(mine, operation)).code, "FORBIDDEN");
    }
    assert.equal((await op(theirs, "dlq-list")).success, true, "reading is not a change");
  }, { adminRefused: (operation) => refusedOps.push(operation) });
  assert.deepEqual(refusedOps, ["dlq-purge", "dlq-delete", "dlq-replay"]);
});
