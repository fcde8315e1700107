/**
 * Rules of the broker's state machine that need a clock: driven through
 * {@link Broker.handle} and {@link Broker.tick} with a fake one, no sockets.
 */
import assert from "node:assert/strict";
import {
  decodeBrokerToWorker,
  encodeClientRequest,
  encodeWorkerSignal,
  frame,
} from "../mdp/protocol.ts";
import type { Frames } from "../transport/frames.ts";
import { Broker } from "./broker.ts";

const id = (name: string) => new TextEncoder().encode(name);
const name = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

function fixture() {
  let clock = 1_000_000;
  const sent: { to: string; frames: Frames }[] = [];
  const left: string[] = [];
  const broker = new Broker(
    (identity, frames) => sent.push({ to: name(identity), frames }),
    { heartbeatIntervalMs: 1000, heartbeatLiveness: 3 },
    { workerLeft: (_service, reason) => left.push(reason) },
    () => clock,
  );
  return {
    broker,
    sent,
    left,
    advance(ms: number) {
      clock += ms;
      broker.tick();
    },
  };
}

Deno.test("broker purge removes every expired worker, not only those before the first live one", () => {
  const { broker, sent, left, advance } = fixture();
  // Registration order a, b, c: a purge that stops at the first live worker
  // (Go plantd's) would keep b and c because a, first, is alive.
  for (const worker of ["a", "b", "c"]) {
    broker.handle([id(worker), ...encodeWorkerSignal("plantd", "READY", "svc")]);
  }
  assert.equal(broker.workerCount, 3);
  advance(2000);
  broker.handle([id("a"), ...encodeWorkerSignal("plantd", "HEARTBEAT")]);
  advance(1500); // b and c are 3.5 s silent (expiry 3 s); a 1.5 s
  assert.equal(broker.workerCount, 1);
  assert.deepEqual(left, ["expired", "expired"]);

  // What is left is the live worker: a request goes to a.
  sent.length = 0;
  broker.handle([id("client"), ...encodeClientRequest("plantd", "svc", [frame("x")])]);
  const routed = sent.filter((s) => decodeBrokerToWorker(s.frames).kind === "request");
  assert.deepEqual(routed.map((s) => s.to), ["a"]);
});
