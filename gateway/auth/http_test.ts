import assert from "node:assert/strict";
import { Hono, type MiddlewareHandler } from "hono";
import { Registry } from "prom-client";
import { AuthStore } from "../../auth/store.ts";
import { gatewayMetrics } from "../gateway_metrics.ts";
import { toApiError } from "../errors.ts";
import { fusingRouter } from "../fusing_router.ts";
import { SecureHeaders } from "../secure_headers.ts";
import { memoryCounters } from "../shared/counters.ts";
import { requestPipeline } from "./http.ts";
import { Guard } from "./guard.ts";

/** An app behind the real pipeline (authentication off), through compose or fused. */
async function app(fused: boolean, dir: string) {
  const store = await AuthStore.open(`file:${dir}/auth-${fused}.db`);
  const registry = new Registry();
  const onError = (error: Error) => {
    const api = toApiError(error);
    return Response.json(api.body(), { status: api.status });
  };
  const pipeline = requestPipeline({
    guard: new Guard(store, undefined),
    counters: memoryCounters(),
    metrics: gatewayMetrics(registry),
    headers: new SecureHeaders(false),
    onError,
    trustedProxies: [],
    allowedOrigins: [],
    rateLimitWindowMs: 60_000,
    rateLimitPerIp: 0,
    rateLimitPerToken: 0,
    publicMetrics: true,
    maxBodyBytes: 1024,
  });
  const router = fusingRouter();
  const hono = new Hono(fused ? { router } : {});
  hono.use("*", pipeline as unknown as MiddlewareHandler);
  hono.onError(onError);
  // A route that forgets to answer.
  hono.get("/api/silent", () => undefined as unknown as Response);
  hono.get("/api/silent-later", async () => {
    await Promise.resolve();
    return undefined as unknown as Response;
  });
  hono.get("/api/ok", (c) => c.json({ ok: true }));
  if (fused) router.fuse(pipeline, onError);
  return { hono, registry, store };
}

Deno.test("a route that answers nothing gets a 500 from the pipeline, counted, fused or not", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const fused of [false, true]) {
      const { hono, registry, store } = await app(fused, dir);
      try {
        for (const path of ["/api/silent", "/api/silent-later"]) {
          const response = await hono.request(path);
          assert.equal(response.status, 500, `${path} fused=${fused}`);
          assert.equal((await response.json()).error.code, "INTERNAL");
          assert.equal(response.headers.get("x-content-type-options"), "nosniff");
        }
        const ok = await hono.request("/api/ok");
        assert.equal(ok.status, 200);
        await ok.body?.cancel();
        const text = await registry.metrics();
        assert.match(text, /http_requests_total\{method="GET",route="[^"]*",status="500"\} 2/);
        assert.match(text, /http_requests_total\{method="GET",route="\/api\/ok",status="200"\} 1/);
      } finally {
        await store.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
