/**
 * The interop matrix of docs/interop.md, against brokers nobody here wrote to
 * our code's liking: strict RFC 7 and RFC 18 brokers in Python
 * (tests/peers/mdp_broker.py, with and without RFC 8 MMI) that check every
 * frame against the RFC's table and report any invalid message. Our client,
 * our workers (fixed dialects and "auto") and our CLI against each; the
 * reverse direction, Python peers against our broker, is tests/interop_test.ts
 * and tests/dropped_messages_test.ts.
 *
 * Every cell either works, with the broker seeing no invalid message, or is
 * a refusal with a clear error, bounded by a timeout the test fails on, and
 * the broker still running and exiting cleanly afterwards.
 *
 * python3-zmq is required: without it these tests fail, they do not skip.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { gatewayConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpTimeoutError } from "../mdp/errors.ts";
import type { Dialect } from "../mdp/protocol.ts";
import { text } from "../mdp/protocol.ts";
import { MdpWorker, type WorkerEvent } from "../mdp/worker.ts";
import { startGateway } from "../roles/gateway.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { waitFor } from "./_helpers.ts";
import { plant } from "./_cli.ts";
import {
  hex,
  PythonBroker,
  PythonWorker,
  runPythonClient,
  runPythonClientRaw,
  type StrictBrokerKind,
} from "./_mdp_peers.ts";

const KINDS: readonly StrictBrokerKind[] = [
  { rfc: "7", mmi: true },
  { rfc: "7", mmi: false },
  { rfc: "18", mmi: true },
  { rfc: "18", mmi: false },
];
const DIALECT_OF: Record<StrictBrokerKind["rfc"], Dialect> = { "7": "mdp01", "18": "mdp02" };
const OTHERS: Record<StrictBrokerKind["rfc"], Dialect[]> = {
  "7": ["plantd", "mdp02"],
  "18": ["plantd", "mdp01"],
};
/** Broker heartbeats well inside what the workers below wait (their windows are 3 intervals). */
const BROKER_FLAGS = ["--heartbeat-ms", "100", "--liveness", "20"];
const WORKER = { heartbeatIntervalMs: 100, heartbeatLiveness: 3, reconnectMs: 50 };

function label(kind: StrictBrokerKind): string {
  return `a strict RFC ${kind.rfc} broker ${kind.mmi ? "with" : "without"} MMI`;
}

/**
 * A strict broker for `body`; afterwards it must still run and exit cleanly,
 * and (unless refusals are expected) have seen no invalid message at all.
 */
async function withStrictBroker(
  kind: StrictBrokerKind,
  body: (
    broker: PythonBroker,
    track: <T extends { close(): unknown }>(closable: T) => T,
  ) => Promise<void>,
  options: { refusals?: boolean } = {},
): Promise<void> {
  const broker = await PythonBroker.start(kind, BROKER_FLAGS);
  const closables: Array<{ close(): unknown }> = [];
  try {
    await body(broker, (closable) => {
      closables.push(closable);
      return closable;
    });
  } finally {
    for (const closable of closables.reverse()) {
      try {
        await closable.close();
      } catch {
        // keep closing the rest
      }
    }
  }
  assert.ok(broker.running, "the broker survived everything it was sent");
  await broker.stopCleanly();
  if (!options.refusals) {
    assert.deepEqual(broker.violations(), [], "the strict broker saw no invalid message");
  }
}

// ------------------------------------------------------------ our client and worker, same dialect

