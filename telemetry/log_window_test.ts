import assert from "node:assert/strict";
import { LogWindow } from "./log_window.ts";

Deno.test("LogWindow lets a line through once per window per id and reports how many it held back", () => {
  let now = 0;
  const throttle = new LogWindow(10_000, () => now);
  assert.equal(throttle.pass("a"), 0);
  assert.equal(throttle.pass("b"), 0, "ids are throttled apart");
  now = 9_999;
  assert.equal(throttle.pass("a"), undefined);
  assert.equal(throttle.pass("a"), undefined);
  now = 10_000;
  assert.equal(throttle.pass("a"), 2, "the next line says two were held back");
  assert.equal(throttle.pass("a"), undefined);
});
