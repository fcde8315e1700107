/**
 * `plant` end to end: the real CLI in a subprocess (`deno run -A
 * cli/main.ts`) against a real system on random ports (tests/_system.ts),
 * through the gateway and straight to the broker and the buses. Every
 * command's output, `--json` and exit codes, success and failure.
 */
import assert from "node:assert/strict";
import { Bus } from "../bus/bus.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { waitFor } from "../tests/_helpers.ts";
import { openLibsqlWriter } from "../metrics/libsql.ts";
import { startSystem, type System } from "../tests/_system.ts";
import { tokenWith, withSecuredSystem } from "../tests/_auth.ts";
import { assertFails, assertOk, childEnv, json, plant, ROOT, run, Streaming } from "./_plant.ts";

/** A TCP port nothing listens on (bound, then released). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function withSystem(body: (system: System) => Promise<void>): Promise<void> {
  const system = await startSystem();
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

Deno.test("plant: help, version and bad command lines exit 2 with one line", async () => {
  const help = await plant(["--help"]);
  assertOk(help);
  for (const command of ["echo", "services", "call", "health", "sub", "pub", "state get"]) {
    assert.match(help.stdout, new RegExp(`\\n  ${command}`));
  }
  const stateHelp = await plant(["state", "set", "--help"]);
  assertOk(stateHelp);
  assert.match(stateHelp.stdout, /usage: plant state set KEY VALUE/);
  assert.match(stateHelp.stdout, /--service SCOPE/);
  const version = json(await plant(["--version", "--json"]));
  assert.equal(version.deno, Deno.version.deno);

  assertFails(await plant([]), 2, /no command given/);
  assertFails(await plant(["frobnicate"]), 2, /unknown command 'frobnicate'/);
  // A group's --help lists its subcommands (#21: exited 2).
  for (const group of ["state", "dlq", "profile"]) {
    const groupHelp = await plant([group, "--help"]);
    assertOk(groupHelp);
    assert.match(groupHelp.stdout, new RegExp(`usage: plant ${group} <subcommand>`));
  }
  assert.match((await plant(["state", "-h"])).stdout, /\n {2}state list-scopes /);
  assertFails(await plant(["state"]), 2, /'state' needs a subcommand: get, set/);
  assertFails(await plant(["state", "fetch"]), 2, /unknown command 'state fetch'/);
  assertFails(await plant(["state", "get"]), 2, /state get: expects KEY, got none/);
  assertFails(await plant(["echo", "a", "b"]), 2, /echo: expects MESSAGE, got 'a' 'b'/);
  // Every "unknown" names the valid choices (#21).
  assertFails(
    await plant(["services", "--count", "3"]),
    2,
    /'--count' does not apply to 'services' \(it takes --gateway, --token/,
  );
  assertFails(
    await plant(["sub", "metric", "--nope"]),
    2,
    /Unknown option '--nope' \('sub' takes --endpoint, --count, --gateway/,
  );
  assertFails(await plant(["--nope"]), 2, /Unknown option '--nope' \(options: --gateway/);
  assertFails(await plant(["--timeout", "soon", "services"]), 2, /--timeout expects a positive/);
  assertFails(
    await plant(["services"], { PLANTD_CLI_TIMEOUT_MS: "-1" }),
    2,
    /PLANTD_CLI_TIMEOUT_MS expects a positive/,
  );
  assertFails(
    await plant(["--gateway", "http://a", "--broker", "tcp://b:1", "services"]),
    2,
    /--gateway or --broker, not both/,
  );
  assertFails(await plant(["--broker", "localhost:9797", "services"]), 2, /bad --broker/);
  assertFails(await plant(["--gateway", "ftp://x", "services"]), 2, /bad gateway URL/);
  assertFails(
    await plant(["--broker", "tcp://127.0.0.1:1", "--dialect", "mdp03", "services"]),
    2,
    /--dialect expects one of plantd, mdp01, mdp02, got 'mdp03'/,
  );
  assertFails(
    await plant(["services"], { PLANTD_CLI_BROKER: "tcp://127.0.0.1:1", PLANTD_CLI_DIALECT: "x" }),
    2,
    /--dialect expects one of/,
  );
  assertFails(await plant(["--dialect", "mdp01", "services"]), 2, /--dialect applies to --broker/);
  assertFails(await plant(["call", "svc", "op", "{nope"]), 2, /JSON argument is not valid JSON/);
  assertFails(
    await plant(["--broker", "tcp://127.0.0.1:1", "sub", "custom"]),
    2,
    /no default endpoint for bus 'custom': give --endpoint/,
  );
  // --json changes nothing about errors: stderr, one line, no stdout.
  const failed = await plant(["--json", "state", "get"]);
  assertFails(failed, 2, /expects KEY/);
  assert.equal(failed.stdout, "");
});

Deno.test("plant: an unreachable gateway, broker or bus exits 3", async () => {
  const port = closedPort();
  const gateway = `http://127.0.0.1:${port}`;
  for (const args of [["services"], ["health"], ["state", "list-scopes"], ["echo", "x"]]) {
    assertFails(
      await plant(["--gateway", gateway, ...args]),
      3,
      new RegExp(`cannot reach the gateway at ${gateway}: connection refused`),
    );
  }
  // The environment names the gateway too.
  assertFails(await plant(["services"], { PLANTD_CLI_GATEWAY: gateway }), 3, /connection refused/);
  assertFails(await plant(["sub", "metric", "--gateway", gateway]), 3, /cannot reach the gateway/);
  const broker = `tcp://127.0.0.1:${port}`;
  for (
    const args of [["services"], ["state", "get", "k", "-s", "p"], ["call", "x", "y"], ["health"]]
  ) {
    assertFails(
      await plant(["--broker", broker, ...args]),
      3,
      new RegExp(`cannot reach the broker at ${broker}: connection refused`),
    );
  }
  assertFails(await plant(["services"], { PLANTD_CLI_BROKER: broker }), 3, /reach the broker/);
  assertFails(
    await plant(["pub", "metric", "t", "p", "--endpoint", broker]),
    3,
    /cannot reach the bus 'metric' frontend/,
  );
  assertFails(
    await plant(["sub", "metric", "--endpoint", broker]),
    3,
    /cannot reach the bus 'metric' backend/,
  );
  assertFails(
    await plant(["health", "--url", gateway]),
    3,
    /cannot reach the health server at/,
  );
});

/** How a scenario reaches the system: flags, or the environment. */
interface Via {
  args: string[];
  env: Record<string, string>;
}