for (const kind of KINDS) {
  const dialect = DIALECT_OF[kind.rfc];
  Deno.test(`interop: our client (${dialect}) gets 1000/1000 replies from our worker (${dialect}) through ${label(kind)}, in plain framing; the broker sees no invalid frame`, async () => {
    await withStrictBroker(kind, async (broker, track) => {
      track(
        new MdpWorker(broker.endpoint, "ts.echo", async (body, context) => {
          if (text(body[0]!) === "stream") {
            await context.partial(["part-1"]);
            await context.partial(["part-2"]);
          }
          return body;
        }, { dialect, ...WORKER }),
      );
      await waitFor(() => broker.readyCount("ts.echo") === 1, { what: "our worker registered" });
      const client = track(
        new MdpClient(broker.endpoint, { dialect, timeoutMs: 10_000, probeTimeoutMs: 300 }),
      );
      const features = await client.features();
      assert.equal(features.framing, "plain", features.summary);
      assert.equal(features.mmi, kind.mmi, features.summary);

      const replies = await Promise.all(
        Array.from({ length: 1000 }, (_, i) => client.request("ts.echo", [`n${i}`, "x"])),
      );
      replies.forEach((reply, i) => assert.deepEqual(reply.map(text), [`n${i}`, "x"]));

      const streamed: Array<[boolean, string[]]> = [];
      for await (const r of client.stream("ts.echo", ["stream"])) {
        streamed.push([r.final, r.body.map(text)]);
      }
      // RFC 7 has one REPLY: the worker drops its partials there.
      assert.deepEqual(streamed, [
        ...(kind.rfc === "18"
          ? [[false, ["part-1"]], [false, ["part-2"]]] as Array<[boolean, string[]]>
          : []),
        [true, ["stream"]],
      ]);
    });
  });
}

// ------------------------------------------------------------ our client, another dialect

for (const kind of KINDS) {
  Deno.test(
    `interop: our client in a dialect ${label(kind)} does not speak (${
      OTHERS[kind.rfc].join(", ")
    }) is refused with a timeout naming the dialect; the broker drops its frames and carries on`,
    async () => {
      await withStrictBroker(kind, async (broker, track) => {
        const own = DIALECT_OF[kind.rfc];
        track(
          new MdpWorker(broker.endpoint, "ts.echo", (body) => body, { dialect: own, ...WORKER }),
        );
        await waitFor(() => broker.readyCount("ts.echo") === 1, { what: "our worker registered" });
        await Promise.all(OTHERS[kind.rfc].map(async (dialect) => {
          const client = track(
            new MdpClient(broker.endpoint, { dialect, timeoutMs: 1500, probeTimeoutMs: 300 }),
          );
          const error = await client.request("ts.echo", ["x"]).then(() => undefined, (e) => e);
          assert.ok(error instanceof MdpTimeoutError, `${dialect}: ${error}`);
          assert.match(error.message, new RegExp(`not the '${dialect}' dialect`));
        }));
        // Each one's probe and request were dropped as invalid: the broker read them and refused.
        const invalid = broker.violations().filter((e) => e.event === "invalid");
        assert.ok(invalid.length >= 2, JSON.stringify(broker.violations()));
        // And the client that speaks its dialect is still served.
        const good = track(new MdpClient(broker.endpoint, { dialect: own, probeTimeoutMs: 300 }));
        assert.deepEqual((await good.request("ts.echo", ["still"])).map(text), ["still"]);
      }, { refusals: true });
    },
  );
}

// ------------------------------------------------------------ our workers

for (const rfc of ["7", "18"] as const) {
  const kind: StrictBrokerKind = { rfc, mmi: false };
  const dialect = DIALECT_OF[rfc];
  Deno.test(`interop: our echo worker set to dialect auto finds ${dialect} at ${label(kind)} and serves a Python RFC ${rfc} client; its capacity is not announced there`, async () => {
    const events: WorkerEvent[] = [];
    await withStrictBroker(kind, async (broker, track) => {
      track(startEchoWorker(
        broker.endpoint,
        { dialect: "auto", capacity: 4, ...WORKER },
        (event) => events.push(event),
      ));
      await waitFor(
        () => events.some((e) => e.type === "dialect" && e.outcome === "confirmed"),
        { what: "the worker to find the broker's dialect", timeoutMs: 10_000 },
      );
      const found = events.find((e) => e.type === "dialect" && e.outcome === "confirmed");
      assert.equal(found?.type === "dialect" && found.dialect, dialect);
      const [reply] = await runPythonClient(broker.endpoint, dialect, ECHO_SERVICE, [
        "echo",
        "hi",
        "hex:00ff",
      ]);
      assert.deepEqual(reply?.body_hex, [hex("hi"), "00ff"]);
    }, { refusals: true });
    // Only the dialects tried before it were refused (each on its own connection).
    const silent = events.filter((e) => e.type === "dialect" && e.outcome === "silent");
    assert.deepEqual(
      silent.map((e) => e.type === "dialect" && e.dialect),
      rfc === "7" ? ["plantd"] : ["plantd", "mdp01"],
    );
  });

  Deno.test(`interop: ${label(kind)} refuses our worker in another fixed dialect and one announcing a capacity; neither is registered, the broker carries on`, async () => {
    await withStrictBroker(kind, async (broker, track) => {
      for (const other of OTHERS[rfc]) {
        track(
          new MdpWorker(broker.endpoint, `ts.${other}`, (b) => b, { dialect: other, ...WORKER }),
        );
      }
      track(
        new MdpWorker(broker.endpoint, "ts.capacity", (b) => b, {
          dialect,
          capacity: 4,
          ...WORKER,
        }),
      );
      await waitFor(
        () => new Set(broker.violations().map((e) => e.peer)).size >= OTHERS[rfc].length + 1,
        { what: "the broker to refuse each worker's READY" },
      );
      const reasons = broker.violations().filter((e) => e.event === "invalid").map((e) =>
        String(e.reason)
      );
      assert.ok(reasons.some((r) => /READY has \d frames/.test(r)), reasons.join("; "));
      assert.equal(broker.events.filter((e) => e.event === "ready").length, 0);
    }, { refusals: true });
  });
}

