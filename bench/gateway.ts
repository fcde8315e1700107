/**
 * `deno task bench:gateway`: the gateway under load, next to its ceiling in
 * the same run, on bench/harness.ts (interleaved rounds, median and range,
 * raw results in bench/results/).
 *
 * - HTTP: GETs of state keys through gateway, broker and state worker (real
 *   components in child processes), and a bare Hono handler returning a
 *   constant; load from `wrk` (Debian package `wrk`), 2 threads, 64
 *   connections. The headline rows run with authentication on (a bearer JWT,
 *   an API key) and read `keys` keys chosen at random by a wrk script: with
 *   the read cache at its defaults, warmed by reading every key once before
 *   the run (so the rows measure cached reads), and without a cache. The hit
 *   rate is measured from the broker's count of requests to the state
 *   service. Rows with one key, auth off and no cache show what each costs. A
 *   second bare row answers with the gateway's response headers: Deno serves
 *   a response whose only header is its content type on a faster path, and
 *   the gateway's security headers take it off that path.
 * - WebSocket fan-out: one publisher on the `event` bus at a fixed rate; the
 *   gateway and a bare Deno WebSocket server (bench/procs/bare_hono.ts)
 *   subscribe to the same bus and send every message to 1, 100 and 1,000
 *   sockets, counted by the same client process (raw TCP clients counting
 *   frames, bench/procs/ws_raw_clients.ts, or with `ws_client` websocket,
 *   Deno WebSocket objects). What does not arrive (offered x sockets, less
 *   what the clients counted once the flow stopped) is counted as lost. At
 *   1,000 sockets also with batched delivery (`batch_ms` 20 and 50).
 *
 * Every non-default setting of the components is in the row labels and the
 * section's description.
 *
 * @module
 */
import { AuthStore } from "../auth/store.ts";
import { randomToken } from "../auth/secrets.ts";
import { TokenIssuer } from "../auth/tokens.ts";
import { Publisher } from "../bus/publisher.ts";
import { cpuTicks, num, ticksPerSecond } from "./_stats.ts";
import {
  type Check,
  type Metrics,
  runBench,
  spawnReady,
  startComponent,
  startStateService,
  stopAll,
  until,
} from "./harness.ts";
import { freePort } from "./_components.ts";

const FAN_OUT = [1, 100, 1000];
/** `batch_ms` of the batched rows, measured at 1,000 sockets (raw clients only). */
const BATCH_MS = [20, 50];
/** Messages/s offered in the batched rows: 5,000 x 1,000 sockets. */
const BATCHED_OFFERED = 5_000;
const JWT_SECRET = "bench-gateway-secret-of-at-least-32-characters";
const PAYLOAD = "0123456789abcdef";
/**
 * Request limits stay on (every request is counted) but far above what wrk
 * sends from its one address: the defaults (6,000 a minute per address,
 * 12,000 per token) would turn a run into 429s.
 */
const COUNTED_NOT_LIMITED = [
  "--rate-limit-per-ip",
  "1000000000",
  "--rate-limit-per-token",
  "1000000000",
];
const LIMITS_LABEL = "request limits 1e9/min (defaults 6,000 per address, 12,000 per token)";

function toMs(value: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(value.trim());
  if (!match) return NaN;
  const n = Number(match[1]);
  return match[2] === "us" ? n / 1000 : match[2] === "s" ? n * 1000 : n;
}

