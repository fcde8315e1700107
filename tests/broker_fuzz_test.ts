/**
 * Throws thousands of random multipart messages at a running broker, including
 * messages shaped like real headers with garbage after them, then checks that
 * it still serves requests and counted the drops.
 */
import assert from "node:assert/strict";
import { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { frame, text } from "../mdp/protocol.ts";
import { ZMQ_DEALER } from "../transport/libzmq.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { prng } from "./_helpers.ts";

const HEADERS = ["MDPC01", "MDPC02", "MDPW01", "MDPW02", "", "MDPX99"].map(frame);
const WORDS = ["REQUEST", "READY", "PARTIAL", "FINAL", "HEARTBEAT", "DISCONNECT", "mmi.service"]
  .map(frame);

function randomMessage(random: () => number): Uint8Array[] {
  const frames: Uint8Array[] = [];
  const count = Math.floor(random() * 7);
  for (let i = 0; i < count; i++) {
    const pick = random();
    if (pick < 0.2) frames.push(HEADERS[Math.floor(random() * HEADERS.length)]!);
    else if (pick < 0.4) frames.push(WORDS[Math.floor(random() * WORDS.length)]!);
    else if (pick < 0.5) frames.push(Uint8Array.of(Math.floor(random() * 8)));
    else {
      const bytes = new Uint8Array(Math.floor(random() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
      frames.push(bytes);
    }
  }
  return frames.length > 0 ? frames : [new Uint8Array(0)];
}

Deno.test("broker survives 5,000 random multipart messages and still serves requests", async () => {
  const drops = new Map<string, number>();
  const server = await BrokerServer.start(
    { endpoint: "tcp://127.0.0.1:*", maxMessageBytes: 4096 },
    {
      drop: (reason) => drops.set(reason, (drops.get(reason) ?? 0) + 1),
    },
  );
  const worker = startEchoWorker(server.endpoint);
  const client = new MdpClient(server.endpoint, { timeoutMs: 5000 });
  const attackers = Array.from({ length: 4 }, () => new NativeSocket(ZMQ_DEALER, { linger: 0 }));
  try {
    for (const a of attackers) a.connect(server.endpoint);
    const random = prng(20261128);
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 5000; i++) {
      sends.push(attackers[i % attackers.length]!.send(randomMessage(random)));
    }
    // Oversized messages too: above max_message_bytes they are refused.
    sends.push(attackers[0]!.send([new Uint8Array(0), frame("MDPC02"), new Uint8Array(8192)]));
    await Promise.all(sends);
    const reply = await client.request(ECHO_SERVICE, ["echo", "still", "alive"]);
    assert.deepEqual(reply.map(text), ["still", "alive"]);
    const total = [...drops.values()].reduce((a, b) => a + b, 0);
    assert.ok(total > 0, "the broker counted dropped messages");
    assert.ok(drops.has("unknown header"), `drop reasons: ${[...drops.keys()].join(", ")}`);
  } finally {
    for (const a of attackers) a.close();
    await client.close();
    await worker.close();
    await server.close();
    await sharedPoller().idle();
  }
});
