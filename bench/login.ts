/**
 * `deno task bench:login`: does a login flood stall the gateway? `/livez`
 * and a cached state GET (a logged-in user's bearer token) are timed while
 * 100 logins/s arrive, beside the same without logins, in interleaved
 * rounds of one run.
 *
 * Broker (with the `state` bus), state service and a gateway with
 * authentication on and the read cache are the real components in child
 * processes. Logins rotate usernames (none exists: each costs the dummy
 * argon2id hash) and source addresses (the gateway trusts 127.0.0.1 as a
 * proxy and each login names a new address in X-Forwarded-For), so the
 * per-address and per-username limits do not stop them: all reach the hash
 * pool (`hash_workers` 1, `hash_max_pending` 32, the defaults), which
 * answers 503 past its cap. The probes are one request at a time each,
 * from this process.
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_PHASE_MS (default 4000),
 * BENCH_LOGINS_PER_S (default 100).
 *
 * @module
 */
import { TokenIssuer } from "../auth/tokens.ts";
import { freePort, startComponent, stopAll, until } from "./_components.ts";
import { num, saveResult, summarize, table, writeBenchmarksSection } from "./_stats.ts";

const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const PHASE_MS = Number(Deno.env.get("BENCH_PHASE_MS") ?? "4000");
const LOGINS_PER_S = Number(Deno.env.get("BENCH_LOGINS_PER_S") ?? "100");
const SECTION = "## Login flood (deno task bench:login)";
const JWT_SECRET = "bench-login-secret-of-at-least-32-characters";
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1" || Deno.env.has("BENCH_ROUNDS") ||
  Deno.env.has("BENCH_PHASE_MS") || Deno.env.has("BENCH_LOGINS_PER_S");

const watchdog = setTimeout(async () => {
  console.error("bench:login: watchdog expired, stopping");
  await stopAll();
  Deno.exit(2);
}, 300_000);

/** p50/p99 of one probe (one request at a time) over `ms`. */
async function probe(
  request: () => Promise<Response>,
  ms: number,
): Promise<{ p50Ms: number; p99Ms: number; count: number; errors: number }> {
  const samples = new Float64Array(200_000);
  let count = 0;
  let errors = 0;
  const end = performance.now() + ms;
  while (performance.now() < end && count < samples.length) {
    const t0 = performance.now();
    try {
      const response = await request();
      await response.body?.cancel();
      if (response.ok) samples[count++] = performance.now() - t0;
      else errors++;
    } catch {
      errors++;
    }
  }
  const s = summarize(samples, count, errors, ms / 1000);
  return { p50Ms: s.p50Ms, p99Ms: s.p99Ms, count, errors };
}

/** Sends `perSecond` logins (open loop) until stopped; counts answers by status. */
function flood(url: string, perSecond: number) {
  const statuses = new Map<number, number>();
  const waiting = new Set<Promise<void>>();
  let n = 0;
  const timer = setInterval(() => {
    const i = n++;
    const done = fetch(`${url}/api/auth/login`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      },
      body: JSON.stringify({ username: `flood-${i}`, password: "guess-guess" }),
    }).then(async (response) => {
      await response.body?.cancel();
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    }, () => void statuses.set(0, (statuses.get(0) ?? 0) + 1)).finally(() => waiting.delete(done));
    waiting.add(done);
  }, 1000 / perSecond);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(waiting);
      return { sent: n, statuses };
    },
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};
const cell = (values: number[]) =>
  `${num(median(values), 2)} (${num(Math.min(...values), 2)}–${num(Math.max(...values), 2)})`;