/** The same scenario through the gateway and straight to the broker. */
async function stateScenario(system: System, via: Via): Promise<void> {
  const mode = via.args;
  const plant = (args: string[]) => run(args, via.env);
  const scope = ["--service", "plant"];
  let r = await plant([...mode, "state", "set", "setpoint", "42", ...scope]);
  assertOk(r);
  assert.match(r.stdout, /^set plant setpoint \(revision 1\)\n$/);
  const set = json(await plant([...mode, "--json", "state", "set", "mode", "auto", ...scope]));
  assert.deepEqual(set, { scope: "plant", key: "mode", value: "auto", revision: 1 });
  // A value starting with "-" after "--".
  assertOk(await plant([...mode, "state", "set", "--scope", "plant", "offset", "--", "-5"]));

  r = await plant([...mode, "state", "get", "setpoint", "-s", "plant"]);
  assertOk(r);
  const [header, row] = r.stdout.trimEnd().split("\n");
  assert.match(header!, /^SCOPE\s+KEY\s+VALUE\s+REVISION\s+UPDATED$/);
  assert.match(row!, /^plant\s+setpoint\s+42\s+1\s+\d{4}-\d\d-\d\dT/);
  const entry = json(await plant([...mode, "state", "get", "offset", ...scope, "--json"]));
  assert.equal(entry.value, "-5");
  assert.equal(entry.revision, 1);
  assert.equal(typeof entry.updated_at, "number");

  r = await plant([...mode, "state", "list", ...scope]);
  assertOk(r);
  assert.deepEqual(r.stdout.trimEnd().split("\n"), ["KEY", "mode", "offset", "setpoint"]);
  assert.deepEqual(json(await plant([...mode, "--json", "state", "list", "plant"])).keys, [
    "mode",
    "offset",
    "setpoint",
  ]);

  assertOk(await plant([...mode, "state", "create-scope", "empty"]));
  r = await plant([...mode, "state", "list-scopes"]);
  assertOk(r);
  assert.deepEqual(r.stdout.trimEnd().split("\n"), ["SCOPE", "empty", "plant"]);
  r = await plant([...mode, "state", "list", "--service", "empty"]);
  assert.equal(r.stdout, "no keys in scope 'empty'\n");
  assert.deepEqual(json(await plant([...mode, "state", "list-scopes", "--json"])), {
    count: 2,
    scopes: ["empty", "plant"],
  });

  // Errors: missing key or scope, existing scope (exit 1).
  assertFails(
    await plant([...mode, "state", "get", "nope", ...scope]),
    1,
    /^plant: state get: Key 'nope' does not exist in scope 'plant'\n$/,
  );
  assertFails(
    await plant([...mode, "state", "list", "ghost"]),
    1,
    /state list: Scope 'ghost' does not exist/,
  );
  assertFails(
    await plant([...mode, "state", "create-scope", "plant"]),
    1,
    /Scope 'plant' already exists/,
  );
  assertFails(
    await plant([...mode, "state", "delete-scope", "--service", "ghost"]),
    1,
    /Scope 'ghost' does not exist/,
  );

  assert.deepEqual(json(await plant([...mode, "--json", "state", "delete", "mode", ...scope])), {
    scope: "plant",
    key: "mode",
    status: "deleted",
  });
  assertFails(
    await plant([...mode, "state", "delete", "mode", ...scope]),
    1,
    /state delete: Key 'mode' does not exist in scope 'plant'/,
  );
  // The key's history: its set and its delete, newest first, as a table and as JSON.
  r = await plant([...mode, "state", "history", "mode", ...scope]);
  assertOk(r);
  const lines = r.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^REVISION\s+OP\s+WHEN\s+WHO\s+OLD\s+NEW$/);
  assert.match(lines[1]!, /^1\s+delete\s+\d{4}-\d\d-\d\dT\S+\s+anonymous\s+auto\s+-$/);
  assert.match(lines[2]!, /^1\s+set\s+\S+\s+anonymous\s+-\s+auto$/);
  const history = json(await plant([...mode, "--json", "state", "history", "mode", ...scope]));
  assert.deepEqual(
    history.entries.map((e: Record<string, unknown>) => [e.op, e.old_value, e.new_value]),
    [["delete", "auto", null], ["set", null, "auto"]],
  );
  r = await plant([...mode, "state", "delete-scope", "plant"]);
  assertOk(r);
  assert.equal(r.stdout, "deleted scope plant\n");
  assertOk(await plant([...mode, "state", "delete-scope", "empty"]));
  assert.equal((await plant([...mode, "state", "list-scopes"])).stdout, "no scopes\n");
  // No scope given and none in a profile: not Go plantd's org.plantd.Client, which
  // exists nowhere unless made (#21), but a usage error saying how to give one.
  for (const args of [["state", "get", "k"], ["state", "set", "k", "v"], ["state", "list"]]) {
    assertFails(
      await plant([...mode, ...args]),
      2,
      /no state scope: give --service SCOPE \(or PLANTD_CLI_SCOPE\), or set the profile's default with plant profile set scope SCOPE/,
    );
  }
  assertOk(await run([...mode, "state", "set", "k", "v"], { ...via.env, PLANTD_CLI_SCOPE: "env" }));
  assert.equal(
    json(
      await run([...mode, "state", "get", "k", "--json"], { ...via.env, PLANTD_CLI_SCOPE: "env" }),
    )
      .scope,
    "env",
  );
  assertOk(await plant([...mode, "state", "delete-scope", "env"]));

  // No state worker: exit 3, whatever the command.
  await system.stopState();
  try {
    for (
      const args of [
        ["state", "get", "k", "-s", "p"],
        ["state", "list-scopes"],
        ["state", "set", "a", "b", "-s", "p"],
      ]
    ) {
      assertFails(
        await plant([...mode, ...args]),
        3,
        /No worker serves 'org.plantd.State'|no reply|did not answer/,
      );
    }
  } finally {
    await system.startState();
  }
}

