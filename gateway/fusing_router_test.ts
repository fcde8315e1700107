import assert from "node:assert/strict";
import { type Context, type ErrorHandler, Hono, type MiddlewareHandler, type Next } from "hono";
import type { H } from "hono/types";
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

// What the fusing router relies on in Hono (hono/dist/hono-base.js #dispatch,
// compose.js, request.js): a Hono upgrade that changes any of it fails here.

/** A synchronous pipeline: it answers without a promise when the route does. */
function syncApp(fused: boolean) {
  const router = fusingRouter();
  const app = new Hono(fused ? { router } : {});
  const counts = { pipeline: 0, route: 0 };
  const pipeline = (c: Context, next: Next): Response | Promise<Response> => {
    counts.pipeline++;
    if (c.req.path === "/refused") throw new Error("refused by the pipeline");
    const after = (): Response => {
      c.res.headers.set("x-route", c.req.routePath);
      return c.res;
    };
    const done = next() as unknown;
    return done instanceof Promise ? done.then(after) : after();
  };
  const onError: ErrorHandler = (error, c) => c.json({ error: error.message }, 418);
  app.use("*", pipeline as unknown as MiddlewareHandler);
  app.onError(onError);
  app.get("/constant/:id", (c) => {
    counts.route++;
    return c.text(`constant ${c.req.param("id")}`);
  });
  app.get("/refused", (c) => c.text("never"));
  if (fused) router.fuse(pipeline as unknown as H, onError);
  return { app, router, counts, pipeline };
}

Deno.test("Hono's router gives [[handler, route], params] entries, the app.use function itself first", () => {
  // Hono's default router, which fusingRouter wraps.
  assert.equal(new Hono().router.name, "SmartRouter");
  const plain = syncApp(false);
  const [entries, stash] = plain.app.router.match("GET", "/constant/7");
  assert.equal(entries.length, 2);
  const [[first, firstRoute]] = entries[0]!;
  assert.equal(first, plain.pipeline, "the very function given to app.use");
  assert.deepEqual([firstRoute.method, firstRoute.path], ["ALL", "/*"]);
  const [[, route], params] = entries[1]!;
  assert.deepEqual([route.method, route.path], ["GET", "/constant/:id"]);
  // Parameters: a value, or an index into the stash (RegExpRouter).
  const id = (params as Record<string, unknown>).id;
  assert.equal(stash ? stash[id as number] : id, "7");

  const fused = syncApp(true);
  const [one] = fused.app.router.match("GET", "/constant/7");
  assert.equal(one.length, 1);
  assert.notEqual(one[0]![0][0], fused.pipeline, "the fused handler, not the pipeline");
  assert.equal(one[0]![0][1].path, "/constant/:id", "the route's own entry");
});

Deno.test("Hono's dispatch calls a lone handler directly and returns its response without a promise", async () => {
  const app = new Hono();
  app.notFound((c) => c.text("not found here", 404));
  app.get("/lone", (c) => c.text("lone"));
  app.get("/lone-next", (_c, next) => next());
  app.get("/two", (_c, next) => next(), (c) => c.text("second"));
  const lone = app.request("/lone");
  assert.ok(lone instanceof Response, "no promise");
  assert.equal(await lone.text(), "lone");
  // The `next` of a lone handler is Hono's not-found handler.
  const passed = await app.request("/lone-next");
  assert.deepEqual([passed.status, await passed.text()], [404, "not found here"]);

  // Two handlers go through compose, which always answers with a promise.
  const two = app.request("/two");
  assert.ok(two instanceof Promise);
  assert.equal(await (await two).text(), "second");
});

Deno.test("fused, a synchronous pipeline and route answer without a promise (composed: with one), each called once", async () => {
  const fused = syncApp(true);
  const answer = fused.app.request("/constant/3");
  assert.ok(answer instanceof Response, "fused: the pipeline and route, no compose");
  assert.deepEqual([await answer.text(), answer.headers.get("x-route")], [
    "constant 3",
    "/constant/:id",
  ]);
  assert.deepEqual(fused.counts, { pipeline: 1, route: 1 });

  const plain = syncApp(false);
  const composed = plain.app.request("/constant/3");
  assert.ok(composed instanceof Promise, "composed: a promise");
  const response = await composed;
  assert.deepEqual([await response.text(), response.headers.get("x-route")], [
    "constant 3",
    "/constant/:id",
  ]);
  assert.deepEqual(plain.counts, { pipeline: 1, route: 1 });
});

Deno.test("fused, an error the pipeline throws reaches the app's error handler as when composed", async () => {
  for (const fused of [true, false]) {
    const { app } = syncApp(fused);
    const response = await app.request("/refused");
    assert.deepEqual([response.status, await response.json()], [418, {
      error: "refused by the pipeline",
    }], fused ? "fused" : "composed");
  }
});
