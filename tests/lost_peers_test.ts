/**
 * Both ROUTER implementations tell their user, with the routing id, that a
 * peer's connection ended: after every message the peer sent, once, and not
 * for a connection that never finished its handshake. The peer is a pyzmq
 * DEALER killed with SIGKILL (no goodbye on the wire, the kernel closes it).
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import type { Frames } from "../transport/frames.ts";
import { ZMQ_ROUTER } from "../transport/libzmq.ts";
import type { MessageSocket } from "../transport/message_socket.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { ZmtpRouter } from "../transport/zmtp/router.ts";

const dec = new TextDecoder();

/** A pyzmq DEALER with routing id `id` that sends `count` messages, then kills itself. */
async function dealerThatDies(endpoint: string, id: string, count: number): Promise<void> {
  const script = `
import os, time, zmq
d = zmq.Context().socket(zmq.DEALER)
d.setsockopt(zmq.IDENTITY, b"${id}")
d.connect("${endpoint}")
for i in range(${count}):
    d.send_multipart([b"m%d" % i, b""])
time.sleep(0.2)
os.kill(os.getpid(), 9)
`;
  const status = await new Deno.Command("/usr/bin/python3", { args: ["-c", script] }).output();
  assert.equal(status.signal, "SIGKILL", dec.decode(status.stderr));
}

type Event = string;

/** Drains `router`, recording messages and gone peers in the order they are reported. */
function record(router: MessageSocket): { events: Event[]; loop: Promise<void> } {
  const events: Event[] = [];
  router.onPeerGone?.((id) => events.push(`gone ${dec.decode(id)}`));
  const loop = router.drain((frames: Frames) =>
    events.push(frames.map((f) => dec.decode(f)).join("|"))
  );
  return { events, loop };
}

const MADE = {
  zmtp: () => {
    const ends: Array<string | undefined> = [];
    const router = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
      onConnectionEnd: (end) => ends.push(end.routingId && dec.decode(end.routingId)),
    });
    return { router, endpoint: router.endpoint, ends };
  },
  libzmq: () => {
    const router = new NativeSocket(ZMQ_ROUTER, { notifyPeerGone: true });
    const endpoint = router.attach("tcp://127.0.0.1:0", "bind", "test");
    return { router, endpoint, ends: undefined };
  },
};

for (const kind of ["zmtp", "libzmq"] as const) {
  Deno.test(`${kind} ROUTER reports a SIGKILLed peer gone, by routing id, once and after its messages`, async () => {
    const { router, endpoint, ends } = MADE[kind]();
    const { events, loop } = record(router);
    try {
      await dealerThatDies(endpoint, "W1", 3);
      await waitFor(() => events.includes("gone W1"), { what: "the peer reported gone" });
      assert.deepEqual(events, ["W1|m0|", "W1|m1|", "W1|m2|", "gone W1"]);
      if (ends) assert.deepEqual(ends, ["W1"], "onConnectionEnd names the routing id");

      // A connection that never completes its handshake has no routing id to report.
      const raw = await Deno.connect({ port: Number(endpoint.split(":").pop()) });
      raw.close();
      await dealerThatDies(endpoint, "W2", 0);
      await waitFor(() => events.includes("gone W2"), { what: "the second peer reported gone" });
      assert.deepEqual(events.slice(4), ["gone W2"]);
    } finally {
      router.close();
      await loop;
      await sharedPoller().idle();
    }
  });
}
