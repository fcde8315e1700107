/**
 * The log lines a running component writes are the seed's JSON format, which
 * deploy/promtail parses: one object per line with exactly these keys.
 */
import assert from "node:assert/strict";
import { freePort, spawnWatched, waitFor } from "./_helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const KEYS = ["context", "fields", "level", "message", "service", "timestamp"];

Deno.test("a broker started from main.ts logs one seed-format JSON object per stderr line", async () => {
  const port = freePort();
  const child = spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "broker",
        "--endpoint",
        `tcp://127.0.0.1:${port}`,
        "--health-port",
        "0",
        "--buses",
        "[]",
      ],
      cwd: ROOT,
      env: { PLANTD_BROKER_LOG_LEVEL: "info" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
  try {
    await waitFor(() => child.stderr().includes("broker listening"), {
      what: "the broker's listening line",
      timeoutMs: 20_000,
    });
  } finally {
    await child.stop("SIGTERM");
  }
  const lines = child.stderr().split("\n").filter((line) => line.length > 0);
  assert.ok(lines.length >= 2, child.stderr()); // listening, stopped
  for (const line of lines) {
    const record = JSON.parse(line);
    assert.deepEqual(Object.keys(record).sort(), KEYS, line);
    assert.equal(record.service, "broker", line);
    assert.ok(["debug", "info", "warn", "error", "fatal"].includes(record.level), line);
    assert.equal(new Date(record.timestamp).toISOString(), record.timestamp, line);
    assert.equal(typeof record.context, "string", line);
    assert.equal(typeof record.message, "string", line);
    assert.equal(typeof record.fields, "object", line);
  }
  const listening = lines.map((l) => JSON.parse(l)).find((r) => r.message.includes("listening"));
  assert.equal(listening.fields.endpoint, `tcp://127.0.0.1:${port}`);
  assert.ok(listening.message.includes(`tcp://127.0.0.1:${port}`), "placeholders filled in");
});
