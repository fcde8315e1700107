/**
 * `deno task bench:router:ab`: the gateway's request pipeline
 * (gateway/auth/http.ts, authentication off, no rate limits) in front of one
 * constant route, routed two ways in this process through `app.request()`:
 * by the fusing router (gateway/fusing_router.ts: pipeline and route in one
 * handler, answered without a promise) and by Hono's own router (the
 * pipeline and the route through `compose`). It answers whether the fusing
 * router is worth relying on Hono's internals (which
 * gateway/fusing_router_test.ts pins). The two apps take turns burst by
 * burst within each round, so a shared machine's load hits both alike; the
 * ratio of the medians is the figure to read there.
 *
 * @module
 */
import { Hono, type MiddlewareHandler } from "hono";
import type { H } from "hono/types";
import { Registry } from "prom-client";
import { AuthStore } from "../auth/store.ts";
import { Guard } from "../gateway/auth/guard.ts";
import { requestPipeline } from "../gateway/auth/http.ts";
import { toApiError } from "../gateway/errors.ts";
import { fusingRouter } from "../gateway/fusing_router.ts";
import { gatewayMetrics } from "../gateway/gateway_metrics.ts";
import { SecureHeaders } from "../gateway/secure_headers.ts";
import { memoryCounters } from "../gateway/shared/counters.ts";
import { num } from "./_stats.ts";
import { runBench } from "./harness.ts";

/** Requests in one burst; the two apps take turns burst by burst. */
const BURST = 500;
const SIDES = ["fused", "composed"] as const;
type Side = typeof SIDES[number];
type Metrics = Record<string, number>;

/** The app: the gateway's pipeline and one constant route, fused or composed. */
function app(fused: boolean, guard: Guard): Hono {
  const metrics = gatewayMetrics(new Registry());
  const onError = (error: Error, c: Parameters<MiddlewareHandler>[0]) => {
    const api = toApiError(error);
    return c.json(api.body(), api.status, api.headers);
  };
  const pipeline = requestPipeline({
    guard,
    counters: memoryCounters(),
    metrics,
    headers: new SecureHeaders(false),
    onError,
    trustedProxies: [],
    allowedOrigins: [],
    rateLimitWindowMs: 60_000,
    rateLimitPerIp: 0,
    rateLimitPerToken: 0,
    publicMetrics: true,
    metricsToken: undefined,
    maxBodyBytes: 1 << 20,
  });
  const router = fusingRouter();
  const app = new Hono(fused ? { router } : {});
  app.use("*", pipeline as unknown as MiddlewareHandler);
  app.onError(onError);
  app.get("/api/constant", (c) => c.json({ constant: true }));
  if (fused) router.fuse(pipeline as unknown as H, onError);
  return app;
}

/** Requests answered and the time they took, over `ms` of bursts. */
interface Tally {
  count: number;
  ms: number;
}

/**
 * One burst of `app.request()` calls, awaiting only what is a promise (as
 * Deno.serve does), then a turn of the event loop (the harness's timers run
 * there, unmeasured).
 */
async function burst(target: Hono, request: Request, tally: Tally): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < BURST; i++) {
    const response = target.request(request);
    if (response instanceof Promise) await response;
  }
  tally.ms += performance.now() - start;
  tally.count += BURST;
  await new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Both apps for `ms` each, burst by burst in turn: load that comes and goes
 * on a shared machine hits both alike.
 */
async function measure(apps: Record<Side, Hono>, ms: number): Promise<Map<string, Metrics>> {
  const request = new Request("http://localhost/api/constant");
  const tallies: Record<Side, Tally> = {
    fused: { count: 0, ms: 0 },
    composed: { count: 0, ms: 0 },
  };
  let turn = 0;
  while (tallies.fused.ms < ms || tallies.composed.ms < ms) {
    const side: Side = turn++ % 2 === 0 ? "fused" : "composed";
    await burst(apps[side], request, tallies[side]);
  }
  const rate = (t: Tally) => t.count / (t.ms / 1000);
  return new Map(SIDES.map((side) => [side, { "req/s": rate(tallies[side]) }]));
}

await runBench({
  name: "router-ab",
  title: "Gateway routing: fused against composed (deno task bench:router:ab)",
  command: "`deno task bench:router:ab` (bench/router_ab.ts)",
  settings: {
    measure_ms: { env: "BENCH_MEASURE_MS", default: 2000, help: "measured time per row and round" },
    warmup_ms: { env: "BENCH_WARMUP_MS", default: 500, help: "unmeasured time per app first" },
  },
}, async (bench) => {
  const { measure_ms: measureMs, warmup_ms: warmupMs } = bench.settings;
  /** Fused over composed req/s of each round (the two measured side by side). */
  const paired: number[] = [];
  const store = await AuthStore.open(":memory:");
  try {
    const guard = new Guard(store, undefined);
    const apps = { fused: app(true, guard), composed: app(false, guard) };
    await measure(apps, warmupMs);
    bench.row("fused", "fusing router (gateway/fusing_router.ts)");
    bench.row("composed", "Hono's router and compose");
    await bench.rounds([{ key: "both", rows: [...SIDES] }], async () => {
      const measured = await measure(apps, measureMs);
      paired.push(measured.get("fused")!["req/s"]! / measured.get("composed")!["req/s"]!);
      return measured;
    });
  } finally {
    await store.close();
  }
  const ratio = bench.stats("fused", "req/s").median / bench.stats("composed", "req/s").median;
  const sorted = [...paired].sort((a, b) => a - b);
  const pairedMedian = sorted[Math.floor(sorted.length / 2)] ?? NaN;
  return {
    description: "One process, no sockets: `app.request()` of GET /api/constant (a constant " +
      "JSON reply) behind the gateway's request pipeline (authentication off, no rate limits), " +
      `one request at a time, the two apps taking turns in bursts of ${BURST} requests ` +
      `until each has run ${measureMs} ms per round, after a ${warmupMs} ms warm-up.`,
    tables: [{
      rows: ["fused", "composed"],
      columns: [
        { header: "routing", show: "label" },
        { header: "req/s (median)", show: "median:req/s" },
        { header: "req/s range", show: "range:req/s" },
      ],
    }],
    notes: [
      `Fused against composed: ${num(ratio, 2)}x the median req/s; per round (measured side ` +
      `by side) ${sorted.map((r) => `${num(r, 2)}x`).join(", ")}, median ${num(pairedMedian, 2)}x.`,
    ],
    data: { ratio, paired },
  };
});
