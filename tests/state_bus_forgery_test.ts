// deno-lint-ignore-file no-explicit-any -- the tests read JSON messages of many shapes
/**
 * Only the state service speaks for state (issue 16, item 3): change events
 * published directly on the state bus frontend, unsigned, with a wrong
 * signature or replayed, reach no watch, no bus subscription, no history and
 * no read cache, and are counted; genuine ones (a REST PUT) do.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { ChangeKey, ChangeSigner } from "../state/changes.ts";
import { waitFor } from "./_helpers.ts";
import { put, startSystem, type System } from "./_system.ts";
import { WsClient } from "./_ws.ts";

/** gateway_bus_rejected_total{bus="state",reason}. */
async function rejected(system: System, reason: string): Promise<number> {
  const metric = system.registry.getSingleMetric("gateway_bus_rejected_total");
  const values = (await metric?.get())?.values ?? [];
  return values.find((v) => v.labels.bus === "state" && v.labels.reason === reason)?.value ?? 0;
}

/** The valve values a list of WebSocket messages carries, in order. */
function valves(messages: Record<string, any>[]): string[] {
  return messages.flatMap((m) => {
    const change = m.type === "change"
      ? m.change
      : m.type === "message"
      ? JSON.parse(m.payload)
      : {};
    return change.op === "set" && change.key === "valve" ? [change.value] : [];
  });
}

Deno.test("forged, unsigned and replayed state changes reach no watch, subscription, history or cache", async () => {
  const system = await startSystem();
  const ws = await new WsClient(system.url).open();
  const forger = new Publisher(system.frontends.state!, { form: "frames" });
  try {
    ws.send({ type: "watch", id: "w", scope: "plant" });
    ws.send({ type: "subscribe", id: "s", bus: "state", prefix: "" });
    await ws.nextOf("subscribed", "w");
    await ws.nextOf("subscribed", "s");
    await put(system, "/api/state/plant");
    await put(system, "/api/state/plant/valve", '{"value":"CLOSED"}');
    await put(system, "/api/state/plant/valve", '{"value":"SHUT"}');
    const genuine = () => ws.all.filter((m) => m.type === "message" && m.id === "s");
    await waitFor(() => valves(genuine()).length === 2, { what: "the genuine changes" });
    const [older, latest] = genuine().filter((m) => valves([m]).length === 1);
    const first = genuine()[0]!;

    // Each kind of forgery, sent until the gateway has seen (and counted) it:
    // a publisher's first messages may go before its connection is up.
    const event = {
      op: "set",
      scope: "plant",
      key: "valve",
      value: "OPEN-FORGED",
      revision: 99,
      timestamp: new Date().toISOString(),
    };
    const wrongKey = new ChangeSigner(
      new ChangeKey(new TextEncoder().encode("not the state service's key, 32+ chars")),
    );
    const forgeries: [string, () => string][] = [
      ["unsigned", () => JSON.stringify(event)],
      [
        "bad_signature",
        () => wrongKey.sign("plant", JSON.stringify({ ...event, seq: wrongKey.nextSeq() })),
      ],
      // The older genuine event again (it would set the valve back), then the latest one.
      ["replayed", () => older!.payload],
      ["replayed", () => latest!.payload],
    ];
    for (const [reason, payload] of forgeries) {
      const before = await rejected(system, reason);
      await waitFor(async () => {
        forger.publish("plant", payload());
        return await rejected(system, reason) > before;
      }, { what: `a ${reason} event counted`, intervalMs: 20 });
    }
    // The read cache was not fed the forgeries either.
    const read = await (await fetch(`${system.url}/api/state/plant/valve`)).json();
    assert.equal(read.value, "SHUT");

    // A genuine change after the forgeries: once it is in, nothing before it is pending.
    await put(system, "/api/state/plant/valve", '{"value":"FINAL"}');
    await waitFor(() => valves(ws.all.filter((m) => m.id === "w")).includes("FINAL"), {
      what: "the genuine change on the watch",
    });
    await waitFor(() => valves(genuine()).includes("FINAL"), { what: "... on the subscription" });
    assert.deepEqual(valves(ws.all.filter((m) => m.id === "w")), ["CLOSED", "SHUT", "FINAL"]);
    assert.deepEqual(valves(genuine()), ["CLOSED", "SHUT", "FINAL"]);

    // The history kept only the genuine events: a resume from the first one replays the rest.
    ws.send({ type: "subscribe", id: "r", bus: "state", prefix: "", from: first.offset });
    const resumed = () => ws.all.filter((m) => m.type === "message" && m.id === "r");
    await waitFor(() => valves(resumed()).includes("FINAL"), { what: "the resumed history" });
    assert.deepEqual(valves(resumed()), ["CLOSED", "SHUT", "FINAL"]);
    assert.ok(!ws.all.some((m) => m.type === "gap"), "a gap in the history");

    const final = await (await fetch(`${system.url}/api/state/plant/valve`)).json();
    assert.equal(final.value, "FINAL");
    const text = await system.registry.metrics();
    assert.match(text, /gateway_bus_rejected_total\{bus="state",reason="unsigned"\} [1-9]/);
    assert.match(text, /gateway_bus_rejected_total\{bus="state",reason="bad_signature"\} [1-9]/);
    assert.match(text, /gateway_bus_rejected_total\{bus="state",reason="replayed"\} [1-9]/);
  } finally {
    await forger.close();
    await ws.close();
    await system.stop();
  }
});

Deno.test("a gateway without a state bus key drops every change event (and counts them)", async () => {
  const system = await startSystem({ gateway: { state_bus_secret: undefined } });
  const ws = await new WsClient(system.url).open();
  try {
    ws.send({ type: "watch", id: "w", scope: "plant" });
    await ws.nextOf("subscribed", "w");
    await put(system, "/api/state/plant");
    await put(system, "/api/state/plant/valve", '{"value":"CLOSED"}');
    await waitFor(async () => await rejected(system, "no_key") >= 2, {
      what: "the state service's events refused for want of a key",
    });
    // Refused as they arrived: the watch got none of them.
    assert.deepEqual(ws.all.filter((m) => m.type === "change"), []);
  } finally {
    await ws.close();
    await system.stop();
  }
});