// ------------------------------------------------------------ the strict brokers themselves

for (const rfc of ["7", "18"] as const) {
  const kind: StrictBrokerKind = { rfc, mmi: true };
  const dialect = DIALECT_OF[rfc];
  Deno.test(`interop: ${label(kind)} serves independent Python RFC ${rfc} clients and workers (mdp_peer.py) and answers mmi.service 200/404 and other mmi.* 501`, async () => {
    await withStrictBroker(kind, async (broker, track) => {
      const worker = track(
        await PythonWorker.start(broker.endpoint, dialect, "py.echo", [
          "--partials",
          "1",
          "--heartbeat-ms",
          "100",
          "--liveness",
          "20",
        ]),
      );
      await waitFor(() => broker.readyCount("py.echo") === 1, { what: "python worker" });
      const events = await runPythonClient(broker.endpoint, dialect, "py.echo", ["a", "hex:00"]);
      assert.deepEqual(
        events.map((e) => [e.event, e.body_hex]),
        [
          ...(rfc === "18" ? [["partial", [hex("partial-1")]]] : []),
          ["reply", [hex("a"), "00"]],
        ],
      );
      const code = async (service: string, name: string) =>
        (await runPythonClient(broker.endpoint, dialect, service, [name]))[0]?.body;
      assert.deepEqual(await code("mmi.service", "py.echo"), ["200"]);
      assert.deepEqual(await code("mmi.service", "nobody"), ["404"]);
      assert.deepEqual(await code("mmi.workers", "py.echo"), ["501"]);
      // A plantd-framed client is not served: dropped as invalid, the client times out.
      const wrong = await runPythonClientRaw(broker.endpoint, "plantd", "py.echo", ["x"], 300);
      assert.equal(wrong.code, 3, JSON.stringify(wrong));
      assert.deepEqual(worker.errors(), []);
    }, { refusals: true });
  });
}

// ------------------------------------------------------------ the CLI