/** services, echo, call and health through either way in. */
async function servicesScenario(system: System, via: Via): Promise<void> {
  const mode = via.args;
  const plant = (args: string[]) => run(args, via.env);
  await waitFor(async () => (await plant([...mode, "services"])).stdout.includes("State"), {
    what: "the state service listed",
  });
  let r = await plant([...mode, "services"]);
  const lines = r.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^SERVICE\s+WORKERS\s+IDLE\s+BUSY\s+QUEUED$/);
  assert.ok(lines.some((l) => /^org\.plantd\.module\.Echo\s+1\s+\d+\s+\d+\s+0$/.test(l)), r.stdout);
  assert.ok(lines.some((l) => /^org\.plantd\.State\s+8\s+/.test(l)), r.stdout);
  const services = json(await plant([...mode, "--json", "services"]));
  assert.deepEqual(
    services.services.map((s: { name: string }) => s.name),
    ["org.plantd.module.Echo", "org.plantd.State"],
  );
  // Named ones only; the listing is the broker's own (no note).
  r = await plant([...mode, "--json", "services", "org.plantd.State", "org.plantd.Nobody"]);
  assert.deepEqual(JSON.parse(r.stdout).services.map((s: { name: string }) => s.name), [
    "org.plantd.State",
  ]);
  assert.equal(r.stderr, "");

  r = await plant([...mode, "echo", "hello plant"]);
  assertOk(r);
  assert.match(r.stdout, /^hello plant {2}\(\d+(\.\d)? ms\)\n$/);
  const echo = json(await plant([...mode, "echo", "hi", "--json"]));
  assert.deepEqual(echo.reply, { service: "org.plantd.Client", message: "hi" });
  assert.equal(echo.service, "org.plantd.module.Echo");

  r = await plant([...mode, "call", "org.plantd.State", "list-scopes", "{}"]);
  assertOk(r);
  assert.deepEqual(JSON.parse(r.stdout), { success: true, data: { count: 0, scopes: [] } });
  const called = json(await plant([...mode, "--json", "call", "org.plantd.module.Echo", "echo"]));
  assert.deepEqual(called, {
    service: "org.plantd.module.Echo",
    frames: [{ text: "{}", json: {} }],
  });
  // The service's own error reply: printed, and exit 1.
  r = await plant([...mode, "call", "org.plantd.State", "list-keys", '{"service":"ghost"}']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /"success": false/);
  assert.match(r.stderr, /call: org.plantd.State answered with an error: Scope 'ghost' does not/);
  assertFails(
    await plant([...mode, "call", "org.plantd.Nobody", "op", "{}"]),
    3,
    /No worker serves 'org.plantd.Nobody'/,
  );

  r = await plant([...mode, "health"]);
  assertOk(r);
  assert.match(r.stdout, /^CHECK\s+STATUS\s+SINCE\s+OUTPUT\n/);
  assert.match(r.stdout, /\nstate_store\s+UP\s+/);
  assert.match(r.stdout, /status: UP\n$/);
  const health = json(await plant([...mode, "health", "--json"]));
  assert.equal(health.status, "UP");
  assert.ok(health.checks.some((c: { name: string }) => c.name === "broker_connection"));

  await system.stopState();
  try {
    await waitFor(async () => (await plant([...mode, "health"])).code === 1, {
      timeoutMs: 10_000,
      what: "health DOWN without the state worker",
    });
    r = await plant([...mode, "health", "--json"]);
    assert.equal(r.code, 1);
    assert.equal(JSON.parse(r.stdout).status, "DOWN");
    assert.match(r.stderr, /health: system is DOWN: state_worker \(no org.plantd.State worker/);
  } finally {
    await system.startState();
  }
}