/** One wrk run; throws when wrk is missing or reports nothing. */
async function wrk(url: string, seconds: number, extra: string[]): Promise<Metrics> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("wrk", {
      args: ["-t2", "-c64", `-d${seconds}s`, "--latency", ...extra, url],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    throw new Error("wrk not installed (apt-get install wrk)");
  }
  const text = new TextDecoder().decode(output.stdout);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!rps) throw new Error(`wrk: ${new TextDecoder().decode(output.stderr) || text}`);
  const requests = /(\d+) requests in/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    "req/s": Number(rps[1]),
    requests: requests ? Number(requests[1]) : NaN,
    "p50 ms": toMs(/\s50%\s+(\S+)/.exec(text)?.[1] ?? ""),
    "p99 ms": toMs(/\s99%\s+(\S+)/.exec(text)?.[1] ?? ""),
    errors: (non2xx ? Number(non2xx[1]) : 0) +
      (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

/** CPU seconds a process has used (NaN when gone). */
async function cpuSeconds(pid: number): Promise<number> {
  return (cpuTicks(pid) ?? NaN) / await ticksPerSecond();
}

/** Waits (at most 60 s) until the processes use less than 10% of a CPU over 300 ms. */
async function settle(pids: number[]): Promise<void> {
  const end = performance.now() + 60_000;
  while (performance.now() < end) {
    const before = await Promise.all(pids.map(cpuSeconds));
    await new Promise((r) => setTimeout(r, 300));
    const after = await Promise.all(pids.map(cpuSeconds));
    if (!pids.some((_, i) => after[i]! - before[i]! > 0.03)) return;
  }
  console.error("bench:gateway: components still busy after 60 s");
}

await runBench({
  name: "gateway",
  title: "Gateway (deno task bench:gateway)",
  command: "`deno task bench:gateway` (bench/gateway.ts; needs Debian's `wrk`)",
  watchdogMs: 60 * 60_000,
  settings: {
    http_seconds: { env: "BENCH_HTTP_SECONDS", default: 5, help: "wrk run length" },
    measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "WebSocket measured window" },
    keys: { env: "BENCH_KEYS", default: 10_000, help: "state keys the spread rows read" },
    ws_client: { env: "BENCH_WS_CLIENT", default: "raw", help: "raw or websocket clients" },
    parts: { env: "BENCH_PARTS", default: "http,ws", help: "http, ws or both" },
    offered_deliveries: {
      env: "BENCH_OFFERED_DELIVERIES",
      default: 1_000_000,
      help: "deliveries/s offered to the sockets (at most 200,000 messages/s)",
    },
  },
}, async (bench) => {
  const settings = bench.settings;
  const parts = new Set(settings.parts.split(","));
  const raw = settings.ws_client !== "websocket";
  const dir = await Deno.makeTempDir({ prefix: "bench-gateway-" });
  const publisher = { current: undefined as Publisher | undefined };
  const httpKeys: string[] = [];
  try {
    const brokerEndpoint = `tcp://127.0.0.1:${freePort()}`;
    const eventFrontend = `tcp://127.0.0.1:${freePort()}`;
    const eventBackend = `tcp://127.0.0.1:${freePort()}`;
    const stateFrontend = `tcp://127.0.0.1:${freePort()}`;
    const stateBackend = `tcp://127.0.0.1:${freePort()}`;
    const ports = { ws: freePort(), cached: freePort(), auth: freePort(), authNoCache: freePort() };
    // State service and gateways share the key of the state bus's change events.
    const stateBusSecret = randomToken();
    Deno.env.set("PLANTD_STATE_STATE_BUS_SECRET", stateBusSecret);
    Deno.env.set("PLANTD_GATEWAY_STATE_BUS_SECRET", stateBusSecret);
    const brokerHealth = freePort();
    const broker = startComponent("broker", [
      "--endpoint",
      brokerEndpoint,
      "--health-port",
      String(brokerHealth),
    ], {
      // Bus high-water marks at their defaults.
      PLANTD_BROKER_BUSES: JSON.stringify([
        { name: "event", frontend: eventFrontend, backend: eventBackend },
        { name: "state", frontend: stateFrontend, backend: stateBackend },
      ]),
    });
    startStateService(`${dir}/state.db`, brokerEndpoint, stateFrontend);
    const gateway = (port: number, extra: string[], env: Record<string, string> = {}) =>
      startComponent("gateway", [
        "--port",
        String(port),
        "--broker-endpoint",
        brokerEndpoint,
        ...COUNTED_NOT_LIMITED,
        "--auth-db",
        `${dir}/auth-${port}.db`,
        ...extra,
      ], env);
    // Without a cache every GET crosses broker and state worker; also the WebSocket gateway.
    const wsGateway = gateway(ports.ws, [
      "--buses",
      JSON.stringify({ event: eventBackend, state: stateBackend }),
      "--state-cache-ttl-ms",
      "0",
      // All 1,000 sockets come from one address (64 by default).
      "--ws-max-per-user",
      "2000",
    ]);
    // The read cache at its defaults, refreshed by the state bus's change events.
    const cachedGateway = gateway(ports.cached, [
      "--buses",
      JSON.stringify({ state: stateBackend }),
    ]);
    // Authentication on, as production runs: a bearer token or an API key; with and without the cache.
    const apiKeys: Record<number, string> = {};
    for (const port of [ports.auth, ports.authNoCache]) {
      const authStore = await AuthStore.open(`${dir}/auth-${port}.db`);
      apiKeys[port] = (await authStore.createApiKey("bench", ["viewer"], "bench")).key;
      await authStore.close();
    }
    const authGateway = gateway(ports.auth, [
      "--buses",
      JSON.stringify({ state: stateBackend }),
    ], { PLANTD_GATEWAY_JWT_SECRET: JWT_SECRET });
    const authNoCacheGateway = gateway(ports.authNoCache, [
      "--buses",
      JSON.stringify({ state: stateBackend }),
      "--state-cache-ttl-ms",
      "0",
    ], { PLANTD_GATEWAY_JWT_SECRET: JWT_SECRET });
    const issuer = new TokenIssuer({ secret: JWT_SECRET, issuer: "plantd", audience: "plantd" });
    const { token } = await issuer.issue(
      { sub: "user:bench", name: "bench", roles: [], perms: ["state:data:read"] },
      3600,
    );
    const base = (port: number) => `http://127.0.0.1:${port}`;
    await until(
      async () => {
        const response = await fetch(`${base(ports.cached)}/livez`);
        await response.body?.cancel();
        return response.ok;
      },
      30_000,
      "cached gateway",
    );
    /** One request, its body dropped; throws `what: status` unless it succeeds. */
    const send = async (url: string, init: RequestInit, what: string) => {
      const response = await fetch(url, init);
      await response.body?.cancel();
      if (!response.ok) throw new Error(`${what}: ${response.status}`);
    };
    /** `op` on each key the spread rows read, 64 at a time. */
    const eachKey = async (op: (key: string) => Promise<void>) => {
      let next = 0;
      await Promise.all(Array.from({ length: 64 }, async () => {
        while (next < settings.keys) await op(`k${next++}`);
      }));
    };
    const put = (key: string) =>
      send(`${base(ports.ws)}/api/state/bench/${key}`, {
        method: "PUT",
        headers: { "content-type": "text/plain" },
        body: `value-of-${key}`,
      }, `PUT ${key}`);
    await until(() => put("key").then(() => true), 30_000, "gateway with state");
    await eachKey(put);
    for (const port of [ports.auth, ports.authNoCache]) {
      await until(
        async () => {
          const response = await fetch(`${base(port)}/api/state/bench/key`, {
            headers: { authorization: `Bearer ${token}` },
          });
          await response.body?.cancel();
          return response.ok;
        },
        30_000,
        "gateway with authentication",
      );
    }
    /** Reads every key once through `port`: a cached row then measures the cache. */
    const warm = (port: number, auth: string | undefined) => {
      const init = auth ? { headers: { authorization: auth } } : {};
      return eachKey((key) =>
        send(`${base(port)}/api/state/bench/${key}`, init, `warming ${port}`)
      );
    };
    const bare = await spawnReady({
      name: "bare",
      script: "bench/procs/bare_hono.ts",
      args: [String(freePort()), eventBackend],
    });
    const barePort = Number(bare.ready.split(" ")[0]);
    const script = await Deno.makeTempFile({ dir, suffix: ".lua" });
    await Deno.writeTextFile(
      script,
      `math.randomseed(os.time())\nrequest = function()\n  return wrk.format("GET", ` +
        `"/api/state/bench/k" .. math.random(0, ${settings.keys - 1}))\nend\n`,
    );

    /**
     * Requests the broker has taken for the state service: during a run only
     * the gateway under test sends any, one per cache miss.
     */
    const stateRequests = async (): Promise<number> => {
      const text = await (await fetch(`${base(brokerHealth)}/metrics`)).text();
      const count = /^mdp_requests_total\{service="org.plantd.State"\} (\d+)/m.exec(text)?.[1];
      if (count === undefined) throw new Error("broker /metrics: no state request count");
      return Number(count);
    };

    // -----------------------------------------------------------------------
    // HTTP rows
    const spread = `${num(settings.keys)} keys read at random`;
    const warmed = "cache warm (every key read once before the run)";
    const bearer = `Bearer ${token}`;
    const apiKey = (port: number) => `Bearer ${apiKeys[port]}`;
    const http: {
      key: string;
      label: string;
      port: number;
      path?: string;
      /** The Authorization header's value. */
      auth?: string;
      spread: boolean;
      warm?: boolean;
      pid: number;
    }[] = [
      {
        key: "http/bearer/spread",
        label: `gateway GET /api/state/:scope/:key, ${spread}, read cache (defaults), ${warmed}, ` +
          `auth on (bearer JWT HS256); ${LIMITS_LABEL}`,
        port: ports.auth,
        auth: bearer,
        spread: true,
        warm: true,
        pid: authGateway.pid,
      },
      {
        key: "http/apikey/spread",
        label: `same, auth on (API key); ${LIMITS_LABEL}`,
        port: ports.auth,
        auth: apiKey(ports.auth),
        spread: true,
        warm: true,
        pid: authGateway.pid,
      },
      {
        key: "http/bearer/nocache/spread",
        label: `gateway GET, ${spread}, no cache (state_cache_ttl_ms 0), auth on (bearer JWT ` +
          `HS256); ${LIMITS_LABEL}`,
        port: ports.authNoCache,
        auth: bearer,
        spread: true,
        pid: authNoCacheGateway.pid,
      },
      {
        key: "http/apikey/nocache/spread",
        label: `same, no cache, auth on (API key); ${LIMITS_LABEL}`,
        port: ports.authNoCache,
        auth: apiKey(ports.authNoCache),
        spread: true,
        pid: authNoCacheGateway.pid,
      },
      {
        key: "http/bearer/one",
        label: `gateway GET, one key, read cache (defaults), auth on (bearer); ${LIMITS_LABEL}`,
        port: ports.auth,
        auth: bearer,
        spread: false,
        pid: authGateway.pid,
      },
      {
        key: "http/off/spread",
        label: `gateway GET, ${spread}, read cache (defaults), ${warmed}, auth off (loopback ` +
          `dev default); ${LIMITS_LABEL}`,
        port: ports.cached,
        spread: true,
        warm: true,
        pid: cachedGateway.pid,
      },
      {
        key: "http/nocache/spread",
        label: `gateway GET, ${spread}, no cache (state_cache_ttl_ms 0), auth off; ` +
          LIMITS_LABEL,
        port: ports.ws,
        spread: true,
        pid: wsGateway.pid,
      },
      {
        key: "http/bare",
        label: "bare Hono constant (ceiling)",
        port: barePort,
        spread: false,
        pid: bare.child.pid,
      },
      {
        key: "http/bare/spread",
        label: "bare Hono constant driven as the random-key rows (the same wrk script: " +
          "GET /api/state/bench/k<random>, a route with parameters)",
        port: barePort,
        spread: true,
        pid: bare.child.pid,
      },
      {
        key: "http/bare/api-headers",
        label: "bare Hono constant with the gateway's response headers (JSON, ETag, " +
          "4 security headers; reference, not a ceiling)",
        port: barePort,
        path: "/api",
        spread: false,
        pid: bare.child.pid,
      },
      {
        key: "http/bare/auth-header",
        label: "bare Hono constant reading the Authorization header (the bearer row's) and " +
          "answering a copy of a reply built once with the gateway's response headers, as the " +
          "gateway serves a cached entry (reference: what Deno and Hono cost before any gateway code)",
        port: barePort,
        path: "/api/with-auth-header",
        auth: bearer,
        spread: false,
        pid: bare.child.pid,
      },
    ];
    const httpUnits = parts.has("http") ? http : [];
    for (const row of httpUnits) {
      bench.row(row.key, row.label);
      httpKeys.push(row.key);
    }

    // -----------------------------------------------------------------------
    // WebSocket rows
    const offeredFor = (sockets: number) =>
      Math.min(200_000, Math.ceil(settings.offered_deliveries / sockets));
    interface WsUnit {
      key: string;
      server: "gateway" | "bare";
      sockets: number;
      offered: number;
      batchMs?: number;
    }
    const wsUnits: WsUnit[] = [];
    if (parts.has("ws")) {
      for (const sockets of FAN_OUT) {
        for (const server of ["gateway", "bare"] as const) {
          const key = `ws/${server}/${sockets}`;
          bench.row(
            key,
            server === "gateway"
              ? "gateway, `batch_ms` off (default); ws_max_per_user 2000 (default 64: every " +
                `socket comes from one address); ${LIMITS_LABEL}`
              : "bare Deno WebSocket server on the same bus (bench/procs/bare_hono.ts)",
            { sockets, "offered msgs/s": offeredFor(sockets) },
          );
          wsUnits.push({ key, server, sockets, offered: offeredFor(sockets) });
        }
      }
      if (raw) {
        for (const batchMs of BATCH_MS) {
          const key = `ws/gateway/1000/batch${batchMs}`;
          bench.row(key, `gateway, batch_ms ${batchMs} (opt-in); as above`, {
            sockets: 1000,
            "offered msgs/s": BATCHED_OFFERED,
          });
          wsUnits.push({
            key,
            server: "gateway",
            sockets: 1000,
            offered: BATCHED_OFFERED,
            batchMs,
          });
        }
      }
      publisher.current = new Publisher(eventFrontend, { form: "frames" });
    }
    const publishFor = (perSecond: number, ms: number): Promise<number> => {
      const end = performance.now() + ms;
      return (async () => {
        const start = performance.now();
        let sent = 0;
        while (performance.now() < end) {
          const due = Math.ceil((performance.now() - start) * perSecond / 1000);
          for (; sent < due; sent++) publisher.current!.publish("fan", PAYLOAD);
          await new Promise((r) => setTimeout(r, 1));
        }
        return sent;
      })();
    };

    const measureWs = async (unit: WsUnit): Promise<Metrics> => {
      const port = unit.server === "gateway" ? ports.ws : barePort;
      const clients = await spawnReady({
        name: "ws clients",
        script: `bench/procs/${raw ? "ws_raw_clients.ts" : "ws_clients.ts"}`,
        args: [
          `ws://127.0.0.1:${port}/ws`,
          String(unit.sockets),
          unit.server === "gateway" ? "gateway" : "bare",
          ...(unit.batchMs ? [String(unit.batchMs)] : []),
        ],
      }, 60_000);
      try {
        // ws_clients.ts prints no frame count: one message per frame there.
        const counts = () => {
          const [messages, open, frames] = (clients.child.latest("COUNT") ?? "0 0").split(" ")
            .map(Number);
          return { messages: messages!, open: open!, frames: frames ?? messages! };
        };
        /** Waits until the counts have not moved for 500 ms (at most 10 s). */
        const quietCounts = async () => {
          let last = -1;
          let since = performance.now();
          const end = performance.now() + 10_000;
          while (performance.now() < end) {
            const now = counts().messages;
            if (now !== last) {
              last = now;
              since = performance.now();
            } else if (performance.now() - since >= 500) return;
            await new Promise((r) => setTimeout(r, 100));
          }
        };
        await publishFor(unit.offered, 300); // warm-up
        await until(
          () => Promise.resolve(clients.child.latest("COUNT") !== undefined),
          10_000,
          "counts",
        );
        await quietCounts();
        const before = counts();
        const start = performance.now();
        const sent = await publishFor(unit.offered, settings.measure_ms);
        const seconds = (performance.now() - start) / 1000;
        // Counts come every 100 ms: one more tick so the window's last messages are in.
        await new Promise((r) => setTimeout(r, 200));
        const inWindow = counts();
        await quietCounts();
        const after = counts();
        const expected = sent * before.open;
        const delivered = after.messages - before.messages;
        return {
          "msgs/s": (inWindow.messages - before.messages) / seconds,
          "frames/s": (inWindow.frames - before.frames) / seconds,
          lost: Math.max(0, expected - delivered),
          "lost %": expected > 0 ? Math.max(0, expected - delivered) / expected * 100 : NaN,
          "sockets closed": unit.sockets - after.open,
        };
      } finally {
        await clients.child.stop();
        if (unit.server === "gateway") await settle([wsGateway.pid, broker.pid]);
      }
    };

    const units = [
      ...httpUnits.map((row) => ({ key: row.key, http: row, ws: undefined })),
      ...wsUnits.map((unit) => ({ key: unit.key, http: undefined, ws: unit })),
    ];
    await bench.rounds(units, async (unit): Promise<Metrics> => {
      if (unit.ws) return await measureWs(unit.ws);
      const row = unit.http!;
      const path = row.spread
        ? "/api/state/bench/k0"
        : row.port === barePort
        ? (row.path ?? "/")
        : "/api/state/bench/key";
      if (row.warm) await warm(row.port, row.auth);
      const misses = row.port === barePort ? NaN : await stateRequests();
      const cpuBefore = await cpuSeconds(row.pid);
      const result = await wrk(
        `${base(row.port)}${path}`,
        settings.http_seconds,
        [
          ...(row.auth ? ["-H", `Authorization: ${row.auth}`] : []),
          ...(row.spread ? ["-s", script] : []),
        ],
      );
      result["server CPU us/req"] = (await cpuSeconds(row.pid) - cpuBefore) * 1e6 /
        result.requests!;
      if (!Number.isNaN(misses)) {
        result["hit %"] = (1 - (await stateRequests() - misses) / result.requests!) * 100;
      }
      return result;
    });
  } finally {
    await publisher.current?.close();
    await stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  const checks: Check[] = [];
  if (parts.has("http")) {
    checks.push({
      name: "state GET over HTTP >= 20,000 req/s without a cache (keys at random)",
      value: { rows: ["http/nocache/spread"], metric: "req/s" },
      op: ">=",
      target: 20_000,
    });
    // Each row against bare Hono driven the same way: wrk's script for random keys costs the
    // client CPU on the same cores, so the random-key rows are held to the bare row it drives.
    for (
      const [key, bareKey, what] of [
        [
          "http/bearer/spread",
          "http/bare/spread",
          "auth on, bearer token, keys at random, cache warm",
        ],
        ["http/apikey/spread", "http/bare/spread", "auth on, API key, keys at random, cache warm"],
        ["http/bearer/one", "http/bare", "auth on, bearer token, one key"],
        ["http/off/spread", "http/bare/spread", "auth off, keys at random, cache warm"],
      ]
    ) {
      checks.push({
        name: `state GET with the read cache >= 40% of bare Hono driven the same way (${what})`,
        value: { rows: [key!], metric: "req/s" },
        op: ">=",
        target: { rows: [bareKey!], metric: "req/s" },
        factor: 0.4,
      });
    }
  }
  if (parts.has("ws")) {
    checks.push({
      name: "WebSocket fan-out >= 200,000 msgs/s at 1,000 sockets, unbatched",
      value: { rows: ["ws/gateway/1000"], metric: "msgs/s" },
      op: ">=",
      target: 200_000,
    });
    if (raw) {
      for (const batchMs of BATCH_MS) {
        checks.push({
          name: `WebSocket fan-out >= 200,000 msgs/s at 1,000 sockets, batch_ms ${batchMs}`,
          value: { rows: [`ws/gateway/1000/batch${batchMs}`], metric: "msgs/s" },
          op: ">=",
          target: 200_000,
        });
      }
    }
  }
  const wsRows = bench.rows.filter((r) => r.key.startsWith("ws/")).map((r) => r.key);
  return {
    description: "Broker (with the `event` and `state` buses, high-water marks at their " +
      "defaults), state service and four gateways (one with `--state-cache-ttl-ms 0` that " +
      "also serves the WebSockets, one with the read cache at its defaults, one with " +
      "authentication on, one with authentication on and `--state-cache-ttl-ms 0`) are the " +
      "real components in child processes; the bare Hono app and " +
      "the bare WebSocket server run in another child. Every gateway runs with the request " +
      "limits raised (see the labels): wrk sends from one address. The bearer token carries " +
      "`state:data:read`; the API key has the `viewer` role. Server CPU: the serving process's " +
      "CPU time (user + system) per request; for the uncached row the gateway only. Hit %: " +
      "1 - (requests the broker took for the state service / requests served) during the run. " +
      "The random-key rows' Lua script costs wrk CPU on the same two cores, so they are judged " +
      "against the bare row driven with the same script, the one-key row against the plain one.",
    tables: [
      ...(parts.has("http")
        ? [{
          title: `HTTP (wrk -t2 -c64, ${settings.http_seconds} s per run)`,
          rows: httpKeys,
          columns: [
            { header: "system", show: "label" },
            { header: "req/s (median)", show: "median:req/s" },
            { header: "range", show: "range:req/s" },
            { header: "p50 ms", show: "median:p50 ms", decimals: 2 },
            { header: "p99 ms", show: "median:p99 ms", decimals: 2 },
            { header: "cache hit %", show: "median:hit %", decimals: 1 },
            { header: "server CPU µs/req", show: "median:server CPU us/req", decimals: 1 },
            { header: "errors (all runs)", show: "sum:errors" },
          ],
        }]
        : []),
      ...(parts.has("ws")
        ? [{
          title: `WebSocket fan-out (16-byte payloads; ${
            raw ? "raw TCP clients counting frames" : "Deno WebSocket clients"
          })`,
          intro: "One publisher on the `event` bus at the offered rate for " +
            `${settings.measure_ms} ms; msgs/s counts messages delivered to all sockets in ` +
            "total during that window; lost is offered x sockets less what arrived once the " +
            "flow stopped; sockets closed by the server (a slow socket past " +
            "`ws_max_buffered_bytes`, 4 MiB by default, is closed) are counted apart. With " +
            "`batch_ms` a frame is a JSON array of messages, so frames/s is below msgs/s.",
          rows: wsRows,
          columns: [
            { header: "server", show: "label" },
            { header: "sockets", show: "param:sockets" },
            { header: "offered msgs/s", show: "param:offered msgs/s" },
            { header: "delivered msgs/s (median)", show: "median:msgs/s" },
            { header: "range", show: "range:msgs/s" },
            { header: "frames/s", show: "median:frames/s" },
            { header: "lost % (median)", show: "median:lost %", decimals: 1 },
            { header: "lost % (max)", show: "max:lost %", decimals: 1 },
            { header: "sockets closed (max)", show: "max:sockets closed" },
          ],
        }]
        : []),
    ],
    checks,
  };
});
