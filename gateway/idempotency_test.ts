/** The Idempotency-Key header: a structured-field string (RFC 8941) or a bare value. */
import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import { idempotencyKeyHeader, keyedBody } from "./idempotency.ts";

Deno.test("Idempotency-Key takes a structured-field string (escapes, parameters ignored) or a bare value", () => {
  assert.equal(idempotencyKeyHeader(undefined), undefined);
  assert.equal(idempotencyKeyHeader(null), undefined);
  assert.equal(idempotencyKeyHeader('"8e03978e-40d5"'), "8e03978e-40d5");
  assert.equal(idempotencyKeyHeader('  "a b"  '), "a b", "spaces inside quotes, OWS around");
  assert.equal(idempotencyKeyHeader('"say \\"hi\\" \\\\o/"'), 'say "hi" \\o/');
  assert.equal(idempotencyKeyHeader('"k";origin=1'), "k");
  assert.equal(idempotencyKeyHeader("8e03978e-40d5"), "8e03978e-40d5");
  assert.equal(idempotencyKeyHeader('"' + "x".repeat(255) + '"')?.length, 255);
  for (
    const bad of [
      "",
      '""',
      '"open',
      '"a"b',
      '"a", "b"',
      "a, b",
      "a b",
      '"\\n"',
      '"é"',
      "x".repeat(256),
      '"' + "x".repeat(256) + '"',
    ]
  ) {
    assert.throws(
      () => idempotencyKeyHeader(bad),
      (e: unknown) => e instanceof ApiError && e.code === "BAD_REQUEST",
      JSON.stringify(bad),
    );
  }
});

Deno.test("a key goes into state write requests only, and must agree with one in the body", () => {
  const state = "org.plantd.State";
  assert.deepEqual(keyedBody(state, ["delete", '{"service":"s","key":"k"}'], "K"), {
    body: ["delete", '{"service":"s","key":"k","idempotency_key":"K"}'],
    key: "K",
  });
  // One in the body alone counts (the reply is then read as keyed).
  assert.equal(keyedBody(state, ["delete", '{"idempotency_key":"B"}'], undefined).key, "B");
  assert.equal(keyedBody(state, ["delete", '{"idempotency_key":"K"}'], "K").key, "K");
  const unkeyed = ["state-get", '{"service":"s","key":"k"}'];
  assert.equal(keyedBody(state, unkeyed, undefined).body, unkeyed, "untouched without a key");
  for (
    const [service, body] of [
      [state, ["delete", '{"idempotency_key":"other"}']],
      [state, ["state-get", "{}"]],
      [state, ["delete", "[1]"]],
      ["org.plantd.module.Echo", ["echo", "{}"]],
    ] as const
  ) {
    assert.throws(
      () => keyedBody(service, [...body], "K"),
      (e: unknown) => e instanceof ApiError && e.code === "BAD_REQUEST",
      `${service} ${body}`,
    );
  }
});
