/**
 * Clients and workers of a broker pair (docs/ha.md), in this process on real
 * sockets: a client given several endpoints moves to the one that serves, a
 * passive broker refuses requests (BROKER_PASSIVE) and the client takes them
 * to the active one, a request already written to a broker that dies is
 * never sent to the other (no phantom), and a worker registers with both.
 * The gateway, the state worker and `plant --broker` take a list.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import {
  brokerConfig,
  echoConfig,
  endpointList,
  gatewayConfig,
  stateConfig,
} from "../config/components.ts";
import { startGateway } from "../roles/gateway.ts";
import { startState } from "../roles/state.ts";
import { startEchoWorker } from "../workers/echo.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { type FailoverEvent, MdpClient } from "../mdp/client.ts";
import { MdpBrokerError, MdpTimeoutError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { curveKeyPair } from "../transport/curve.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import type { Frames } from "../transport/frames.ts";
import { ZMQ_ROUTER } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { freePort, waitFor, withBroker } from "./_helpers.ts";
import { pairPorts, startPairBroker } from "./_pair.ts";

const dec = new TextDecoder();

Deno.test("config: broker_endpoint takes one endpoint as before, or a list (array, comma-separated, JSON)", () => {
  const one = loadConfig(stateConfig, { args: [], env: {} });
  assert.equal(one.broker_endpoint, "tcp://127.0.0.1:9797", "one endpoint stays a string");
  const pair = ["tcp://10.0.0.1:9797", "tcp://10.0.0.2:9797"];
  const sources: Array<{ args: string[]; env: Record<string, string> }> = [
    { args: ["--broker-endpoint", pair.join(",")], env: {} },
    { args: [], env: { PLANTD_STATE_BROKER_ENDPOINT: `${pair[0]}, ${pair[1]}` } },
    { args: [], env: { PLANTD_STATE_BROKER_ENDPOINT: JSON.stringify(pair) } },
  ];
  for (const source of sources) {
    assert.deepEqual(loadConfig(stateConfig, source).broker_endpoint, pair);
  }
  assert.deepEqual(
    loadConfig(echoConfig, { args: [], env: {}, readTextFile: () => "" }).broker_endpoint,
    "tcp://127.0.0.1:9797",
  );
  assert.deepEqual(endpointList("tcp://a:1"), ["tcp://a:1"]);
  assert.throws(
    () => loadConfig(stateConfig, { args: ["--broker-endpoint", "tcp://a:1,http://b"], env: {} }),
    /broker_endpoint.*ZeroMQ endpoint/,
  );
  assert.throws(
    () => loadConfig(stateConfig, { args: ["--broker-endpoint", "[]"], env: {} }),
    /at least one broker endpoint/,
  );
});

Deno.test("config: ha needs a role, its state_bind and the peer's, heartbeat_ms defaults to 1000", () => {
  const ha = {
    role: "backup",
    state_bind: "tcp://127.0.0.1:9798",
    peer_state_endpoint: "tcp://127.0.0.1:9799",
  };
  const config = loadConfig(brokerConfig, {
    args: [],
    env: { PLANTD_BROKER_HA: JSON.stringify(ha) },
  });
  assert.deepEqual(config.ha, { ...ha, heartbeat_ms: 1000 });
  assert.equal(loadConfig(brokerConfig, { args: [], env: {} }).ha, undefined, "off by default");
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: ["--ha", JSON.stringify({ ...ha, role: "leader" })],
        env: {},
      }),
    /ha\.role/,
  );
  assert.throws(
    () =>
      loadConfig(brokerConfig, { args: ["--ha", JSON.stringify({ role: "primary" })], env: {} }),
    /ha\.state_bind/,
  );
});

Deno.test("ha.state_bind is a listener: beyond loopback without CURVE the broker refuses to start, naming it", async () => {
  const ha = {
    role: "primary",
    state_bind: "tcp://0.0.0.0:0",
    peer_state_endpoint: `tcp://127.0.0.1:${freePort()}`,
  };
  await assert.rejects(
    startBroker(
      loadConfig(brokerConfig, {
        args: ["--endpoint", "tcp://127.0.0.1:0", "--health-port", "0", "--buses", "[]"],
        env: { PLANTD_BROKER_HA: JSON.stringify(ha) },
      }),
      new Registry(),
    ),
    (error: Error) =>
      error instanceof ConfigError &&
      /ha\.state_bind tcp:\/\/0\.0\.0\.0:0 is reachable/.test(error.message),
  );
  await sharedPoller().idle();
});

Deno.test("a client of two endpoints whose first broker is down is served by the second", async () => {
  await withBroker({}, async (server, track) => {
    track(new MdpWorker(server.endpoint, "echo", (body) => body));
    const moves: FailoverEvent[] = [];
    const dead = `tcp://127.0.0.1:${freePort()}`;
    const client = track(
      new MdpClient([dead, server.endpoint], {
        timeoutMs: 5000,
        connectTimeoutMs: 200,
        onFailover: (event) => moves.push(event),
      }),
    );
    const [reply] = await client.request("echo", ["hello"]);
    assert.equal(dec.decode(reply), "hello");
    assert.equal(client.endpoint, server.endpoint);
    assert.deepEqual(moves, [{ from: dead, to: server.endpoint, reason: "no connection" }]);
  });
});

Deno.test("a passive broker refuses requests with BROKER_PASSIVE; a client of the pair takes them to the active one", async () => {
  const ports = pairPorts();
  const primary = await startPairBroker(ports, "primary");
  const backup = await startPairBroker(ports, "backup");
  const closables: Array<{ close(): Promise<unknown> }> = [];
  try {
    await waitFor(
      () => primary.pair?.fsm.state === "active" && backup.pair?.fsm.state === "passive",
      { what: "primary active, backup passive" },
    );
    // One worker per broker, to see which broker routed what.
    const seen: string[] = [];
    for (const [name, broker] of [["primary", primary], ["backup", backup]] as const) {
      closables.push(
        new MdpWorker(broker.endpoint, "echo", (body) => {
          seen.push(`${name}:${dec.decode(body[0])}`);
          return body;
        }, { heartbeatIntervalMs: 200 }),
      );
    }
    await waitFor(
      () =>
        primary.server.broker.services().length === 1 &&
        backup.server.broker.services().length === 1,
      { what: "the workers registered at both brokers" },
    );
    // A client of the passive broker alone is told so.
    const alone = new MdpClient(backup.endpoint, { timeoutMs: 5000 });
    closables.push(alone);
    await assert.rejects(
      alone.request("echo", ["refused"]),
      (error: Error) => error instanceof MdpBrokerError && error.code === "BROKER_PASSIVE",
    );
    // A client of the pair that starts at the passive one moves to the active one.
    const moves: FailoverEvent[] = [];
    const client = new MdpClient([backup.endpoint, primary.endpoint], {
      timeoutMs: 5000,
      onFailover: (event) => moves.push(event),
    });
    closables.push(client);
    const [reply] = await client.request("echo", ["moved"]);
    assert.equal(dec.decode(reply), "moved");
    assert.deepEqual(seen, ["primary:moved"], "the passive broker routed nothing");
    assert.deepEqual(moves.map((m) => m.reason), ["broker passive"]);
    assert.equal(backup.pair?.fsm.state, "passive", "a client while the primary lives is no vote");
  } finally {
    for (const closable of closables.reverse()) await closable.close();
    await backup.close();
    await primary.close();
    await sharedPoller().idle();
  }
});

Deno.test("when the active broker stops, a client of the pair moves once and stays at the passive one until it takes over", async () => {
  const ports = pairPorts();
  const primary = await startPairBroker(ports, "primary");
  const backup = await startPairBroker(ports, "backup");
  const closables: Array<{ close(): Promise<unknown> }> = [];
  let primaryClosed = false;
  try {
    await waitFor(
      () => primary.pair?.fsm.state === "active" && backup.pair?.fsm.state === "passive",
      { what: "primary active, backup passive" },
    );
    const endpoints = [primary.endpoint, backup.endpoint];
    closables.push(
      new MdpWorker(endpoints, "echo", (body) => body, {
        heartbeatIntervalMs: 100,
        heartbeatLiveness: 10,
      }),
    );
    const moves: FailoverEvent[] = [];
    const client = new MdpClient(endpoints, {
      timeoutMs: 5000,
      onFailover: (event) => moves.push(event),
    });
    closables.push(client);
    await waitFor(() => backup.server.broker.services().length === 1, {
      what: "the worker at the backup",
    });
    assert.equal(dec.decode((await client.request("echo", ["before"]))[0]), "before");
    await primary.close();
    primaryClosed = true;
    // Sent before the client sees the connection end, a request would go down with it.
    await waitFor(() => moves.length === 1, { what: "the client to leave the primary" });
    assert.equal(dec.decode((await client.request("echo", ["after"]))[0]), "after");
    assert.equal(backup.pair?.fsm.state, "active");
    // Refused while the backup's peer was not yet silent long enough, it asked the backup
    // again rather than going back to the broker it had just lost.
    assert.deepEqual(moves, [{
      from: primary.endpoint,
      to: backup.endpoint,
      reason: "connection lost",
    }]);
  } finally {
    for (const closable of closables.reverse()) await closable.close();
    await backup.close();
    if (!primaryClosed) await primary.close();
    await sharedPoller().idle();
  }
});

Deno.test("with CURVE the state channel admits only the pair's shared key: same key, the pair forms; another key, no report gets through", async () => {
  const pair = curveKeyPair();
  const stranger = curveKeyPair();
  for (const [backupKey, forms] of [[pair.secretKey, true], [stranger.secretKey, false]] as const) {
    const ports = pairPorts();
    // `--flag=value`: a Z85 key may begin with "-", which a separate argument reads as an option.
    const primary = await startPairBroker(ports, "primary", 100, [
      `--curve-secret-key=${pair.secretKey}`,
    ]);
    const backup = await startPairBroker(ports, "backup", 100, [`--curve-secret-key=${backupKey}`]);
    try {
      if (forms) {
        await waitFor(
          () => primary.pair?.fsm.state === "active" && backup.pair?.fsm.state === "passive",
          { what: "the pair to form over CURVE" },
        );
      } else {
        // Each side's listener refuses the other's connection, so no report is ever read.
        const refused = async (broker: typeof primary) =>
          (await broker.registry.getSingleMetric("plantd_curve_refused_total")?.get())?.values
            .some((v) => v.labels.endpoint === "pair" && v.value > 0) === true;
        await waitFor(async () => await refused(primary) && await refused(backup), {
          what: "both state channels refusing the other key",
        });
        assert.equal(primary.pair?.fsm.peerHeardAt, undefined, "the primary heard no report");
        assert.equal(backup.pair?.fsm.peerHeardAt, undefined, "the backup heard no report");
        assert.equal(backup.pair?.fsm.state, "backup");
      }
    } finally {
      await backup.close();
      await primary.close();
      await sharedPoller().idle();
    }
  }
});

Deno.test("no phantom on failover: a request written to a broker that then dies is never sent to the next one", async () => {
  await withBroker({}, async (server, track) => {
    const seen: string[] = [];
    track(
      new MdpWorker(server.endpoint, "svc", (body) => {
        seen.push(dec.decode(body[0]));
        return body;
      }),
    );
    // The first broker: a raw ROUTER that takes the request and dies without answering.
    const first = `tcp://127.0.0.1:${freePort()}`;
    const router = new NativeSocket(ZMQ_ROUTER, { linger: 0 });
    router.attach(first, "bind", "test");
    const received: Frames[] = [];
    const loop = router.drain((frames) => received.push(frames));
    const moves: FailoverEvent[] = [];
    const client = track(
      new MdpClient([first, server.endpoint], {
        connectTimeoutMs: 5000,
        // No mmi.broker question first: the first message the raw ROUTER takes is the request.
        extensions: "on",
        onFailover: (event) => moves.push(event),
      }),
    );
    try {
      const written = client.request("svc", ["written"], { timeoutMs: 1500 });
      await waitFor(() => received.length === 1, { what: "the request at the first broker" });
      router.close();
      await loop;
      await waitFor(() => moves.length === 1, { what: "the client to move on" });
      assert.equal(moves[0]!.reason, "connection lost");
      // The caller is told at its deadline; the second broker never sees the request.
      await assert.rejects(written, MdpTimeoutError);
      const [fresh] = await client.request("svc", ["fresh"], { timeoutMs: 5000 });
      assert.equal(dec.decode(fresh), "fresh");
      assert.deepEqual(seen, ["fresh"], "the written request was not sent again");
    } finally {
      router.close();
      await loop;
    }
  });
});

Deno.test("a worker given both endpoints registers with both brokers and stays connected while one is down", async () => {
  // Heartbeats every tick: a loaded machine must not make the worker give a broker up.
  const brokerOptions = { heartbeatIntervalMs: 100, tickMs: 20 };
  await withBroker(brokerOptions, async (server, track) => {
    const dead = `tcp://127.0.0.1:${freePort()}`;
    const worker = track(
      new MdpWorker([server.endpoint, dead], "both", (body) => body, {
        heartbeatIntervalMs: 100,
        heartbeatLiveness: 10,
        reconnectMs: 100,
        concurrency: 2,
      }),
    );
    await waitFor(() => worker.connected, { what: "the worker connected to the live broker" });
    assert.deepEqual(worker.connectedEndpoints, [server.endpoint]);
    assert.equal(server.broker.services()[0]?.workers, 2, "concurrency per broker");
    await withBroker({ ...brokerOptions, endpoint: dead }, async (second) => {
      await waitFor(() => second.broker.services()[0]?.workers === 2, {
        timeoutMs: 10_000,
        what: "the worker registered at the second broker too",
      });
      await waitFor(() => worker.connectedEndpoints.length === 2, {
        what: "the worker connected to both brokers",
      });
    });
  });
});

Deno.test("the gateway and the state worker given a pair's endpoints serve through the active broker", async () => {
  const ports = pairPorts();
  const primary = await startPairBroker(ports, "primary");
  const backup = await startPairBroker(ports, "backup");
  const dir = await Deno.makeTempDir({ prefix: "ha-gateway-" });
  const parts: Array<{ close(): Promise<unknown> }> = [];
  try {
    await waitFor(
      () => primary.pair?.fsm.state === "active" && backup.pair?.fsm.state === "passive",
      { what: "primary active, backup passive" },
    );
    // The passive broker first: both must find the active one.
    const endpoints = [backup.endpoint, primary.endpoint];
    parts.push(
      await startState(
        {
          ...loadConfig(stateConfig, { args: [], env: {} }),
          db: `${dir}/state.db`,
          broker_endpoint: endpoints,
          health_port: 0,
          heartbeat_interval_ms: 200,
          heartbeat_liveness: 10,
          bus_endpoint: "",
        },
        undefined,
        new Registry(),
      ),
    );
    const gateway = await startGateway(
      {
        ...loadConfig(gatewayConfig, {
          args: ["--broker-endpoint", endpoints.join(",")],
          env: {},
        }),
        port: 0,
        buses: {},
        publish_buses: {},
        auth_db: `${dir}/auth.db`,
      },
      () => [],
      new Registry(),
    );
    parts.push(gateway);
    await waitFor(async () => {
      const response = await fetch(`${gateway.url}/api/state/ha/k1`, {
        method: "PUT",
        headers: { "content-type": "text/plain" },
        body: "v1",
      });
      await response.body?.cancel();
      return response.ok;
    }, { timeoutMs: 10_000, intervalMs: 100, what: "a write through the gateway" });
    const read = await (await fetch(`${gateway.url}/api/state/ha/k1`)).json();
    assert.equal(read.value, "v1");
    assert.equal(backup.server.broker.services().length, 1, "the state worker is at both brokers");
  } finally {
    for (const part of parts.reverse()) await part.close();
    await backup.close();
    await primary.close();
    await sharedPoller().idle();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plant --broker takes a pair's endpoints separated by a comma and finds the one that serves", async () => {
  await withBroker({}, async (server, track) => {
    track(startEchoWorker(server.endpoint));
    const dead = `tcp://127.0.0.1:${freePort()}`;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "cli/main.ts", "--broker", `${dead},${server.endpoint}`, "echo", "hi"],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = dec.decode(output.stdout);
    assert.equal(output.code, 0, `${stdout}${dec.decode(output.stderr)}`);
    assert.match(stdout, /^hi /);
  });
});
