import assert from "node:assert/strict";
import { Hono } from "hono";
import { bearerToken, credentialOf } from "./http.ts";

// The grammar the gateway has always accepted (RFC 6750's b64token is looser
// than a JWT, so only whitespace delimits): the fast path must not widen it.
const GRAMMAR = /^Bearer\s+(\S+)\s*$/i;

Deno.test("bearerToken reads what the Bearer grammar reads, and nothing else", () => {
  const cases = [
    "Bearer abc.def.ghi",
    "Bearer  abc",
    "Bearer abc  ",
    "Bearer \tabc\t",
    "bearer abc",
    "BEARER abc",
    "Bearer\tabc",
    "Bearer a b",
    "Bearer ",
    "Bearer  ",
    "Bearer",
    "Bearerabc",
    "Basic abc",
    "Bearer abc\u00a0",
    "Bearer \u2003abc",
    "Bearer a\u2028b",
    "Bearer abc\n",
    "",
  ];
  for (const header of cases) {
    assert.equal(bearerToken(header), GRAMMAR.exec(header)?.[1], JSON.stringify(header));
  }
});

Deno.test("each request's credential is its own header's, whatever header the one before sent", async () => {
  const app = new Hono();
  app.get("/", (c) => c.json(credentialOf(c) ?? null));
  const credential = async (header: string) => {
    const found = await (await app.request("/", { headers: { authorization: header } })).json();
    assert.equal(found.source, "header");
    return found.credential;
  };
  // Repeated, alternating, refused between two good ones, and back.
  const headers = [
    "Bearer aaa.bbb.ccc",
    "Bearer aaa.bbb.ccc",
    "Bearer aaa.bbb.ddd",
    "Bearer aaa.bbb.ccc",
    "Bearer aaa.bbb ccc",
    "Basic aaa.bbb.ccc",
    "Bearer aaa.bbb.ccc",
    "Bearer pk_key",
  ];
  for (const header of headers) {
    assert.equal(await credential(header), GRAMMAR.exec(header)?.[1] ?? "", header);
  }
});