try {
  const started = new Date().toISOString();
  console.log(`# bench:login (${started}, ${navigator.hardwareConcurrency} cores)\n`);
  const dir = await Deno.makeTempDir({ prefix: "bench-login-" });
  const brokerEndpoint = `tcp://127.0.0.1:${freePort()}`;
  const stateFrontend = `tcp://127.0.0.1:${freePort()}`;
  const stateBackend = `tcp://127.0.0.1:${freePort()}`;
  const port = freePort();
  startComponent("broker", ["--endpoint", brokerEndpoint, "--health-port", "0"], {
    PLANTD_BROKER_BUSES: JSON.stringify([
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
    "--jwt-secret",
    JWT_SECRET,
  ]);
  startComponent("gateway", [
    "--port",
    String(port),
    "--broker-endpoint",
    brokerEndpoint,
    "--buses",
    JSON.stringify({ state: stateBackend }),
    "--auth-db",
    `${dir}/auth.db`,
    "--metrics-db",
    "",
    // The flood's addresses are named by X-Forwarded-For from this "proxy".
    "--trusted-proxies",
    JSON.stringify(["127.0.0.1"]),
    // Request limits far above the probes' rate (they come from one address).
    "--rate-limit-per-ip",
    "1000000000",
    "--rate-limit-per-token",
    "1000000000",
  ], { PLANTD_GATEWAY_JWT_SECRET: JWT_SECRET });
  const url = `http://127.0.0.1:${port}`;
  const admin = (await new TokenIssuer({ secret: JWT_SECRET, issuer: "plantd", audience: "plantd" })
    .issue({ sub: "user:bench-admin", name: "bench-admin", roles: [], perms: ["*"] }, 3600)).token;
  const asAdmin = { authorization: `Bearer ${admin}`, "content-type": "application/json" };
  await until(
    async () => {
      const response = await fetch(`${url}/api/state/bench/key`, {
        method: "PUT",
        headers: asAdmin,
        body: JSON.stringify({ value: "value-of-the-benchmark-key" }),
      });
      await response.body?.cancel();
      return response.ok;
    },
    60_000,
    "gateway with state",
  );
  // A logged-in user's token: its check includes the session-epoch lookup.
  const created = await fetch(`${url}/api/auth/users`, {
    method: "POST",
    headers: asAdmin,
    body: JSON.stringify({ username: "reader", password: "reader-password", roles: ["viewer"] }),
  });
  await created.body?.cancel();
  const login = await fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": "10.255.0.1" },
    body: JSON.stringify({ username: "reader", password: "reader-password" }),
  });
  const { access_token: token } = await login.json();
  const livez = () => fetch(`${url}/livez`);
  const cachedGet = () =>
    fetch(`${url}/api/state/bench/key`, { headers: { authorization: `Bearer ${token}` } });
  // Warm up (the cache, the connection, the JIT).
  await probe(cachedGet, 1000);
  await probe(livez, 500);

  type Phase = { livez: number[]; livez99: number[]; get: number[]; get99: number[] };
  const phase = (): Phase => ({ livez: [], livez99: [], get: [], get99: [] });
  const quiet = phase();
  const flooded = phase();
  const logins: Array<{ sent: number; statuses: Record<string, number> }> = [];
  const measure = async (into: Phase) => {
    // Both probes at once, as a dashboard and a health checker would.
    const [l, g] = await Promise.all([probe(livez, PHASE_MS), probe(cachedGet, PHASE_MS)]);
    into.livez.push(l.p50Ms);
    into.livez99.push(l.p99Ms);
    into.get.push(g.p50Ms);
    into.get99.push(g.p99Ms);
  };
  for (let round = 0; round < ROUNDS; round++) {
    await measure(quiet);
    const driver = flood(url, LOGINS_PER_S);
    await measure(flooded);
    const { sent, statuses } = await driver.stop();
    logins.push({ sent, statuses: Object.fromEntries(statuses) });
    console.error(`round ${round + 1}/${ROUNDS}: ${sent} logins ${JSON.stringify(logins.at(-1))}`);
    // Let the pool drain before the next quiet phase.
    await new Promise((r) => setTimeout(r, 1000));
  }
  const rows = [
    ["GET /livez, no logins", cell(quiet.livez), cell(quiet.livez99)],
    [
      `GET /livez, ${LOGINS_PER_S} logins/s (rotating usernames and X-Forwarded-For addresses)`,
      cell(flooded.livez),
      cell(flooded.livez99),
    ],
    [
      "cached GET /api/state/bench/key (bearer token of a login), no logins",
      cell(quiet.get),
      cell(quiet.get99),
    ],
    [
      `same, ${LOGINS_PER_S} logins/s (rotating usernames and X-Forwarded-For addresses)`,
      cell(flooded.get),
      cell(flooded.get99),
    ],
  ];
  const total = (status: string) => logins.reduce((n, l) => n + (l.statuses[status] ?? 0), 0);
  const sent = logins.reduce((n, l) => n + l.sent, 0);
  const lines = [
    `${ROUNDS} interleaved rounds of ${PHASE_MS / 1000} s per phase; median (min–max) over rounds.`,
    "",
    table(["probe", "p50 ms", "p99 ms"], rows),
    "",
    `Logins during the flood phases: ${sent} sent; ${total("401")} checked (401, argon2id in the ` +
    `pool), ${total("503")} refused at once with 503 (pool full), ${total("429")} rate limited, ` +
    `${sent - total("401") - total("503") - total("429")} other.`,
  ];
  console.log(lines.join("\n"));
  const saved = await saveResult("login", {
    rounds: ROUNDS,
    phaseMs: PHASE_MS,
    loginsPerSecond: LOGINS_PER_S,
    overridden: NO_WRITE,
  }, { started, quiet, flooded, logins });
  console.log(`raw result: ${saved}`);
  if (!NO_WRITE) {
    await writeBenchmarksSection(
      SECTION,
      `${SECTION}\n\nCommand: \`deno task bench:login\` (bench/login.ts). Run ${started} on ` +
        `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}. Broker, state service ` +
        `and one gateway (authentication on, read cache on, \`hash_workers\` 1, ` +
        `\`hash_max_pending\` 32: the defaults; \`trusted_proxies\` 127.0.0.1 so each login ` +
        `names its own address) in child processes; probes and logins from the bench process. ` +
        `Raw results: bench/results/login-<time>.json.\n\n${lines.join("\n")}\n`,
    );
  }
  await Deno.remove(dir, { recursive: true });
} finally {
  clearTimeout(watchdog);
  await stopAll();
}
