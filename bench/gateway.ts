/**
 * `deno task bench:gateway`: the gateway under load, next to its ceiling in
 * the same run.
 *
 * - HTTP: GET of a state key through gateway, broker and state worker (real
 *   components in child processes), and a bare Hono handler returning a
 *   constant; load from `wrk` (Debian package `wrk`), 64 connections.
 * - WebSocket fan-out: messages/s delivered from one bus topic to 1, 100 and
 *   1,000 subscribed sockets through the gateway, and from a bare Deno
 *   WebSocket broadcast to as many sockets. The sockets live in one child
 *   process for both, so the client side costs the same: raw TCP clients that
 *   count text frames (bench/procs/ws_raw_clients.ts, a few reads a second
 *   per socket, so the receiving side is not what is measured), or with
 *   BENCH_WS_CLIENT=websocket, Deno WebSocket objects
 *   (bench/procs/ws_clients.ts, about as much CPU per message as the server).
 *   At 1,000 sockets also with batched delivery (`batch_ms` 20 and 50,
 *   docs/websocket.md; raw clients only): frames are then arrays of messages,
 *   and the table shows messages/s and frames/s apart.
 *
 * Environment: BENCH_MEASURE_MS (default 3000), BENCH_HTTP_SECONDS (default 5),
 * BENCH_WS_CLIENT (`raw`, default, or `websocket`), BENCH_PARTS (`http,ws`,
 * default both).
 *
 * @module
 */
import { AuthStore } from "../auth/store.ts";
import { randomToken } from "../auth/secrets.ts";
import { TokenIssuer } from "../auth/tokens.ts";
import { Publisher } from "../bus/publisher.ts";
import { median, num, saveResult, table, writeBenchmarksSection } from "./_stats.ts";
import { freePort, startComponent, stopAll, until } from "./_components.ts";

const MEASURE_MS = Number(Deno.env.get("BENCH_MEASURE_MS") ?? "3000");
const HTTP_SECONDS = Number(Deno.env.get("BENCH_HTTP_SECONDS") ?? "5");
/** Interleaved rounds of the HTTP rows. */
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const FAN_OUT = [1, 100, 1000];
/** `batch_ms` of the batched rows, measured at 1,000 sockets (raw clients only). */
const BATCH_MS = [20, 50];
/** Messages/s offered in the batched rows: 5,000 x 1,000 sockets, above what they deliver. */
const BATCHED_OFFERED = 5_000;
/** Deliveries per second offered to the gateway's sockets (see publishUntil). */
const OFFERED_DELIVERIES = 1_000_000;
const WS_CLIENT = Deno.env.get("BENCH_WS_CLIENT") === "websocket" ? "websocket" : "raw";
const PARTS = new Set((Deno.env.get("BENCH_PARTS") ?? "http,ws").split(","));
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const PROCS = new URL("./procs/", import.meta.url).pathname;

const SECTION = "## Gateway (deno task bench:gateway)";
/**
 * The rate limits stay on (every request is counted, as in production) but
 * far above what wrk sends from its one address: the default 6,000 a minute
 * per address would turn most of a run into 429s.
 */
const COUNTED_NOT_LIMITED = [
  "--rate-limit-per-ip",
  "1000000000",
  "--rate-limit-per-token",
  "1000000000",
];
const JWT_SECRET = "bench-gateway-secret-of-at-least-32-characters";
/** Only a full default run replaces the section in BENCHMARKS.md. */
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1" || Deno.env.has("BENCH_MEASURE_MS") ||
  Deno.env.has("BENCH_HTTP_SECONDS") || Deno.env.has("BENCH_WS_CLIENT") ||
  Deno.env.has("BENCH_PARTS") || Deno.env.has("BENCH_ROUNDS");
const lines: string[] = [];
/** Prints a line and keeps it for BENCHMARKS.md. */
function out(line = ""): void {
  console.log(line);
  lines.push(line);
}

const children = new Set<Deno.ChildProcess>();
const watchdog = setTimeout(async () => {
  console.error("bench:gateway: watchdog expired, stopping");
  await cleanup();
  Deno.exit(2);
}, 300_000);

async function cleanup(): Promise<void> {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status.catch(() => {});
  }
  children.clear();
  await stopAll();
}

