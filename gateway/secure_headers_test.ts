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
    headers.apply(applied, false);
    assert.deepEqual([...applied.headers].sort(), expected);

    // An API response: the OWASP REST set, whatever the route had set.
    const api = new Response("{}", { headers: { ...own, "content-type": "application/json" } });
    headers.apply(api, true);
    const apiHeaders = Object.fromEntries(api.headers);
    assert.equal(apiHeaders["x-content-type-options"], "nosniff");
    assert.equal(apiHeaders["x-frame-options"], "DENY");
    assert.equal(
      apiHeaders["content-security-policy"],
      "default-src 'none'; frame-ancestors 'none'",
    );
    assert.equal(apiHeaders["cross-origin-resource-policy"], "same-origin");
    assert.equal("strict-transport-security" in apiHeaders, tls);
    assert.equal("x-powered-by" in apiHeaders, false);

    const built = headers.mark(
      new Response("{}", { headers: headers.apiHeaders({ "content-type": "application/json" }) }),
    );
    headers.apply(built, true); // marked: left alone
    assert.deepEqual(
      [...built.headers].sort(),
      [["content-type", "application/json"], ...headers.apiList].map(([n, v]) => [n, v]).sort(),
    );
    assert.deepEqual(
      headers.list.some(([name]) => name === "strict-transport-security"),
      tls,
    );
  });
}