Deno.test("plant through the gateway (--gateway): services, echo, call, health", async () => {
  await withSystem((system) =>
    servicesScenario(system, { args: ["--gateway", system.url], env: {} })
  );
});

Deno.test("plant straight to the broker (PLANTD_CLI_BROKER): services, echo, call, health", async () => {
  await withSystem((system) =>
    servicesScenario(system, { args: [], env: { PLANTD_CLI_BROKER: system.brokerEndpoint } })
  );
});

Deno.test("plant state through the gateway (PLANTD_CLI_GATEWAY)", async () => {
  await withSystem((system) =>
    stateScenario(system, { args: [], env: { PLANTD_CLI_GATEWAY: system.url } })
  );
});

Deno.test("plant state straight to the broker (--broker, over PLANTD_CLI_GATEWAY)", async () => {
  await withSystem((system) =>
    // The flag wins over the environment.
    stateScenario(system, {
      args: ["--broker", system.brokerEndpoint],
      env: { PLANTD_CLI_GATEWAY: "http://127.0.0.1:1" },
    })
  );
});

Deno.test("plant call times out with exit 3 both ways; Ctrl-C interrupts it with 130", async () => {
  await withSystem(async (system) => {
    let calls = 0;
    const stuck = new MdpWorker(system.brokerEndpoint, "stuck", () => {
      calls++;
      return new Promise(() => {});
    }, { heartbeatIntervalMs: 200, concurrency: 8 });
    try {
      await waitFor(
        async () => (await plant(["--gateway", system.url, "services"])).stdout.includes("stuck"),
        { what: "stuck worker" },
      );
      assertFails(
        await plant(["--gateway", system.url, "--timeout", "300", "call", "stuck", "op"]),
        3,
        /call: Request to 'stuck' got no reply within 300 ms/,
      );
      assertFails(
        await plant(["--broker", system.brokerEndpoint, "--timeout", "300", "call", "stuck", "op"]),
        3,
        /call: Request to 'stuck' got no reply within 300 ms/,
      );
      // Ctrl-C while waiting interrupts the command: exit 130.
      const waiting = new Streaming(["--broker", system.brokerEndpoint, "call", "stuck", "op"]);
      const before = calls;
      await waitFor(() => calls > before, { timeoutMs: 10_000, what: "the request in flight" });
      waiting.child.kill("SIGINT");
      const r = await waiting.result();
      assert.equal(r.code, 130);
      assert.equal(r.stderr, "plant: call: interrupted\n");
    } finally {
      await stuck.close();
    }
  });
});