/** A bench/procs child whose stdout lines are read as they come. */
async function spawnProc(script: string, args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, PROCS + script, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  children.add(child);
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let latest = "";
  let readyLine: string | undefined;
  const pump = (async () => {
    while (true) {
      const { value, done } = await lines.read();
      if (done) return;
      buffered += value;
      let at: number;
      while ((at = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        if (Deno.env.get("BENCH_DEBUG")) console.error(`[${script}] ${line}`);
        if (line.startsWith("READY")) readyLine = line;
        else latest = line;
      }
    }
  })();
  await until(() => Promise.resolve(readyLine !== undefined), 60_000, script);
  return {
    pid: child.pid,
    ready: readyLine!,
    latest: () => latest,
    async stop() {
      await child.stdin.close().catch(() => {});
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await child.status;
      clearTimeout(timer);
      await pump.catch(() => {});
      children.delete(child);
    },
  };
}

interface WrkResult {
  requestsPerSecond: number;
  /** Requests completed in the run. */
  requests: number;
  /** CPU time the serving process used per request, in microseconds (set by the caller). */
  cpuUsPerRequest?: number;
  p50Ms: number;
  p99Ms: number;
  errors: string;
}

function toMs(value: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(value.trim());
  if (!match) return NaN;
  const n = Number(match[1]);
  return match[2] === "us" ? n / 1000 : match[2] === "s" ? n * 1000 : n;
}

async function wrk(url: string, extra: string[] = []): Promise<WrkResult | string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("wrk", {
      args: ["-t2", "-c64", `-d${HTTP_SECONDS}s`, "--latency", ...extra, url],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    return "wrk not installed (apt-get install wrk)";
  }
  const text = new TextDecoder().decode(output.stdout);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const requests = /(\d+) requests in/.exec(text);
  const p50 = /\s50%\s+(\S+)/.exec(text);
  const p99 = /\s99%\s+(\S+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const socketErrors = /Socket errors: (.*)/.exec(text);
  return {
    requestsPerSecond: rps ? Number(rps[1]) : NaN,
    requests: requests ? Number(requests[1]) : NaN,
    p50Ms: p50 ? toMs(p50[1]!) : NaN,
    p99Ms: p99 ? toMs(p99[1]!) : NaN,
    errors:
      [non2xx ? `${non2xx[1]} non-2xx` : "", socketErrors?.[1] ?? ""].filter(Boolean).join("; ") ||
      "0",
  };
}

/** CPU seconds a process has used (Linux /proc; NaN elsewhere). */
function cpuSeconds(pid: number): number {
  try {
    const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Waits (at most 60 s) until the processes use less than 10% of a CPU over 300 ms. */
async function settle(pids: number[]): Promise<void> {
  const end = performance.now() + 60_000;
  while (performance.now() < end) {
    const before = pids.map(cpuSeconds);
    await new Promise((r) => setTimeout(r, 300));
    const busy = pids.some((pid, i) => cpuSeconds(pid) - before[i]! > 0.03);
    if (!busy) return; // NaN (no /proc) compares false: nothing to wait for
  }
  console.error("bench:gateway: components still busy after 60 s");
}

/** Counts deliveries per second at the clients while `drive` keeps sending for MEASURE_MS. */
async function fanOut(
  url: string,
  sockets: number,
  mode: "gateway" | "bare",
  drive: (until: number) => Promise<void>,
  batchMs?: number,
): Promise<{ perSecond: number; open: number; framesPerSecond: number }> {
  const script = WS_CLIENT === "raw" ? "ws_raw_clients.ts" : "ws_clients.ts";
  const clients = await spawnProc(script, [
    url,
    String(sockets),
    mode,
    ...(batchMs ? [String(batchMs)] : []),
  ]);
  try {
    // ws_clients.ts prints no frame count: one message per frame there.
    const parse = () => {
      const [messages, open, frames] = clients.latest().split(" ").slice(1).map(Number);
      return [messages!, open!, frames ?? messages!] as const;
    };
    await drive(performance.now() + 300); // warm-up
    await new Promise((r) => setTimeout(r, 200));
    await until(() => Promise.resolve(clients.latest().startsWith("COUNT")), 10_000, "counts");
    const [before, , framesBefore] = parse();
    const start = performance.now();
    await drive(start + MEASURE_MS);
    await new Promise((r) => setTimeout(r, 200)); // let the last COUNT line in
    const [after, open, framesAfter] = parse();
    const seconds = (performance.now() - start) / 1000;
    return {
      perSecond: (after - before) / seconds,
      open,
      framesPerSecond: (framesAfter - framesBefore) / seconds,
    };
  } finally {
    await clients.stop();
  }
}

try {
  const started = new Date().toISOString();
  console.log(
    `# bench:gateway (${new Date().toISOString()}, ${navigator.hardwareConcurrency} cores)\n`,
  );
  const dir = await Deno.makeTempDir({ prefix: "bench-gateway-" });
  const brokerEndpoint = `tcp://127.0.0.1:${freePort()}`;
  const eventFrontend = `tcp://127.0.0.1:${freePort()}`;
  const eventBackend = `tcp://127.0.0.1:${freePort()}`;
  const stateFrontend = `tcp://127.0.0.1:${freePort()}`;
  const stateBackend = `tcp://127.0.0.1:${freePort()}`;
  const gatewayPort = freePort();
  const cachedGatewayPort = freePort();
  const authGatewayPort = freePort();
  // State service and gateways share the key of the state bus's change events (inherited).
  const stateBusSecret = randomToken();
  Deno.env.set("PLANTD_STATE_STATE_BUS_SECRET", stateBusSecret);
  Deno.env.set("PLANTD_GATEWAY_STATE_BUS_SECRET", stateBusSecret);
  const broker = startComponent("broker", ["--endpoint", brokerEndpoint, "--health-port", "0"], {
    PLANTD_BROKER_BUSES: JSON.stringify([
      {
        name: "event",
        frontend: eventFrontend,
        backend: eventBackend,
        send_hwm: 100_000,
        receive_hwm: 100_000,
      },
      { name: "state", frontend: stateFrontend, backend: stateBackend },
    ]),
  });
  startComponent("state", [
    "--db",
    `${dir}/state.db`,
    "--broker-endpoint",
    brokerEndpoint,
    "--health-port",
    "0",
    "--bus-endpoint",
    stateFrontend,
  ]);
  // Without a cache every GET crosses broker and state worker.
  const wsGateway = startComponent("gateway", [
    "--port",
    String(gatewayPort),
    "--broker-endpoint",
    brokerEndpoint,
    "--buses",
    JSON.stringify({ event: eventBackend, state: stateBackend }),
    "--state-cache-ttl-ms",
    "0",
    "--ws-max-buffered-bytes",
    String(64 * 1024 * 1024),
    // All 1,000 sockets come from one address (64 by default).
    "--ws-max-per-user",
    "2000",
    ...COUNTED_NOT_LIMITED,
    "--auth-db",
    `${dir}/auth-1.db`,
  ]);
  // With the read cache, refreshed by the state bus's change events.
  const cachedGateway = startComponent("gateway", [
    "--port",
    String(cachedGatewayPort),
    "--broker-endpoint",
    brokerEndpoint,
    "--buses",
    JSON.stringify({ state: stateBackend }),
    ...COUNTED_NOT_LIMITED,
    "--auth-db",
    `${dir}/auth-2.db`,
  ]);
  // The same with authentication on, as production runs: a bearer token or an API key.
  const authStore = await AuthStore.open(`${dir}/auth-3.db`);
  const { key: apiKey } = await authStore.createApiKey("bench", ["viewer"], "bench");
  await authStore.close();
  const authGateway = startComponent("gateway", [
    "--port",
    String(authGatewayPort),
    "--broker-endpoint",
    brokerEndpoint,
    "--buses",
    JSON.stringify({ state: stateBackend }),
    ...COUNTED_NOT_LIMITED,
    "--auth-db",
    `${dir}/auth-3.db`,
  ], { PLANTD_GATEWAY_JWT_SECRET: JWT_SECRET });
  const { token } = await new TokenIssuer({
    secret: JWT_SECRET,
    issuer: "plantd",
    audience: "plantd",
  })
    .issue({ sub: "user:bench", name: "bench", roles: [], perms: ["state:data:read"] }, 3600);
  await until(
    async () => {
      const response = await fetch(`http://127.0.0.1:${cachedGatewayPort}/livez`);
      await response.body?.cancel();
      return response.ok;
    },
    30_000,
    "cached gateway",
  );
  const gateway = `http://127.0.0.1:${gatewayPort}`;
  await until(
    async () => {
      const response = await fetch(`${gateway}/api/state/bench/key`, {
        method: "PUT",
        headers: { "content-type": "text/plain" },
        body: "value-of-the-benchmark-key",
      });
      await response.body?.cancel();
      return response.ok;
    },
    30_000,
    "gateway with state",
  );
  await until(
    async () => {
      const response = await fetch(`http://127.0.0.1:${authGatewayPort}/api/state/bench/key`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await response.body?.cancel();
      return response.ok;
    },
    30_000,
    "gateway with authentication",
  );
  const bare = await spawnProc("bare_hono.ts", [String(freePort())]);
  const barePort = bare.ready.split(" ")[1];

  // HTTP: every system once per round, in an order that rotates between rounds, so drift
  // of the shared machine falls on all of them alike; median and range per system.
  const http = PARTS.has("http");
  const httpSystems: { label: string; url: string; headers: string[]; pid: number }[] = [
    {
      label: "gateway GET /api/state/:scope/:key, read cache, auth on (bearer JWT HS256)",
      url: `http://127.0.0.1:${authGatewayPort}/api/state/bench/key`,
      headers: ["-H", `Authorization: Bearer ${token}`],
      pid: authGateway.pid,
    },
    {
      label: "same, auth on (API key)",
      url: `http://127.0.0.1:${authGatewayPort}/api/state/bench/key`,
      headers: ["-H", `Authorization: Bearer ${apiKey}`],
      pid: authGateway.pid,
    },
    {
      label: "same, auth off (loopback dev default)",
      url: `http://127.0.0.1:${cachedGatewayPort}/api/state/bench/key`,
      headers: [],
      pid: cachedGateway.pid,
    },
    {
      label: "gateway GET, no cache (state_cache_ttl_ms 0), auth off",
      url: `${gateway}/api/state/bench/key`,
      headers: [],
      pid: wsGateway.pid,
    },
    {
      label: "bare Hono constant",
      url: `http://127.0.0.1:${barePort}/`,
      headers: [],
      pid: bare.pid,
    },
  ];
  const httpRuns = httpSystems.map(() => [] as WrkResult[]);
  const httpFailures = httpSystems.map(() => [] as string[]);
  for (let round = 0; http && round < ROUNDS; round++) {
    for (let k = 0; k < httpSystems.length; k++) {
      const i = (k + round) % httpSystems.length;
      const system = httpSystems[i]!;
      const cpuBefore = cpuSeconds(system.pid);
      const result = await wrk(system.url, system.headers);
      if (typeof result === "string") {
        httpFailures[i]!.push(result);
        continue;
      }
      result.cpuUsPerRequest = (cpuSeconds(system.pid) - cpuBefore) * 1e6 / result.requests;
      httpRuns[i]!.push(result);
    }
  }
  const medianOf = (runs: WrkResult[], pick: (r: WrkResult) => number) => median(runs.map(pick));
  const rpsMedian = (i: number) => medianOf(httpRuns[i]!, (r) => r.requestsPerSecond);
  const httpRows = httpSystems.map((system, i) => {
    const runs = httpRuns[i]!;
    if (runs.length === 0) {
      return [system.label, http ? httpFailures[i]![0] ?? "no run" : "skipped (BENCH_PARTS)"];
    }
    const rps = runs.map((r) => r.requestsPerSecond);
    return [
      system.label,
      num(rpsMedian(i)),
      `${num(Math.min(...rps))}-${num(Math.max(...rps))}`,
      num(medianOf(runs, (r) => r.p50Ms), 2),
      num(medianOf(runs, (r) => r.p99Ms), 2),
      num(medianOf(runs, (r) => r.cpuUsPerRequest ?? NaN), 1),
      runs.map((r) => r.errors).join(", "),
    ];
  });
  out(
    `### HTTP (wrk -t2 -c64, ${HTTP_SECONDS} s per run, ${ROUNDS} interleaved rounds: median and ` +
      "range)",
  );
  out();
  out(
    table(
      [
        "system",
        "req/s (median)",
        "range",
        "p50 ms",
        "p99 ms",
        "server CPU us/req",
        "errors per run",
      ],
      httpRows,
    ),
  );
  out();
  out(
    "Settings beside the defaults: rate limits counted but raised to 1e9 per window (wrk sends " +
      "from one address; the default 6,000 a minute would turn a run into 429s); one key " +
      "(every cached read a hit). The bearer token carries `state:data:read`; the API key has the " +
      "`viewer` role. Server CPU: the serving process's CPU time (user + system, /proc) over the " +
      "requests of a run; for the uncached row the gateway only (broker and state worker not counted).",
  );

  // WebSocket fan-out.
  const publisher = new Publisher(eventFrontend, { form: "frames", sendHighWaterMark: 10_000 });
  const payload = "0123456789abcdef";
  // Offer about 1,000,000 deliveries/s (5 x the target), at most 200,000 messages/s: more
  // than the gateway delivers, but not 1,000 times more at 1,000 sockets, where a flood of
  // messages the gateway must drop would only burn the CPU of the broker and of the
  // gateway's ZeroMQ thread (it halved the deliveries measured at 1,000 sockets).
  const offeredFor = (sockets: number) =>
    Math.min(200_000, Math.ceil(OFFERED_DELIVERIES / sockets));
  const publishUntil = (perSecond: number) => async (end: number) => {
    const start = performance.now();
    let sent = 0;
    while (performance.now() < end) {
      const due = Math.ceil((performance.now() - start) * perSecond / 1000);
      for (; sent < due; sent++) publisher.publish("fan", payload);
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  const broadcastUntil = (bytes: number) => async (end: number) => {
    while (performance.now() < end) {
      const response = await fetch(
        `http://127.0.0.1:${barePort}/broadcast?count=20&bytes=${bytes}`,
        { method: "POST" },
      );
      await response.body?.cancel();
    }
  };
  // What the gateway sends for one 16-byte message (docs/websocket.md), offset included.
  const gatewayFrameBytes = JSON.stringify({
    type: "message",
    id: "f",
    offset: "0123abcd:100000",
    bus: "event",
    topic: "fan",
    form: "frames",
    payload,
    encoding: "text",
  }).length;
  const wsRows: string[][] = [];
  const results = new Map<number, number>();
  const bareResults = new Map<number, number>();
  /** Messages/s at 1,000 sockets by batch_ms. */
  const batchedResults = new Map<number, number>();
  /** Waits until the gateway answers quickly: it has drained what it still held. */
  const drained = () =>
    until(
      async () => {
        const t0 = performance.now();
        const response = await fetch(`${gateway}/livez`);
        await response.body?.cancel();
        return performance.now() - t0 < 50;
      },
      60_000,
      "gateway drained",
    );
  for (const sockets of PARTS.has("ws") ? FAN_OUT : []) {
    const through = await fanOut(
      `ws://127.0.0.1:${gatewayPort}/ws`,
      sockets,
      "gateway",
      publishUntil(offeredFor(sockets)),
    );
    // The gateway and the broker still work off the backlog of the round (up to the
    // high-water marks): let them finish before the bare broadcast is measured.
    await settle([wsGateway.pid, broker.pid]);
    const bareUrl = `ws://127.0.0.1:${barePort}/ws`;
    const direct = await fanOut(bareUrl, sockets, "bare", broadcastUntil(16));
    const sized = await fanOut(bareUrl, sockets, "bare", broadcastUntil(gatewayFrameBytes));
    results.set(sockets, through.perSecond);
    bareResults.set(sockets, direct.perSecond);
    // Let the gateway drain what it still holds before the next round.
    await drained();
    wsRows.push([
      String(sockets),
      "off",
      num(offeredFor(sockets)),
      num(through.perSecond),
      num(through.framesPerSecond),
      `${through.open}/${sockets}`,
      num(direct.perSecond),
      `${direct.open}/${sockets}`,
      num(sized.perSecond),
    ]);
    if (sockets !== 1000 || WS_CLIENT !== "raw") continue;
    for (const batchMs of BATCH_MS) {
      await settle([wsGateway.pid, broker.pid]);
      const batched = await fanOut(
        `ws://127.0.0.1:${gatewayPort}/ws`,
        sockets,
        "gateway",
        publishUntil(BATCHED_OFFERED),
        batchMs,
      );
      batchedResults.set(batchMs, batched.perSecond);
      await settle([wsGateway.pid, broker.pid]);
      await drained();
      wsRows.push([
        String(sockets),
        String(batchMs),
        num(BATCHED_OFFERED),
        num(batched.perSecond),
        num(batched.framesPerSecond),
        `${batched.open}/${sockets}`,
        "(as above)",
        "",
        "",
      ]);
    }
  }
  await publisher.close();
  out();
  out(
    `### WebSocket fan-out (16-byte messages, delivered to all sockets in total; ${
      WS_CLIENT === "raw" ? "raw TCP clients counting frames" : "Deno WebSocket clients"
    })`,
  );
  out();
  out(
    table([
      "sockets",
      "batch_ms",
      "offered msgs/s",
      "gateway msgs/s",
      "gateway frames/s",
      "gateway sockets open",
      "bare Deno WS msgs/s",
      "bare sockets open",
      `bare Deno WS, ${gatewayFrameBytes}-byte frames msgs/s`,
    ], wsRows),
  );
  out();
  out(
    `The gateway's frames carry the 16-byte payload in its JSON message (${gatewayFrameBytes} ` +
      `bytes); the last column is the bare broadcast of frames that size. Messages/s count ` +
      `messages delivered to all sockets in total (offered msgs/s x sockets at most); with ` +
      "`batch_ms` (opt-in, docs/websocket.md) a frame is a JSON array of up to 1,000 messages " +
      "sent up to batch_ms late, so frames/s is far below messages/s. The bare broadcast sends " +
      "one message per frame.",
  );

  out();
  const verdict = (ok: boolean) => ok ? "PASS" : "FAIL";
  const [bearerRow, apiKeyRow, cachedRow, uncachedRow, bareRow] = [0, 1, 2, 3, 4];
  if (httpRuns[uncachedRow]!.length > 0) {
    const rps = rpsMedian(uncachedRow);
    out(
      `- state GET over HTTP >= 20,000 req/s without a cache: ${num(rps)} ${
        verdict(rps >= 20_000)
      }`,
    );
  }
  if (httpRuns[bareRow]!.length > 0) {
    const bareRps = rpsMedian(bareRow);
    for (
      const [row, what] of [
        [bearerRow, "auth on, bearer token"],
        [apiKeyRow, "auth on, API key"],
        [cachedRow, "auth off"],
      ] as const
    ) {
      if (httpRuns[row]!.length === 0) continue;
      const share = rpsMedian(row) / bareRps;
      out(
        `- state GET with the read cache >= 40% of bare Hono (${what}): ${num(rpsMedian(row))} = ${
          num(share * 100, 1)
        }% ${verdict(share >= 0.4)}`,
      );
    }
  }
  const at1000 = results.get(1000);
  if (at1000 !== undefined) {
    for (const [batchMs, perSecond] of batchedResults) {
      out(
        `- WebSocket fan-out >= 200,000 msgs/s at 1,000 sockets, batched (batch_ms ${batchMs}, ` +
          `frames of many messages): ${num(perSecond)} ${verdict(perSecond >= 200_000)}`,
      );
    }
    out(
      `- WebSocket fan-out >= 200,000 msgs/s at 1,000 sockets, unbatched (one message per ` +
        `frame): ${num(at1000)} ${verdict(at1000 >= 200_000)} (bare Deno broadcast, one ` +
        `message per frame, in the same run: ${num(bareResults.get(1000) ?? 0)})`,
    );
  }
  await bare.stop();
  await Deno.remove(dir, { recursive: true });
  const saved = await saveResult("gateway", {
    overridden: NO_WRITE,
    httpSeconds: HTTP_SECONDS,
    rounds: ROUNDS,
    measureMs: MEASURE_MS,
    wsClient: WS_CLIENT,
    parts: [...PARTS],
    wrk: "-t2 -c64",
    gatewayFlags: {
      all: COUNTED_NOT_LIMITED,
      uncached: ["--state-cache-ttl-ms", "0", "--ws-max-buffered-bytes", "67108864"],
      uncachedWs: ["--ws-max-per-user", "2000"],
      auth: "PLANTD_GATEWAY_JWT_SECRET (HS256)",
    },
  }, {
    http: httpSystems.map((system, i) => ({
      label: system.label,
      runs: httpRuns[i],
      failures: httpFailures[i],
    })),
    ws: wsRows,
    lines,
  });
  console.log(`raw result: ${saved}`);
  if (!NO_WRITE) {
    await writeBenchmarksSection(
      SECTION,
      `${SECTION}\n\nCommand: \`deno task bench:gateway\` (bench/gateway.ts; needs Debian's \`wrk\`). ` +
        `Run ${started} on ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}. Broker (with ` +
        `the \`event\` and \`state\` buses), state service and two gateways (one with ` +
        `\`--state-cache-ttl-ms 0\`, one with the read cache refreshed by the state bus) are the real ` +
        `components in child processes; the bare Hono app and the bare Deno WebSocket broadcast run in ` +
        `another child; the 1, 100 or 1,000 WebSocket clients share one child process in both cases ` +
        `(${
          WS_CLIENT === "raw"
            ? "raw TCP connections counting frames, bench/procs/ws_raw_clients.ts"
            : "Deno WebSocket objects, bench/procs/ws_clients.ts"
        }).\n\n` +
        `${lines.join("\n")}\n`,
    );
  }
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
