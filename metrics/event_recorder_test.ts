/**
 * The event recorder's buffer, drop and retention rules with an in-memory
 * source and a real libSQL store (the whole path over a real bus and
 * PostgreSQL is in tests/events_history_test.ts).
 */
import assert from "node:assert/strict";
import { waitFor } from "../tests/_helpers.ts";
import { EventRecorder } from "./event_recorder.ts";
import type { DropReason } from "./ingester.ts";
import { QueueSource } from "../tests/_queue_source.ts";
import { LibsqlMetricsReader, type LibsqlMetricsWriter, openLibsqlWriter } from "./libsql.ts";

const encoder = new TextEncoder();

class EventSource extends QueueSource {
  push(topic: string, payload: string): void {
    this.add({ bus: "event", topic, payload: encoder.encode(payload), form: "frames" });
  }
}

async function withStore(
  body: (writer: LibsqlMetricsWriter, reader: LibsqlMetricsReader) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/m.db`);
  const reader = new LibsqlMetricsReader(`${dir}/m.db`);
  try {
    await body(writer, reader);
  } finally {
    await reader.close();
    await writer.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("events wait for the database in a bounded buffer; beyond it they are dropped and counted", async () => {
  await withStore(async (store, reader) => {
    const source = new EventSource();
    let writer: LibsqlMetricsWriter | undefined;
    const dropped: Array<[DropReason, number]> = [];
    let received = 0;
    const recorder = new EventRecorder([source], () => writer, {
      bufferEvents: 3,
      flushIntervalMs: 5,
      retentionDays: 0,
    }, {
      received: (n) => received += n,
      dropped: (reason, count) => dropped.push([reason, count]),
    });
    try {
      for (let i = 0; i < 5; i++) source.push(`t${i}`, `{"device":"d${i}"}`);
      await waitFor(() => received === 5, { what: "five messages read" });
      assert.equal(recorder.buffered, 3);
      assert.deepEqual(dropped, [["buffer_full", 2]]);
      writer = store; // the ingester has opened the database
      await waitFor(() => recorder.buffered === 0, { what: "the buffer written" });
      const rows = await reader.queryEvents({ limit: 10 });
      assert.deepEqual(rows.map((r) => r.device).sort(), ["d0", "d1", "d2"]);
    } finally {
      await recorder.close(1000);
    }
  });
});

Deno.test("events never written by shutdown are counted; old events go by retention", async () => {
  await withStore(async (store, reader) => {
    const old = Date.UTC(2000, 0, 1);
    await store.writeEvents([
      {
        time: old,
        bus: "event",
        topic: "t",
        device: null,
        severity: null,
        kind: null,
        payload: "",
      },
    ]);
    const source = new EventSource();
    const dropped: Array<[DropReason, number]> = [];
    let deleted = -1;
    const recorder = new EventRecorder([source], () => undefined, {
      flushIntervalMs: 5,
      retentionDays: 1,
    }, {
      dropped: (reason, count) => dropped.push([reason, count]),
      retention: (n) => deleted = n,
    });
    source.push("a", "x");
    source.push("b", "y");
    await waitFor(() => recorder.buffered === 2, { what: "two events buffered" });
    // No writer: retention has nothing to run on yet.
    assert.equal(await recorder.runRetention(), 0);
    await recorder.close(50);
    assert.deepEqual(dropped, [["shutdown", 2]]);

    const second = new EventRecorder([new EventSource()], () => store, { retentionDays: 1 }, {
      retention: (n) => deleted = n,
    });
    try {
      assert.equal(await second.runRetention(), 1);
      assert.equal(deleted, 1);
      assert.equal((await reader.queryEvents({ limit: 10 })).length, 0);
    } finally {
      await second.close();
    }
  });
});
