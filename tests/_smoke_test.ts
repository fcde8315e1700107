import assert from "node:assert/strict";
import { byte, describe, Peer, withBroker } from "./_helpers.ts";
Deno.test("smoke", async () => {
  await withBroker({}, async (server, track) => {
    const c = track(new Peer(server.endpoint, { routingId: "C1" }));
    await c.send(["MDPC02", byte(1), "mmi.service", "nothing"]);
    const m = await c.next();
    assert.deepEqual(
      describe(m),
      describe([
        new TextEncoder().encode("MDPC02"),
        byte(3),
        new TextEncoder().encode("mmi.service"),
        new TextEncoder().encode("404"),
      ]),
    );
  });
});