Deno.test("plant pub keeps the whole topic by default: a subscriber to a shorter prefix gets alarm.pump, not alarm. + pumpdry", async () => {
  const system = await startSystem();
  try {
    const event = system.frontends.event!;
    const sub = new Streaming(["--gateway", system.url, "sub", "event", "alarm.", "-n", "2"]);
    await sub.subscribed();
    assertOk(await plant(["pub", "event", "alarm.pump", "dry", "--endpoint", event]));
    // Go plantd's single frame on request: split at the prefix the subscriber knows.
    assertOk(await plant(["pub", "event", "alarm.pump", "dry", "--single", "--endpoint", event]));
    const r = await sub.result();
    assertOk(r);
    assert.equal(r.stdout, "alarm.pump dry\nalarm. pumpdry\n");
  } finally {
    await system.stop();
  }
  // The same with --broker: plant sub on the bus itself, no gateway in between.
  const bus = Bus.start({
    name: "event",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  try {
    const broker = ["--broker", "tcp://127.0.0.1:1"];
    const sub = new Streaming([
      ...broker,
      "sub",
      "event",
      "alarm.",
      "-n",
      "2",
      "--endpoint",
      bus.backend,
    ]);
    await sub.subscribed();
    // --wait: until the subscription has come through the bus, whatever the machine's load.
    const pub = [
      ...broker,
      "pub",
      "event",
      "alarm.pump",
      "dry",
      "--endpoint",
      bus.frontend,
      "--wait",
      "30000",
    ];
    assertOk(await plant(pub));
    assertOk(await plant([...pub, "--single"]));
    const r = await sub.result();
    assertOk(r);
    assert.equal(r.stdout, "alarm.pump dry\nalarm. pumpdry\n");
  } finally {
    await bus.close();
    await sharedPoller().idle();
  }
});

Deno.test("plant sub through the gateway prints what plant pub publishes", async () => {
  const system = await startSystem();
  let stopped = false;
  try {
    const metric = system.frontends.metric!;
    const sub = new Streaming(["--gateway", system.url, "sub", "metric", "org.plantd.", "-n", "2"]);
    await sub.subscribed();
    let r = await plant([
      "pub",
      "metric",
      "org.plantd.Metric",
      '{"value":1.5}',
      "--endpoint",
      metric,
    ]);
    assertOk(r);
    assert.match(r.stdout, /^published 30 bytes on bus 'metric' topic 'org.plantd.Metric' at tcp/);
    const published = json(
      await plant([
        "--json",
        "pub",
        "metric",
        "org.plantd.Other",
        "two",
        "--frames",
        "--endpoint",
        metric,
      ]),
    );
    assert.equal(published.subscribed, true);
    assert.equal(published.bytes, "org.plantd.Other".length + 3);
    r = await sub.result();
    assertOk(r);
    // [topic, payload] (the default, and --frames) keeps each topic whole.
    assert.equal(r.stdout, 'org.plantd.Metric {"value":1.5}\norg.plantd.Other two\n');

    const jsonSub = new Streaming([
      "--gateway",
      system.url,
      "--json",
      "sub",
      "event",
      "",
      "-n",
      "1",
    ]);
    await jsonSub.subscribed();
    // [topic, payload]: a single frame would be split only at a known envelope or prefix.
    const event = system.frontends.event!;
    assertOk(await plant(["pub", "event", "alarm", "\u00ff", "--frames", "--endpoint", event]));
    r = await jsonSub.result();
    assert.deepEqual(JSON.parse(r.stdout), {
      bus: "event",
      topic: "alarm",
      payload: "\u00ff",
      encoding: "text",
    });

    assertFails(
      await plant(["--gateway", system.url, "sub", "nobus"]),
      1,
      /sub: Unknown bus 'nobus' \(known: state, event, metric\)/,
    );

    // Ctrl-C ends a subscription normally.
    const forever = new Streaming(["--gateway", system.url, "sub", "state"]);
    await forever.subscribed();
    forever.child.kill("SIGINT");
    assert.equal((await forever.result()).code, 0);

    // The gateway going away ends it with exit 3.
    const orphan = new Streaming(["--gateway", system.url, "sub", "metric"]);
    await orphan.subscribed();
    stopped = true;
    await system.stop();
    r = await orphan.result();
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      /\nplant: sub: the gateway closed the connection: .*shutting down \(1001\)\n$/,
    );
  } finally {
    if (!stopped) await system.stop();
  }
});

Deno.test("plant sub and pub straight on a bus, with and without subscribers", async () => {
  const bus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  try {
    const sub = new Streaming([
      "--broker",
      "tcp://127.0.0.1:1",
      "--json",
      "sub",
      "metric",
      "org.plantd.Metric",
      "--count",
      "1",
      "--endpoint",
      bus.backend,
    ]);
    await sub.subscribed();
    assert.match(
      sub.stderr,
      new RegExp(`subscribed to bus 'metric' prefix 'org.plantd.Metric' at ${bus.backend}`),
    );
    // Not matching the prefix: no subscriber, so ZeroMQ drops it (exit 0, a note).
    let r = await plant([
      "pub",
      "metric",
      "other",
      "x",
      "--endpoint",
      bus.frontend,
      "--wait",
      "200",
    ]);
    assertOk(r);
    assert.match(
      r.stderr,
      /no subscriber for 'other' on bus 'metric' within 200 ms: the message was dropped/,
    );
    const dropped = json(
      await plant([
        "pub",
        "metric",
        "other",
        "x",
        "--endpoint",
        bus.frontend,
        "--wait",
        "100",
        "--json",
      ]),
    );
    assert.equal(dropped.subscribed, false);
    r = await plant(["pub", "metric", "org.plantd.Metric", '{"v":2}', "--endpoint", bus.frontend]);
    assertOk(r);
    assert.equal(r.stderr, "");
    r = await sub.result();
    assertOk(r);
    assert.deepEqual(JSON.parse(r.stdout), {
      bus: "metric",
      topic: "org.plantd.Metric",
      payload: '{"v":2}',
      encoding: "text",
    });
  } finally {
    await bus.close();
    await sharedPoller().idle();
  }
});

Deno.test("deno task cli runs plant", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "cli", "--version"],
    cwd: ROOT,
    env: childEnv(),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(new TextDecoder().decode(output.stdout), /^plant \d+\.\d+\.\d+ \(deno /);
});

