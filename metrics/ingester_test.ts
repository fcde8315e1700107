/**
 * The ingester's buffering, retry and drop rules against an in-memory source
 * and writer (the same rules against real PostgreSQL and a real bus are in
 * tests/metrics_store_test.ts).
 */
import assert from "node:assert/strict";
import type { BusMessage } from "../bus/envelope.ts";
import { type DropReason, MetricsIngester } from "./ingester.ts";
import { QueueSource } from "../tests/_queue_source.ts";
import type { Point } from "./point.ts";
import type { MetricsWriter } from "./store.ts";
import { waitFor } from "../tests/_helpers.ts";

const encoder = new TextEncoder();

class FakeSource extends QueueSource {
  push(...payloads: string[]): void {
    this.add(...payloads.map((payload): BusMessage => ({
      bus: "metric",
      topic: "",
      payload: encoder.encode(payload),
      form: "single",
    })));
  }
}

class DataError extends Error {}

class FakeWriter implements MetricsWriter {
  readonly kind = "libsql" as const;
  readonly managesRetention = true;
  readonly concurrency = 1;
  failing = false;
  attempts = 0;
  stored: Point[] = [];
  poison = new Set<string>();

  write(points: readonly Point[]): Promise<void> {
    this.attempts++;
    if (this.failing) return Promise.reject(new Error("connection refused"));
    if (points.some((p) => this.poison.has(p.device))) return Promise.reject(new DataError("bad"));
    this.stored.push(...points);
    return Promise.resolve();
  }
  deleteOlderThan(): Promise<number> {
    return Promise.resolve(0);
  }
  writeEvents(): Promise<void> {
    return Promise.resolve();
  }
  deleteEventsOlderThan(): Promise<number> {
    return Promise.resolve(0);
  }
  isDataError(error: unknown): boolean {
    return error instanceof DataError;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const point = (i: number, device = "d") =>
  JSON.stringify({
    time: new Date(Date.UTC(2024, 0, 1) + i).toISOString(),
    device,
    channel: "c",
    value: i,
  });

function setup(options: ConstructorParameters<typeof MetricsIngester>[2] = {}) {
  const source = new FakeSource();
  const writer = new FakeWriter();
  const dropped: Record<string, number> = {};
  const rejected: string[] = [];
  let received = 0;
  const ingester = new MetricsIngester(source, () => Promise.resolve(writer), {
    flushIntervalMs: 10,
    retryMinMs: 5,
    retryMaxMs: 20,
    ...options,
  }, {
    received: (n) => received += n,
    dropped: (reason: DropReason, n) => dropped[reason] = (dropped[reason] ?? 0) + n,
    rejected: (reason) => rejected.push(reason),
  });
  return { source, writer, ingester, dropped, rejected, received: () => received };
}

Deno.test("MetricsIngester keeps every point while writes fail and stores them all on recovery", async () => {
  const { source, writer, ingester, dropped } = setup({ batchSize: 50 });
  try {
    await waitFor(() => ingester.status().database === "up", { what: "open", intervalMs: 5 });
    writer.failing = true;
    for (let i = 0; i < 500; i++) source.push(point(i));
    await waitFor(() => writer.attempts >= 3 && ingester.status().database === "down", {
      what: "retries",
      intervalMs: 5,
    });
    assert.equal(ingester.status().buffered, 500);
    writer.failing = false;
    await waitFor(() => writer.stored.length === 500, { what: "all points stored", intervalMs: 5 });
    assert.equal(ingester.status().database, "up");
    assert.deepEqual(writer.stored.map((p) => p.value).sort((a, b) => a - b), [
      ...Array(500).keys(),
    ]);
    assert.deepEqual(dropped, {});
  } finally {
    await ingester.close();
  }
});

Deno.test("MetricsIngester drops and reports points past its bound, and none before", async () => {
  const { source, writer, ingester, dropped, received } = setup({ bufferPoints: 100 });
  try {
    await waitFor(() => ingester.status().database === "up", { what: "open", intervalMs: 5 });
    writer.failing = true;
    for (let i = 0; i < 300; i++) source.push(point(i));
    await waitFor(() => received() === 300, { what: "all messages read", intervalMs: 5 });
    assert.equal(dropped.buffer_full, 200);
    writer.failing = false;
    await waitFor(() => writer.stored.length === 100, {
      what: "buffered points stored",
      intervalMs: 5,
    });
    // The first 100 were kept: nothing was dropped while there was room.
    assert.deepEqual(writer.stored.map((p) => p.value).sort((a, b) => a - b), [
      ...Array(100).keys(),
    ]);
  } finally {
    await ingester.close();
  }
});

Deno.test("MetricsIngester isolates the points a database refuses for their data", async () => {
  const { source, writer, ingester, dropped, rejected } = setup({ batchSize: 64 });
  try {
    writer.poison.add("bad");
    for (let i = 0; i < 64; i++) source.push(point(i, i === 17 || i === 40 ? "bad" : "d"));
    source.push("not json", '{"device":"d"}');
    await waitFor(() => writer.stored.length === 62, { what: "good points stored", intervalMs: 5 });
    assert.equal(dropped.rejected_by_database, 2);
    assert.deepEqual(rejected, ["not_json", "channel"]);
  } finally {
    await ingester.close();
  }
});

Deno.test("MetricsIngester.close() writes what is buffered, and reports what it cannot", async () => {
  const first = setup({ flushIntervalMs: 60_000, batchSize: 1000 });
  for (let i = 0; i < 10; i++) first.source.push(point(i));
  await waitFor(() => first.received() === 10, { what: "read", intervalMs: 5 });
  await first.ingester.close();
  assert.equal(first.writer.stored.length, 10);

  const second = setup();
  await waitFor(() => second.ingester.status().database === "up", { what: "open", intervalMs: 5 });
  second.writer.failing = true;
  for (let i = 0; i < 10; i++) second.source.push(point(i));
  await waitFor(() => second.writer.attempts > 0, { what: "a failed write", intervalMs: 5 });
  await second.ingester.close(50);
  assert.equal(second.dropped.shutdown, 10);
});
