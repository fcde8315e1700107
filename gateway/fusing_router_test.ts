import assert from "node:assert/strict";
import { Hono, type MiddlewareHandler } from "hono";
import { fusingRouter } from "./fusing_router.ts";

/** An app with a pipeline that labels every response with the route it saw. */
function app(fused: boolean) {
  const router = fusingRouter();
  const app = new Hono(fused ? { router } : {});
  const seen: string[] = [];
  const pipeline: MiddlewareHandler = async (c, next) => {
    c.set("who" as never, "pipeline" as never);
    await next();
    c.res.headers.set("x-route", c.req.routePath);
    seen.push(`${c.req.method} ${c.req.routePath} ${c.res.status}`);
    return c.res;
  };
  app.use("*", pipeline);
  app.onError((error, c) => c.json({ error: error.message }, 418));
  app.get("/sync/:id", (c) => c.text(`sync ${c.req.param("id")} ${c.get("who" as never)}`));
  app.get("/async", async (c) => {
    await Promise.resolve();
    return c.text("async");
  });
  app.get("/throws", () => {
    throw new Error("sync failure");
  });
  app.get("/rejects", async () => {
    await Promise.resolve();
    throw new Error("async failure");
  });
  app.get("/header", (c) => {
    c.header("x-own", "1");
    return c.text("with header");
  });
  app.get("/next", (_c, next) => next());
  app.get("/answered-then-next", async (c, next) => {
    c.res = c.text("mine", 201);
    await next();
  });
  // Two handlers: not fused.
  app.get("/two", async (_c, next) => await next(), (c) => c.text("second"));
  if (fused) router.fuse(pipeline, (error, c) => c.json({ error: error.message }, 418));
  return { app, router, seen };
}

Deno.test("a fused route answers as the composed one does", async () => {
  const paths = [
    "/sync/7",
    "/async",
    "/throws",
    "/rejects",
    "/header",
    "/next",
    "/answered-then-next",
    "/two",
    "/none",
  ];
  const plain = app(false);
  const fused = app(true);
  for (const path of paths) {
    const [a, b] = await Promise.all([
      plain.app.request(path),
      fused.app.request(path),
    ]);
    const summary = async (r: Response) => ({
      status: r.status,
      body: await r.text(),
      route: r.headers.get("x-route"),
      own: r.headers.get("x-own"),
    });
    assert.deepEqual(await summary(b), await summary(a), path);
  }
  assert.deepEqual(fused.seen, plain.seen);
  assert.deepEqual(fused.seen.includes("GET /throws 418"), true);
});

Deno.test("only a pipeline with one route handler is fused", () => {
  const { router } = app(true);
  assert.deepEqual(router.match("GET", "/sync/1")[0].length, 1);
  assert.deepEqual(router.match("GET", "/two")[0].length, 3);
  // Nothing but the pipeline (no route): as it was.
  assert.deepEqual(router.match("GET", "/none")[0].length, 1);
  // The same fused handler each time: nothing is built per request.
  assert.deepEqual(router.match("GET", "/sync/1")[0][0], router.match("GET", "/sync/2")[0][0]);
});