Deno.test("plant against a secured gateway: refused without a token, served with --token or PLANTD_CLI_TOKEN", async () => {
  await withSecuredSystem(async (system) => {
    const env = { PLANTD_CLI_GATEWAY: system.url, PLANTD_CLI_SCOPE: "p" };
    const refused = await plant(["state", "get", "k"], env);
    assertFails(refused, 1, /Authentication required/);
    const writer = await tokenWith(["state:*"]);
    assertOk(await plant(["--token", writer, "state", "set", "k", "v"], env));
    const got = json(
      await plant(["--json", "state", "get", "k"], { ...env, PLANTD_CLI_TOKEN: writer }),
    );
    assert.equal(got.value, "v");
    const reader = await tokenWith(["state:data:read"]);
    assertFails(
      await plant(["state", "set", "k", "w"], { ...env, PLANTD_CLI_TOKEN: reader }),
      1,
      /Permission 'state:data:write' required/,
    );
  });
});

Deno.test("plant events lists the gateway's event history by device, severity and --since", async () => {
  const dir = await Deno.makeTempDir();
  const db = `${dir}/metrics.db`;
  const writer = await openLibsqlWriter(db);
  const now = Date.now();
  const event = (minutesAgo: number, device: string, severity: string, message: string) => ({
    time: now - minutesAgo * 60_000,
    bus: "event",
    topic: `alarm.${device}.temp`,
    device,
    severity,
    kind: "alarm",
    payload: JSON.stringify({ kind: "alarm", state: "raised", device, severity, message }),
  });
  await writer.writeEvents([
    event(120, "pump1", "critical", "two hours ago"),
    event(30, "pump1", "critical", "half an hour ago"),
    event(20, "pump1", "warning", "only a warning"),
    event(10, "pump2", "critical", "another device"),
  ]);
  await writer.close();
  const system = await startSystem({ gateway: { metrics_db: db } });
  try {
    const args = ["--gateway", system.url, "events", "--device", "pump1", "--severity", "critical"];
    const recent = json(await plant([...args, "--since", "1h", "--json"]));
    assert.deepEqual(
      recent.events.map((e: { payload: { message: string } }) => e.payload.message),
      [
        "half an hour ago",
      ],
    );
    const all = json(await plant([...args, "--json"]));
    assert.equal(all.count, 2);
    const table = await plant([...args, "--limit", "1"]);
    assertOk(table);
    assert.match(table.stdout, /TIME +SEVERITY +DEVICE +TOPIC +EVENT/);
    assert.match(table.stdout, /critical +pump1 +alarm\.pump1\.temp +raised: half an hour ago/);
    assert.doesNotMatch(table.stdout, /two hours ago/);
    assert.match((await plant(["events", "--help"])).stdout, /--since DURATION/);
    assertFails(await plant([...args, "--since", "soon"]), 2, /--since expects a duration/);
    assertFails(
      await plant(["--broker", "tcp://127.0.0.1:1", "events"]),
      2,
      /read from the gateway/,
    );
  } finally {
    await system.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
