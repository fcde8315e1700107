import assert from "node:assert/strict";
import { WriteHealth } from "./write_health.ts";

const full = () =>
  Object.assign(new Error("SQLITE_FULL: database or disk is full"), { code: "SQLITE_FULL" });
const io = () => Object.assign(new Error("SQLITE_IOERR: disk I/O error"), { code: "SQLITE_IOERR" });

Deno.test("failing writes log once per class with their cause, turn store_writes DOWN until a commit succeeds", () => {
  const lines: Array<{ level: string; properties: Record<string, unknown> }> = [];
  const health = new WriteHealth({
    error: (_message, properties) => lines.push({ level: "error", properties }),
    info: (_message, properties) => lines.push({ level: "info", properties }),
  });
  assert.equal(health.check().status, "UP");

  for (let i = 0; i < 5; i++) health.failed(full(), 3);
  health.failed(io(), 1);
  health.failed(full(), 2);
  // One line per class in the window, each with its cause.
  assert.deepEqual(
    lines.map((l) => [l.level, l.properties.failure, l.properties.cause]),
    [
      ["error", "STORAGE_FULL", "SQLITE_FULL: database or disk is full"],
      ["error", "STORAGE_IO", "SQLITE_IOERR: disk I/O error"],
    ],
  );
  const down = health.check();
  assert.equal(down.status, "DOWN");
  assert.equal(down.output, "STORAGE_FULL: SQLITE_FULL: database or disk is full");
  assert.equal(health.failing, "STORAGE_FULL");

  health.succeeded();
  assert.equal(health.check().status, "UP");
  assert.equal(health.check().output, undefined);
  assert.equal(lines.length, 3);
  assert.equal(lines[2]!.level, "info");
  assert.equal(lines[2]!.properties.failure, "STORAGE_FULL");
});