for (const kind of KINDS) {
  const dialect = DIALECT_OF[kind.rfc];
  Deno.test(
    `interop: plant --broker --dialect ${dialect} against ${
      label(kind)
    }: echo and call work, services ${
      kind.mmi ? "come from mmi.service" : "is refused with a clear message"
    }, health reads the state worker's absence`,
    async () => {
      await withStrictBroker(kind, async (broker, track) => {
        const echo = track(startEchoWorker(broker.endpoint, { dialect, ...WORKER }));
        await waitFor(() => broker.readyCount(ECHO_SERVICE) === 1, { what: "echo worker" });
        assert.ok(echo.connected !== undefined);
        const cli = ["--broker", broker.endpoint, "--dialect", dialect, "--timeout", "2000"];

        let r = await plant([...cli, "echo", "hello"]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^hello {2}\(\d/);
        r = await plant([...cli, "--json", "call", ECHO_SERVICE, "echo", '{"a":1}']);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(JSON.parse(r.stdout).frames, [{ text: '{"a":1}', json: { a: 1 } }]);

        r = await plant([...cli, "--json", "services"]);
        if (kind.mmi) {
          assert.equal(r.code, 0, r.stderr);
          const listed = JSON.parse(r.stdout);
          assert.deepEqual(listed.services, [
            { name: ECHO_SERVICE, workers: null, idle: null, busy: null, queued: null },
          ]);
          assert.match(r.stderr, /lists no services .* mmi\.service/);
          r = await plant([...cli, "call", "org.plantd.Nobody", "op"]);
          assert.equal(r.code, 3, r.stderr);
          assert.match(r.stderr, /No worker serves 'org.plantd.Nobody' \(mmi.service: 404\)/);
        } else {
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, /cannot list its services: .*did not answer mmi\.broker/);
          assert.match(r.stderr, /'plant call SERVICE OPERATION' still works/);
          r = await plant([...cli, "call", "mmi.service", "x"]);
          assert.equal(r.code, 1, r.stderr);
          assert.match(
            r.stderr,
            /does not answer mmi\.service: it is a broker that did not answer/,
          );
        }
        // Our broker's own service, asked of one that has none: refused at once, not queued.
        r = await plant([...cli, "call", "org.plantd.Broker", "services"]);
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /does not answer org\.plantd\.Broker: it is /);

        r = await plant([...cli, "--json", "health"]);
        assert.equal(r.code, 1, r.stderr);
        const health = JSON.parse(r.stdout);
        const status = (name: string) =>
          health.checks.find((c: { name: string }) => c.name === name)?.status;
        assert.equal(status("broker_connection"), "UP");
        assert.equal(status("state_worker"), "DOWN");
      });
    },
  );
}

for (const rfc of ["7", "18"] as const) {
  const kind: StrictBrokerKind = { rfc, mmi: true };
  Deno.test(`interop: plant --broker with the default plantd dialect against ${label(kind)} exits 3 naming the dialect, within its timeout`, async () => {
    await withStrictBroker(kind, async (broker) => {
      const r = await plant(["--broker", broker.endpoint, "--timeout", "1500", "call", "x", "y"]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /got no reply within 1500 ms.*not the 'plantd' dialect/);
    }, { refusals: true });
  });
}

// ------------------------------------------------------------ the gateway

for (const kind of [{ rfc: "7", mmi: true }, { rfc: "18", mmi: false }] as const) {
  const dialect = DIALECT_OF[kind.rfc];
  Deno.test(`interop: the gateway with broker_dialect ${dialect} answers 1000/1000 POST /api/services/.../echo through ${label(kind)}; broker_connection UP, no services listed`, async () => {
    await withStrictBroker(kind, async (broker, track) => {
      track(startEchoWorker(broker.endpoint, { dialect, ...WORKER }));
      await waitFor(() => broker.readyCount(ECHO_SERVICE) === 1, { what: "echo worker" });
      const dir = await Deno.makeTempDir();
      const gateway = await startGateway(
        {
          ...loadConfig(gatewayConfig, { args: [], env: {} }),
          port: 0,
          broker_endpoint: broker.endpoint,
          broker_dialect: dialect,
          buses: {},
          publish_buses: {},
          auth_db: `${dir}/auth.db`,
        },
        () => [],
        new Registry(),
      );
      try {
        const post = async (i: number) => {
          const response = await fetch(`${gateway.url}/api/services/${ECHO_SERVICE}/echo`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ i }),
          });
          const body = await response.json();
          assert.equal(response.status, 200, JSON.stringify(body));
          return body.frames[0].json.i;
        };
        const answered: number[] = [];
        for (let start = 0; start < 1000; start += 50) {
          const batch = Array.from({ length: 50 }, (_, k) => start + k);
          answered.push(...await Promise.all(batch.map(post)));
        }
        assert.deepEqual(answered, Array.from({ length: 1000 }, (_, i) => i));
        const services = await (await fetch(`${gateway.url}/api/services`)).json();
        assert.deepEqual(services.services, []);
        const health = await (await fetch(`${gateway.url}/healthz`)).json();
        const connection = health.checks.find((c: { name: string }) =>
          c.name === "broker_connection"
        );
        assert.equal(connection?.status, "UP", JSON.stringify(health));
      } finally {
        await gateway.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  });
}
