import assert from "node:assert/strict";
import type { BusMessage } from "../bus/envelope.ts";
import { freePort } from "../tests/_helpers.ts";
import { BusHub, type Delivery, type HistorySink, type HubHistory } from "./bus_hub.ts";

const encoder = new TextEncoder();

/** A history that hands every delivery to the test through the hub's sink. */
function fakeHistory(): HubHistory & { sink?: HistorySink } {
  const history: HubHistory & { sink?: HistorySink } = {
    buses: new Set(["event"]),
    attach(sink) {
      history.sink = sink;
    },
    received: () => null,
    replay: () => ({ messages: [], until: "x:0" }),
    compare: () => undefined,
    close: () => Promise.resolve(),
  };
  return history;
}

Deno.test("a delivery frames its JSON once per subscription id text, the same for every listener", async () => {
  const history = fakeHistory();
  // Nothing listens there: the subscriber only connects.
  const hub = new BusHub({ event: `tcp://127.0.0.1:${freePort()}` }, [], { history });
  try {
    const seen: Array<[string, string]> = [];
    const heads = ['{"type":"message","id":"a",', '{"type":"message","id":"b",'];
    const stops = [heads[0]!, heads[1]!, heads[0]!, heads[0]!, heads[1]!].map((head) =>
      hub.listen("event", "fan", (d: Delivery) => seen.push([head, d.framed(head)]))
    );
    const message: BusMessage = {
      bus: "event",
      topic: "fan",
      payload: encoder.encode("0123"),
      form: "frames",
    };
    history.sink!.deliver("event", message, "e:1");
    assert.equal(seen.length, 5);
    for (const [head, text] of seen) {
      assert.deepEqual(JSON.parse(text), {
        type: "message",
        id: head === heads[0] ? "a" : "b",
        offset: "e:1",
        bus: "event",
        topic: "fan",
        form: "frames",
        payload: "0123",
        encoding: "text",
      });
    }
    // More distinct ids than a delivery remembers still frame correctly.
    const many = Array.from({ length: 40 }, (_, i) => `{"type":"message","id":"m${i}",`);
    const texts: string[] = [];
    const more = many.map((head) => hub.listen("event", "fan", (d) => texts.push(d.framed(head))));
    history.sink!.deliver("event", { ...message, payload: encoder.encode("x") }, "e:2");
    assert.equal(texts.length, 40);
    texts.forEach((text, i) => assert.equal(JSON.parse(text).id, `m${i}`));
    for (const stop of [...stops, ...more]) stop();
  } finally {
    await hub.close();
  }
});
