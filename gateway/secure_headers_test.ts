import assert from "node:assert/strict";
import { Hono } from "hono";
import { secureHeaders } from "hono/secure-headers";
import { SecureHeaders, secureHeadersOptions } from "./secure_headers.ts";

/** The headers hono/secure-headers puts on a response that had `own`. */
async function fromMiddleware(tls: boolean, own: Record<string, string>) {
  const app = new Hono();
  app.use("*", secureHeaders(secureHeadersOptions(tls)));
  app.get("/", (c) => c.body("x", 200, own));
  return [...(await app.request("/")).headers].sort();
}

for (const tls of [false, true]) {
  Deno.test(`SecureHeaders sets what hono/secure-headers sets (tls ${tls})`, async () => {
    const own = { "content-type": "text/plain", "x-frame-options": "ALLOW", "x-powered-by": "me" };
    const expected = await fromMiddleware(tls, own);
    const headers = new SecureHeaders(tls);

    const applied = new Response("x", { headers: own });
    headers.apply(applied);
    assert.deepEqual([...applied.headers].sort(), expected);

    const built = headers.mark(
      new Response("x", { headers: headers.with({ "content-type": "text/plain" }) }),
    );
    headers.apply(built); // marked: left alone
    assert.deepEqual(
      [...built.headers].sort(),
      expected.filter(([name]) => name !== "x-powered-by"),
    );
    assert.deepEqual(
      headers.list.some(([name]) => name === "strict-transport-security"),
      tls,
    );
  });
}
