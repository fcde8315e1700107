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
 * Settings: `phase_ms` (BENCH_PHASE_MS, 4000), `logins_per_s`
 * (BENCH_LOGINS_PER_S, 100), and the harness's `rounds`. Runs on
 * bench/harness.ts: quiet and flooded phases interleave in rotating order.
 *
 * @module
 */
import { TokenIssuer } from "../auth/tokens.ts";
import { summarize } from "./_stats.ts";
import {
  freePort,
  runBench,
  startComponent,
  startStateService,
  stopAll,
  until,
} from "./harness.ts";

const JWT_SECRET = "bench-login-secret-of-at-least-32-characters";

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

await runBench({
  name: "login",
  title: "Login flood (deno task bench:login)",
  command: "`deno task bench:login` (bench/login.ts)",
  settings: {
    phase_ms: { env: "BENCH_PHASE_MS", default: 4000, help: "length of each phase" },
    logins_per_s: { env: "BENCH_LOGINS_PER_S", default: 100, help: "login flood rate" },
  },
  watchdogMs: 600_000,
}, async (bench) => {
  const { phase_ms: phaseMs, logins_per_s: loginsPerS } = bench.settings;
  const dir = await Deno.makeTempDir({ prefix: "bench-login-" });
  try {
    const brokerEndpoint = `tcp://127.0.0.1:${freePort()}`;
    const stateFrontend = `tcp://127.0.0.1:${freePort()}`;
    const stateBackend = `tcp://127.0.0.1:${freePort()}`;
    const port = freePort();
    startComponent("broker", ["--endpoint", brokerEndpoint, "--health-port", "0"], {
      PLANTD_BROKER_BUSES: JSON.stringify([
        { name: "state", frontend: stateFrontend, backend: stateBackend },
      ]),
    });
    startStateService(`${dir}/state.db`, brokerEndpoint, stateFrontend, [
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
    const admin =
      (await new TokenIssuer({ secret: JWT_SECRET, issuer: "plantd", audience: "plantd" })
        .issue({ sub: "user:bench-admin", name: "bench-admin", roles: [], perms: ["*"] }, 3600))
        .token;
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

    const flooded = `${loginsPerS} logins/s (rotating usernames and X-Forwarded-For addresses)`;
    bench.row("livez-quiet", "GET /livez, no logins");
    bench.row("livez-flood", `GET /livez, ${flooded}`);
    bench.row("get-quiet", "cached GET /api/state/bench/key (bearer token of a login), no logins");
    bench.row("get-flood", `same, ${flooded}`);
    const units = [
      { key: "quiet", rows: ["livez-quiet", "get-quiet"], flood: false },
      { key: "flood", rows: ["livez-flood", "get-flood"], flood: true },
    ];
    await bench.rounds(units, async (unit) => {
      const driver = unit.flood ? flood(url, loginsPerS) : undefined;
      // Both probes at once, as a dashboard and a health checker would.
      const [l, g] = await Promise.all([probe(livez, phaseMs), probe(cachedGet, phaseMs)]);
      const logins: Record<string, number> = {};
      if (driver) {
        const { sent, statuses } = await driver.stop();
        const of = (status: number) => statuses.get(status) ?? 0;
        Object.assign(logins, {
          "logins sent": sent,
          "logins 401": of(401),
          "logins 503": of(503),
          "logins 429": of(429),
          "logins other": sent - of(401) - of(503) - of(429),
        });
        // Let the pool drain before the next phase.
        await new Promise((r) => setTimeout(r, 1000));
      }
      return new Map([
        [unit.rows[0]!, { "p50 ms": l.p50Ms, "p99 ms": l.p99Ms, errors: l.errors, ...logins }],
        [unit.rows[1]!, { "p50 ms": g.p50Ms, "p99 ms": g.p99Ms, errors: g.errors }],
      ]);
    });
  } finally {
    await stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const sum = (metric: string) => bench.stats("livez-flood", metric).sum;
  return {
    description: "Broker, state service and one gateway in child processes; probes and logins " +
      "from the bench process. The gateway runs with authentication on, the read cache on, " +
      "`hash_workers` 1 and `hash_max_pending` 32 (the defaults); not defaults: " +
      "`trusted_proxies` 127.0.0.1 (so each login names its own address in X-Forwarded-For) and " +
      "`rate_limit_per_ip`/`rate_limit_per_token` 1e9 (the probes come from one address). " +
      `Logins rotate usernames (none exists: each costs the dummy argon2id hash). Phases of ` +
      `${phaseMs / 1000} s, with and without the flood, interleave; the probes send one request ` +
      "at a time each, both at once.",
    tables: [{
      rows: ["livez-quiet", "livez-flood", "get-quiet", "get-flood"],
      columns: [
        { header: "probe", show: "label" },
        { header: "p50 ms (median)", show: "median:p50 ms", decimals: 2 },
        { header: "p50 range", show: "range:p50 ms", decimals: 2 },
        { header: "p99 ms (median)", show: "median:p99 ms", decimals: 2 },
        { header: "p99 range", show: "range:p99 ms", decimals: 2 },
        { header: "errors", show: "sum:errors" },
      ],
    }],
    notes: [
      `Logins during the flood phases: ${sum("logins sent")} sent; ${sum("logins 401")} checked ` +
      `(401, argon2id in the pool), ${sum("logins 503")} refused at once with 503 (pool full), ` +
      `${sum("logins 429")} rate limited, ${sum("logins other")} other.`,
    ],
  };
});
