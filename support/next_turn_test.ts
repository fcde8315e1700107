import assert from "node:assert/strict";
import { nextTurn } from "./next_turn.ts";

Deno.test("a loop that yields with nextTurn() lets timers and HTTP run", async () => {
  let fired = 0;
  const timer = setInterval(() => fired++, 5);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  let served = 0;
  const client = (async () => {
    for (let i = 0; i < 5; i++) {
      await (await fetch(`http://127.0.0.1:${server.addr.port}/`)).text();
      served++;
    }
  })();
  try {
    // A busy loop that only ever yields through nextTurn().
    while (served < 5 || fired < 3) await nextTurn();
    assert.ok(fired >= 3 && served === 5);
  } finally {
    clearInterval(timer);
    await client;
    await server.shutdown();
  }
});
