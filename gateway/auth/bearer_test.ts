import assert from "node:assert/strict";
import { bearerToken } from "./http.ts";

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
