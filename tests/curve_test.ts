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
import { brokerConfig, echoConfig } from "../config/components.ts";
import { busClientCurve, clientCurve, keysInFile, serverCurve } from "../config/curve.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { startEcho } from "../roles/echo.ts";
import { keygen } from "../roles/keygen.ts";
import { CallSigner, serviceTokenCheck } from "../auth/call_credentials.ts";
import { TokenIssuer, tokenSettingsFrom, TokenVerifier } from "../auth/tokens.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { run as plant } from "../cli/main.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { ServicePolicy } from "../broker/service_policy.ts";
import { Bus } from "../bus/bus.ts";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { receiveN, scope, text, untilConnected } from "../bus/_testing.ts";
// Each client first asks mmi.broker what the broker reads (mdp/negotiation.ts): not counted here.
import { PROBE_SERVICE } from "../mdp/negotiation.ts";
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
  }, { request: (service) => service !== PROBE_SERVICE && requests.push(service) });
  const closables: Array<{ close(): unknown }> = [];
  const track = <T extends { close(): unknown }>(closable: T): T => {
    closables.push(closable);
    return closable;
  };
  try {
    assert.ok(zapHandlerBound());
    assert.equal(broker.transport, "libzmq", "CURVE is libzmq's");
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
  const observe = endpointObserver(registry, logger("test"));
  const reasons: string[] = [];
  const broker = await BrokerServer.start({
    endpoint: "tcp://127.0.0.1:*",
    maxMessageBytes: 2048,
    onListenerEvent: (event) => {
      if (event.reason) reasons.push(event.reason);
      observe(event);
    },
  }, { request: (service) => service !== PROBE_SERVICE && requests.push(service) });
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
    // The plaintext broker (ZMTP in TypeScript) knows why it dropped the peer.
    assert.deepEqual(reasons, ["frame over the limit of 2048 bytes"]);
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

Deno.test("CURVE config: keys inline or in files, allow-lists from lists or text, and the mistakes that stop a component", () => {
  const server = curveKeyPair();
  const client = curveKeyPair();
  const files: Record<string, string> = {
    "/k/server.key": `# comment\n${server.secretKey}\n`,
    "/k/allowed": `# clients\n${client.publicKey}\n\n${curveKeyPair().publicKey}\n`,
    "/k/two": `${server.secretKey}\n${client.secretKey}\n`,
    "/k/bad": "not a key\n",
  };
  const read = (path: string) => {
    const text = files[path];
    if (text === undefined) throw new Deno.errors.NotFound(path);
    return text;
  };
  assert.equal(serverCurve("broker", {}, read), undefined);
  assert.deepEqual(
    serverCurve("broker", {
      curve_secret_key_file: "/k/server.key",
      curve_allowed_keys_file: "/k/allowed",
    }, read)
      ?.allowedKeys?.length,
    2,
  );
  const inline = serverCurve("broker", { curve_secret_key: server.secretKey }, read);
  assert.deepEqual(inline, { secretKey: server.secretKey, allowedKeys: [] });
  assert.deepEqual(
    clientCurve(
      "echo",
      { curve_server_key: server.publicKey, curve_secret_key: client.secretKey },
      read,
    ),
    {
      serverKey: server.publicKey,
      publicKey: client.publicKey,
      secretKey: client.secretKey,
    },
  );
  assert.deepEqual(clientCurve("echo", { curve_server_key: server.publicKey }, read), {
    serverKey: server.publicKey,
  });
  const other = curveKeyPair();
  assert.equal(
    busClientCurve("state", {
      curve_server_key: server.publicKey,
      bus_curve_server_key: other.publicKey,
    }, read)
      ?.serverKey,
    other.publicKey,
  );
  for (
    const [what, run] of [
      [
        "both",
        () =>
          serverCurve("broker", {
            curve_secret_key: server.secretKey,
            curve_secret_key_file: "/k/server.key",
          }, read),
      ],
      [
        "allow-list alone",
        () => serverCurve("broker", { curve_allowed_keys: [client.publicKey] }, read),
      ],
      ["two keys", () => serverCurve("broker", { curve_secret_key_file: "/k/two" }, read)],
      ["bad file", () => serverCurve("broker", { curve_secret_key_file: "/k/bad" }, read)],
      ["missing file", () => serverCurve("broker", { curve_secret_key_file: "/k/none" }, read)],
      [
        "secret without server key",
        () => clientCurve("echo", { curve_secret_key: client.secretKey }, read),
      ],
    ] as const
  ) {
    assert.throws(run, ConfigError, what);
  }
  // The loader: an allow-list in the environment is a comma or space separated list (or JSON).
  const loaded = loadConfig(brokerConfig, {
    args: [],
    env: {
      PLANTD_BROKER_CURVE_SECRET_KEY: server.secretKey,
      PLANTD_BROKER_CURVE_ALLOWED_KEYS: `${client.publicKey}, ${other.publicKey}`,
    },
  });
  assert.deepEqual(loaded.curve_allowed_keys, [client.publicKey, other.publicKey]);
  // '[' is Z85: a separated list whose first key starts with it is no JSON list.
  const bracketed = "[" + "0".repeat(39);
  const listed = loadConfig(brokerConfig, {
    args: [],
    env: {
      PLANTD_BROKER_CURVE_SECRET_KEY: server.secretKey,
      PLANTD_BROKER_CURVE_ALLOWED_KEYS: `${bracketed}, ${client.publicKey}`,
    },
  });
  assert.deepEqual(listed.curve_allowed_keys, [bracketed, client.publicKey]);
  assert.throws(
    () => loadConfig(brokerConfig, { args: [], env: { PLANTD_BROKER_CURVE_SECRET_KEY: "short" } }),
    /curve_secret_key/,
  );
});

Deno.test("keygen writes NAME.key (0600) and NAME.pub that the _file keys read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    const { pair, files } = keygen(["--out", `${dir}/broker`], (line) => lines.push(line));
    assert.deepEqual(files, [`${dir}/broker.key`, `${dir}/broker.pub`]);
    assert.equal((await Deno.stat(`${dir}/broker.key`)).mode! & 0o777, 0o600);
    assert.deepEqual(keysInFile("k", await Deno.readTextFile(`${dir}/broker.key`)), [
      pair.secretKey,
    ]);
    assert.deepEqual(keysInFile("p", await Deno.readTextFile(`${dir}/broker.pub`)), [
      pair.publicKey,
    ]);
    assert.equal(curvePublicKey(pair.secretKey), pair.publicKey);
    assert.ok(lines.some((line) => line.includes(pair.publicKey)));
    assert.throws(() => keygen(["--out", `${dir}/broker`], () => {}), ConfigError, "no overwrite");
    keygen(["--out", `${dir}/broker`, "--force"], () => {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keygen --jwt writes an Ed25519 pair: the gateway signs with NAME.pem, a state worker holding only NAME.pub.pem verifies and cannot sign", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { files } = keygen(["--jwt", "--out", `${dir}/gateway-jwt`], () => {});
    assert.deepEqual(files, [`${dir}/gateway-jwt.pem`, `${dir}/gateway-jwt.pub.pem`]);
    assert.equal((await Deno.stat(`${dir}/gateway-jwt.pem`)).mode! & 0o777, 0o600);
    const keys = { jwt_algorithm: "EdDSA" as const, jwt_issuer: "plantd", jwt_audience: "plantd" };
    // The config keys take file paths, as compose and k8s give them.
    const gateway = (await tokenSettingsFrom({ ...keys, jwt_private_key: files[0] }))!;
    const state = (await tokenSettingsFrom({ ...keys, jwt_public_key: files[1] }))!;
    const caller = {
      id: "user:ada",
      name: "ada",
      kind: "user" as const,
      roles: [],
      permissions: ["*"],
    };
    const request = { service: "plant", key: "k", value: "v" };
    const body = new CallSigner(gateway, 10).stateRequest(
      caller,
      STATE_SERVICE,
      "state-set",
      request,
    );
    const { token, ...sent } = JSON.parse(body);
    const principal = await serviceTokenCheck(state, STATE_SERVICE)(token, "state-set", sent);
    assert.equal(principal.id, "user:ada");
    // The gateway's own access tokens verify there too; the state worker has nothing to sign with.
    const access = await new TokenIssuer(gateway).issue(
      { sub: "user:ada", name: "ada", roles: [], perms: ["*"] },
      60,
    );
    assert.equal((await new TokenVerifier(state).verify(access.token)).id, "user:ada");
    assert.equal(TokenIssuer.possible(state), false);
    assert.equal(CallSigner.possible(state), false);
    assert.throws(() => keygen(["--jwt"], () => {}), ConfigError, "--out is required");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("roles: broker and its bus with CURVE from key files serve the echo role and allowed clients; plaintext peers are refused and counted on /metrics", async () => {
  const dir = await Deno.makeTempDir();
  const registry = new Registry();
  const closables: Array<{ close(): unknown }> = [];
  const track = <T extends { close(): unknown }>(closable: T): T => {
    closables.push(closable);
    return closable;
  };
  try {
    const silent = () => {};
    keygen(["--out", `${dir}/broker`], silent);
    const echoKeys = keygen(["--out", `${dir}/echo`], silent).pair;
    const clientKeys = keygen(["--out", `${dir}/client`], silent).pair;
    await Deno.writeTextFile(
      `${dir}/allowed`,
      (await Deno.readTextFile(`${dir}/echo.pub`)) + (await Deno.readTextFile(`${dir}/client.pub`)),
    );
    const broker = track(
      await startBroker(
        loadConfig(brokerConfig, {
          args: [],
          env: {
            PLANTD_BROKER_ENDPOINT: "tcp://127.0.0.1:*",
            PLANTD_BROKER_HEALTH_PORT: "0",
            PLANTD_BROKER_BUSES: JSON.stringify([{
              name: "x",
              frontend: "tcp://127.0.0.1:*",
              backend: "tcp://127.0.0.1:*",
            }]),
            PLANTD_BROKER_CURVE_SECRET_KEY_FILE: `${dir}/broker.key`,
            PLANTD_BROKER_CURVE_ALLOWED_KEYS_FILE: `${dir}/allowed`,
            // The echo module is an org.plantd.* service: its key needs a grant.
            PLANTD_BROKER_SERVICE_POLICY: JSON.stringify([{
              key: echoKeys.publicKey,
              services: ["org.plantd.module.Echo"],
            }]),
          },
        }),
        registry,
      ),
    );
    const endpoint = broker.server.endpoint;
    track(startEcho(loadConfig(echoConfig, {
      args: [],
      env: {
        PLANTD_MODULE_ECHO_BROKER_ENDPOINT: endpoint,
        PLANTD_MODULE_ECHO_CURVE_SERVER_KEY_FILE: `${dir}/broker.pub`,
        PLANTD_MODULE_ECHO_CURVE_SECRET_KEY_FILE: `${dir}/echo.key`,
      },
    })));
    const serverKey = keysInFile("pub", await Deno.readTextFile(`${dir}/broker.pub`))[0]!;
    const curve = { serverKey, secretKey: clientKeys.secretKey };
    const client = track(new MdpClient(endpoint, { timeoutMs: 10_000, curve }));
    const reply = await client.request("org.plantd.module.Echo", ["echo", "hello"]);
    assert.deepEqual(reply.map((f) => decoder.decode(f)), ["hello"]);
    assert.ok(echoKeys.publicKey !== clientKeys.publicKey);

    const plaintext = track(new MdpClient(endpoint, { timeoutMs: 60_000 }));
    plaintext.request("org.plantd.module.Echo", ["no"]).catch(() => {});
    const bus = broker.buses.set.get("x")!;
    track(new Subscriber(bus.backend, { topics: [""] }));
    const refused = async (endpoint: string) => {
      const text = await registry.metrics();
      const line = text.split("\n").find((l) =>
        l.startsWith(`plantd_curve_refused_total{endpoint="${endpoint}",reason="${NO_CURVE}"}`)
      );
      return Number(line?.split(" ").pop() ?? 0);
    };
    await waitFor(async () => await refused("broker") >= 1, { what: "broker refusal on /metrics" });
    await waitFor(async () => await refused("bus:x:backend") >= 1, {
      what: "bus refusal on /metrics",
    });
  } finally {
    for (const closable of closables.reverse()) await closable.close();
    await settleTransport();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plant --broker talks to a CURVE broker with PLANTD_CLI_CURVE_* keys; a malformed key is a usage error", async () => {
  const server = curveKeyPair();
  const cli = curveKeyPair();
  const worker = curveKeyPair();
  const broker = await BrokerServer.start({
    endpoint: "tcp://127.0.0.1:*",
    curve: { secretKey: server.secretKey, allowedKeys: [cli.publicKey, worker.publicKey] },
    servicePolicy: new ServicePolicy([{ key: worker.publicKey, services: [ECHO_SERVICE] }]),
  });
  const echo = startEchoWorker(broker.endpoint, {
    curve: { serverKey: server.publicKey, secretKey: worker.secretKey },
  });
  try {
    const env = {
      PLANTD_CLI_CURVE_SERVER_KEY: server.publicKey,
      PLANTD_CLI_CURVE_SECRET_KEY: cli.secretKey,
    };
    assert.equal(await plant(["--broker", broker.endpoint, "--json", "echo", "hi"], env), 0);
    assert.equal(
      await plant(["--broker", broker.endpoint, "echo", "hi"], {
        ...env,
        PLANTD_CLI_CURVE_SECRET_KEY: "not a key",
      }),
      2,
    );
  } finally {
    await echo.close();
    await broker.close();
    await settleTransport();
  }
});
