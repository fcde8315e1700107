/**
 * Hono's router with one change: a request that matches just the app-wide
 * request pipeline and one route handler gets the two fused into a single
 * handler. Hono calls a lone handler directly and returns its response
 * without a promise when it has one, where a pipeline in front of a route
 * goes through `compose`: three async frames per request, a measurable share
 * of a cached state read (bench/router_ab.ts compares the two). Routes with
 * more handlers (validators) still go through `compose`, and nothing changes
 * in what any handler sees. What this relies on in Hono is pinned by
 * gateway/fusing_router_test.ts: a Hono upgrade that changes it fails there.
 *
 * The fused handler does what `compose` does for the route: the route's
 * error goes to the app's error handler, and a response the route returns
 * becomes `c.res`.
 *
 * @module
 */
import type { Context, ErrorHandler, Next } from "hono";
import type { H, RouterRoute } from "hono/types";
import type { Result, Router } from "hono/router";
import { RegExpRouter } from "hono/router/reg-exp-router";
import { SmartRouter } from "hono/router/smart-router";
import { TrieRouter } from "hono/router/trie-router";

/** What Hono stores in its router: a handler and its route. */
type Entry = [H, RouterRoute];

/** The router of {@link fusingRouter}; the pipeline is named once the app has it. */
export interface FusingRouter extends Router<Entry> {
  /**
   * Fuses `pipeline` with lone routes. `onError` renders the routes' errors:
   * the handler the app was given with `app.onError` (Hono keeps it private).
   */
  fuse(pipeline: H, onError: ErrorHandler): void;
}

/** Hono's default router (SmartRouter over RegExpRouter and TrieRouter), fusing as above. */
export function fusingRouter(): FusingRouter {
  const inner: Router<Entry> = new SmartRouter({
    routers: [new RegExpRouter(), new TrieRouter()],
  });
  let pipeline: H | undefined;
  let onError: ErrorHandler | undefined;
  // RegExpRouter hands out the same handler list for a route every time, so a
  // route is fused once; a list built per match (TrieRouter) is fused per match.
  const fused = new WeakMap<object, Result<Entry>[0]>();

  const fuse = (handlers: Result<Entry>[0]): Result<Entry>[0] => {
    const [[route, routerRoute], params] = handlers[1]!;
    const both: H = (c, notFound) =>
      pipeline!(c, () => runRoute(c, route, notFound, onError!) as Promise<void>);
    // The route's own entry (its path for c.req.routePath) with its parameters.
    const one = [[[both, routerRoute], params]] as Result<Entry>[0];
    fused.set(handlers, one);
    return one;
  };

  return {
    name: "FusingRouter",
    add: (method, path, handler) => inner.add(method, path, handler),
    match(method, path) {
      const result = inner.match(method, path);
      const handlers = result[0];
      if (!pipeline || handlers.length !== 2 || handlers[0]![0][0] !== pipeline) return result;
      const one = fused.get(handlers) ?? fuse(handlers);
      return (result.length === 2 ? [one, result[1]] : [one]) as Result<Entry>;
    },
    fuse(p, e) {
      pipeline = p;
      onError = e;
    },
  };
}

/** Runs a route handler as `compose` does: its error rendered, its response kept. */
function runRoute(
  c: Context,
  route: H,
  notFound: Next,
  onError: ErrorHandler,
): Promise<void> | void {
  const rendered = (error: unknown): Promise<void> | void => {
    if (!(error instanceof Error)) throw error;
    c.error = error;
    const response = onError(error, c);
    if (response instanceof Promise) return response.then((r) => void (c.res = r));
    c.res = response;
  };
  const kept = (response: unknown): void => {
    if (response && !c.finalized) c.res = response as Response;
  };
  // compose answers "not found" after the last handler only if nobody answered;
  // Hono's own `next` for a lone handler does it regardless.
  const next: Next = () => c.finalized ? Promise.resolve() : notFound();
  let result: unknown;
  try {
    result = route(c, next);
  } catch (error) {
    return rendered(error);
  }
  if (result instanceof Promise) return result.then(kept, rendered);
  kept(result);
}
